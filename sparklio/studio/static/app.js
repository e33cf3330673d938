// The studio: a client of the JSON API under /api/v1 (the API's permission checks are the
// studio's), routed on location.pathname under /studio.

import { api, ApiError } from "./api.js";
import { announce, fill, h } from "./dom.js";
import { lang, setLanguage, startLanguage, t } from "./i18n.js";
import * as brandKits from "./page-brand-kits.js";
import * as campaign from "./page-campaign.js";
import * as campaigns from "./page-campaigns.js";
import * as login from "./page-login.js";
import * as newCampaign from "./page-new-campaign.js";
import * as operations from "./page-operations.js";
import { notFound } from "./notfound.js";

const ROUTES = [
  [/^\/studio\/?$/, campaigns.page],
  [/^\/studio\/campaigns\/?$/, campaigns.page],
  [/^\/studio\/campaigns\/new$/, newCampaign.page],
  [/^\/studio\/campaigns\/([^/]+)$/, campaign.page],
  [/^\/studio\/brand-kits\/?$/, brandKits.listPage],
  [/^\/studio\/brand-kits\/new$/, brandKits.editPage],
  [/^\/studio\/brand-kits\/([^/]+)$/, brandKits.editPage],
  [/^\/studio\/operations$/, operations.page],
];

const main = document.getElementById("main");
let user = null;
let cleanup = null; // what the current page leaves running (a live view's stream)
let rendering = 0;

/** Go to a studio path (a link, or after a form); `replace` keeps no history entry. */
export function go(path, replace = false) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render(true);
}

function setTitle(title) {
  document.title = `${title} · Sparklio Studio`;
}

function navigation(path) {
  const links = [
    ["/studio", "nav.campaigns", /^\/studio(\/campaigns(\/(?!new).*)?)?\/?$/],
    ["/studio/campaigns/new", "nav.new_campaign", /^\/studio\/campaigns\/new$/],
    ["/studio/brand-kits", "nav.brand_kits", /^\/studio\/brand-kits/],
  ];
  if (user && user.role === "admin") links.push(["/studio/operations", "nav.operations", /^\/studio\/operations/]);
  const nav = document.getElementById("nav");
  fill(nav, h("ul", {}, links.map(([href, key, active]) => h("li", {},
    h("a", { href, "data-link": true, "aria-current": active.test(path) ? "page" : null, text: t(key) })))));
  nav.hidden = !user;
}

function shellText() {
  document.querySelector(".skip").textContent = t("shell.skip");
  document.getElementById("lang-label").textContent = t("shell.language");
  document.getElementById("lang").value = lang;
  const logout = document.getElementById("logout");
  logout.textContent = t("shell.logout");
  logout.hidden = !user;
  document.getElementById("who").textContent = user ? `${user.email} (${t(`role.${user.role}`)})` : "";
}

async function whoAmI() {
  try {
    return await api("/api/v1/auth/me");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

async function render(moved = false) {
  const turn = ++rendering;
  if (cleanup) cleanup();
  cleanup = null;
  if (user === null) user = await whoAmI();
  if (turn !== rendering) return;
  if (user && location.pathname === "/studio/login") history.replaceState(null, "", "/studio");
  const path = location.pathname.replace(/\/+$/, "") || "/studio";
  shellText();
  navigation(path);
  const ctx = {
    user,
    go,
    setTitle,
    onLeave: (fn) => { cleanup = fn; },
    loggedIn: (who) => { user = who; },
  };
  let page;
  try {
    if (!user) {
      page = await login.page(ctx, path === "/studio/login" ? "/studio" : path);
    } else {
      const route = ROUTES.find(([pattern]) => pattern.test(path));
      const params = route ? path.match(route[0]).slice(1).map(decodeURIComponent) : [];
      page = route ? await route[1](ctx, ...params) : notFound(ctx);
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      user = null;
      return render(moved);
    }
    page = h("section", { class: "page narrow" }, h("h1", { text: t("error.title") }),
      h("p", { class: "error", role: "alert", text: error.message }));
  }
  if (turn !== rendering) return;
  fill(main, page);
  if (moved) {
    // after a navigation, start reading and tabbing at the new page's heading
    const heading = main.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus();
      announce(heading.textContent);
    }
  }
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  go(link.getAttribute("href"));
});

window.addEventListener("popstate", () => render(true));

document.getElementById("lang").addEventListener("change", async (event) => {
  await setLanguage(event.target.value, true);
  render();
});

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("/api/v1/auth/session", { method: "DELETE" });
  } finally {
    user = null;
    go("/studio/login");
  }
});

await startLanguage();
render();
