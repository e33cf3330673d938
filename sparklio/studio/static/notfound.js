// What a page shows for something that is not there, or not the user's to see (the API
// answers 404 for both, so a campaign of someone else's looks like no campaign at all).

import { h } from "./dom.js";
import { t } from "./i18n.js";

export function notFound(ctx, message) {
  ctx.setTitle(t("notfound.title"));
  return h("section", { class: "page narrow" },
    h("h1", { text: t("notfound.title") }),
    h("p", { text: message || t("notfound.text") }),
    h("p", {}, h("a", { href: "/studio", "data-link": true, text: t("notfound.back") })));
}

export function notAllowed(ctx, message) {
  ctx.setTitle(t("forbidden.title"));
  return h("section", { class: "page narrow" },
    h("h1", { text: t("forbidden.title") }),
    h("p", { text: message || t("forbidden.text") }),
    h("p", {}, h("a", { href: "/studio", "data-link": true, text: t("notfound.back") })));
}
