// The user's campaigns, newest first: status, brand, channels, cost and when.

import { api } from "./api.js";
import { append, formatUsd, formatWhen, h } from "./dom.js";
import { locale, t } from "./i18n.js";

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, text: t(`status.${status}`) });
}

export function channelNames(channels) {
  return (channels || []).map((c) => t(`channel.${c}`)).join(", ");
}

const PAGE = 20; // campaigns a page shows, and "Show more" adds

function row(c) {
  return h("tr", {},
    h("th", { scope: "row", class: "brief-cell" },
      h("a", { href: `/studio/campaigns/${c.id}`, "data-link": true, text: c.brief.length > 90 ? `${c.brief.slice(0, 89)}…` : c.brief })),
    h("td", { "data-label": t("campaigns.status") }, statusBadge(c.status)),
    h("td", { "data-label": t("campaigns.brand"), text: c.brand || "—" }),
    h("td", { "data-label": t("campaigns.channels"), text: channelNames(c.channels) || t("campaigns.auto_channels") }),
    h("td", { "data-label": t("campaigns.cost"), class: "num", text: formatUsd(c.cost_usd) }),
    h("td", { "data-label": t("campaigns.when") }, h("time", { datetime: c.created_at, text: formatWhen(c.created_at, locale()) })));
}

async function load(offset) {
  // each entry has its brand, channels and cost: one request a page
  const { campaigns } = await api(`/api/v1/campaigns?limit=${PAGE}&offset=${offset}`);
  return campaigns;
}

export async function page(ctx) {
  ctx.setTitle(t("campaigns.title"));
  const rows = await load(0);
  const heading = h("div", { class: "page-head" }, h("h1", { text: t("campaigns.title") }),
    h("a", { class: "button", href: "/studio/campaigns/new", "data-link": true, text: t("campaigns.new") }));
  if (!rows.length) {
    return h("section", { class: "page" }, heading, h("p", { class: "empty", text: t("campaigns.empty") }));
  }
  const body = h("tbody", {}, rows.map(row));
  const table = h("table", { class: "list" },
    h("caption", { class: "visually-hidden", text: t("campaigns.title") }),
    h("thead", {}, h("tr", {}, ["campaigns.brief", "campaigns.status", "campaigns.brand",
      "campaigns.channels", "campaigns.cost", "campaigns.when"].map((key) => h("th", { scope: "col", text: t(key) })))),
    body);
  const more = h("button", { type: "button", class: "secondary", text: t("campaigns.more") });
  more.hidden = rows.length < PAGE;
  more.addEventListener("click", async () => {
    more.disabled = true;
    const next = await load(body.rows.length);
    append(body, next.map(row));
    more.hidden = next.length < PAGE;
    more.disabled = false;
  });
  return h("section", { class: "page" }, heading, h("div", { class: "table-wrap" }, table), h("p", {}, more));
}
