// Operations (admins): usage by role/task/provider/model/user over a period with a chart,
// the provider endpoints (health, load, breaker), the effective routing, and API keys.
// The API decides who may see it: a member's GET /api/v1/usage is a 403.

import { api } from "./api.js";
import { announce, errorBox, field, fill, formatUsd, formatWhen, h } from "./dom.js";
import { locale, t } from "./i18n.js";
import { notAllowed } from "./notfound.js";

const GROUPS = ["role", "task", "provider", "model", "user"];
const PERIODS = { "24h": 1, "7d": 7, "30d": 30 };
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  el.append(...children);
  return el;
}

/** Horizontal bars of calls per group, errors and fallbacks marked; no chart library. */
function usageChart(groups) {
  const shown = groups.slice(0, 10);
  const row = 28, label = 150, width = 600, most = Math.max(1, ...shown.map((g) => g.calls));
  const scale = (n) => ((width - label - 60) * n) / most;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${Math.max(1, shown.length) * row + 8}`,
    role: "img", "aria-labelledby": "usage-chart-title", class: "chart" },
  svg("title", { id: "usage-chart-title" }, t("ops.chart_title")));
  shown.forEach((g, i) => {
    const y = i * row + 4;
    const name = String(g.key ?? t("ops.none"));
    chart.append(
      svg("text", { x: label - 8, y: y + 17, "text-anchor": "end", class: "chart-label" }, name.length > 20 ? `${name.slice(0, 19)}…` : name),
      svg("rect", { x: label, y, width: Math.max(1, scale(g.calls)), height: row - 8, class: "bar" }),
      svg("rect", { x: label, y: y + row - 12, width: scale(g.errors), height: 4, class: "bar-errors" }),
      svg("text", { x: label + scale(g.calls) + 6, y: y + 15, class: "chart-value" }, String(g.calls)));
  });
  return chart;
}

function table(caption, columns, rows) {
  return h("div", { class: "table-wrap" }, h("table", { class: "list" },
    h("caption", { class: "visually-hidden", text: caption }),
    h("thead", {}, h("tr", {}, columns.map(([, label]) => h("th", { scope: "col", text: label })))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map(([get, label], i) => {
      const value = get(r);
      return h(i ? "td" : "th", { scope: i ? null : "row", "data-label": label }, value instanceof Node ? value : String(value ?? "—"));
    }))))));
}

/** A routing table's cell as text: a candidate as provider/model, empty parts left out. */
function plain(value) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return value.map(plain).join(", ");
  if (typeof value === "object") {
    if (value.provider && value.model) return `${value.provider}/${value.model}`;
    return Object.entries(value).filter(([, v]) => v !== null && v !== "" && !(typeof v === "object" && !Object.keys(v).length))
      .map(([k, v]) => `${k}: ${plain(v)}`).join("; ");
  }
  return String(value);
}

function column(name) {
  const text = t(`ops.col_${name}`);
  return text === `ops.col_${name}` ? name : text;
}

async function usageSection() {
  const period = h("select", { name: "period" }, Object.keys(PERIODS).map((p) => h("option", { value: p, text: t(`ops.period_${p}`) })));
  const group = h("select", { name: "group_by" }, GROUPS.map((g) => h("option", { value: g, text: t(`ops.by_${g}`) })));
  const result = h("div", { class: "usage-result", "aria-live": "polite" });
  const error = errorBox();
  async function load() {
    error.show("");
    const to = new Date();
    const from = new Date(to - PERIODS[period.value] * 86400_000);
    const query = new URLSearchParams({ group_by: group.value, from: from.toISOString(), to: to.toISOString() });
    const report = await api(`/api/v1/usage?${query}`);
    const total = report.total;
    fill(result,
      h("dl", { class: "totals" }, [["ops.calls", total.calls], ["ops.errors", total.errors],
        ["ops.fallbacks", total.fallbacks], ["ops.tokens", total.total_tokens], ["ops.cost", formatUsd(total.cost_usd)]]
        .map(([key, value]) => h("div", {}, h("dt", { text: t(key) }), h("dd", { text: String(value) })))),
      report.groups.length ? usageChart(report.groups) : h("p", { class: "empty", text: t("ops.no_calls") }),
      report.groups.length ? table(t("ops.usage_by", { group: t(`ops.by_${group.value}`) }), [
        [(g) => g.key ?? t("ops.none"), t(`ops.group_${group.value}`)], [(g) => g.calls, t("ops.calls")],
        [(g) => g.errors, t("ops.errors")], [(g) => g.fallbacks, t("ops.fallbacks")],
        [(g) => g.total_tokens, t("ops.tokens")], [(g) => formatUsd(g.cost_usd), t("ops.cost")],
        [(g) => (g.latency_ms && g.latency_ms.p95 != null ? `${Math.round(g.latency_ms.p95)} ms` : "—"), t("ops.p95")],
      ], report.groups) : null);
  }
  const form = h("form", { class: "inline" }, field(t("ops.period"), period), field(t("ops.group_by"), group));
  for (const control of [period, group]) control.addEventListener("change", () => load().catch((e) => error.show(e.message)));
  form.addEventListener("submit", (event) => event.preventDefault());
  await load();
  return h("section", { "aria-labelledby": "usage-heading", class: "ops" },
    h("h2", { id: "usage-heading", text: t("ops.usage") }), form, error, result);
}

async function providersSection() {
  const [llm, media, health] = await Promise.all([api("/api/v1/llm/providers"),
    api("/api/v1/media/providers"), api("/health")]);
  const rows = [...llm.providers.map((p) => ({ ...p, kind_of: "LLM" })), ...media.providers.map((p) => ({ ...p, kind_of: t("ops.media") }))];
  const state = (p) => h("span", { class: `badge ${p.available ? "ok" : "down"}`, text: t(p.available ? "ops.healthy" : "ops.unavailable") });
  return h("section", { "aria-labelledby": "providers-heading", class: "ops" },
    h("h2", { id: "providers-heading", text: t("ops.providers") }),
    h("p", { class: "hint", text: t("ops.mode", { mode: health.generator_mode, status: health.status }) }),
    table(t("ops.providers"), [
      [(p) => p.name, t("ops.name")], [(p) => `${p.kind_of} · ${p.kind}`, t("ops.kind")],
      [state, t("ops.health")], [(p) => p.message || "", t("ops.message")],
      [(p) => `${p.in_flight ?? 0} / ${p.waiting ?? 0}`, t("ops.load")],
      [(p) => plain(p.circuit ?? p.breaker ?? p.state), t("ops.breaker")],
    ], rows));
}

async function routingSection() {
  const [llm, media] = await Promise.all([api("/api/v1/llm/routes"), api("/api/v1/media/routes")]);
  const rows = [...(llm.routes || []).map((r) => ({ kind: "LLM", ...r })),
    ...(media.routes || []).map((r) => ({ kind: t("ops.media"), ...r }))];
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return h("section", { "aria-labelledby": "routing-heading", class: "ops" },
    h("h2", { id: "routing-heading", text: t("ops.routing") }),
    h("p", { class: "hint", text: t("ops.routing_file", { file: llm.routing_file }) }),
    table(t("ops.routing"), columns.map((c) => [(r) => plain(r[c]), column(c)]), rows));
}

async function keysSection() {
  const list = h("div");
  const error = errorBox();
  const name = h("input", { name: "key_name", required: true, maxlength: 100 });
  const created = h("div", { class: "new-key", role: "status" });
  async function load() {
    const { api_keys: keys } = await api("/api/v1/auth/api-keys");
    fill(list, table(t("ops.keys"), [
      [(k) => k.name, t("ops.name")], [(k) => `${k.prefix}…`, t("ops.prefix")],
      [(k) => formatWhen(k.created_at, locale()), t("ops.created")],
      [(k) => (k.last_used_at ? formatWhen(k.last_used_at, locale()) : t("ops.never")), t("ops.last_used")],
      [(k) => (k.revoked_at ? t("ops.revoked") : revokeButton(k)), t("ops.state")],
    ], keys));
  }
  function revokeButton(key) {
    const button = h("button", { type: "button", class: "danger", text: t("ops.revoke"),
      "aria-label": t("ops.revoke_named", { name: key.name }) });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(`/api/v1/auth/api-keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
        announce(t("ops.revoked_named", { name: key.name }));
        await load();
      } catch (problem) {
        error.show(problem.message);
        button.disabled = false;
      }
    });
    return button;
  }
  const form = h("form", { class: "inline" }, field(t("ops.key_name"), name),
    h("button", { type: "submit", text: t("ops.create_key") }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.show("");
    try {
      const key = await api("/api/v1/auth/api-keys", { method: "POST", body: { name: name.value.trim() } });
      fill(created, h("p", { text: t("ops.key_once", { name: key.name }) }), h("code", { class: "key", text: key.key }));
      name.value = "";
      await load();
    } catch (problem) {
      error.show(problem.message);
    }
  });
  await load();
  return h("section", { "aria-labelledby": "keys-heading", class: "ops" },
    h("h2", { id: "keys-heading", text: t("ops.keys") }), form, error, created, list);
}

export async function page(ctx) {
  let usage;
  try {
    usage = await usageSection();
  } catch (problem) {
    if (problem.status === 403) return notAllowed(ctx, t("ops.admins_only"));
    throw problem;
  }
  ctx.setTitle(t("ops.title"));
  const [providers, routing, keys] = await Promise.all([providersSection(), routingSection(), keysSection()]);
  return h("section", { class: "page" }, h("h1", { text: t("ops.title") }), usage, providers, routing, keys);
}
