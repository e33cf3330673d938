// A campaign, live: its events (GET /api/v1/campaigns/{id}/events, server-sent) as they
// come - each step as it finishes, copy as it streams, images as they render, the
// reviewer's scores - a reviewer's decision at a manual-review pause, and its report.

import { api } from "./api.js";
import { announce, errorBox, field, fill, formatUsd, h } from "./dom.js";
import { t } from "./i18n.js";
import { notFound } from "./notfound.js";
import { channelNames, statusBadge } from "./page-campaigns.js";

const LAST = ["done", "failed", "cancelled"];
const EVENTS = ["queued", "started", "step_started", "step_finished", "step_failed", "copy_delta",
  "image_progress", "awaiting_review", "review", ...LAST];
const HIDDEN_STEPS = new Set(["start", "finish"]); // bookkeeping, not work a person follows
const STATUS_OF = { queued: "queued", started: "running", step_started: "running", review: "running",
  awaiting_review: "awaiting_review", done: "succeeded", failed: "failed", cancelled: "cancelled" };

function named(prefix, key) {
  const text = t(`${prefix}.${key}`);
  return text === `${prefix}.${key}` ? key : text;
}

/** "copywriter:instagram:1" -> "Copywriter · Instagram · round 1". */
function stepLabel(name) {
  const [first, ...rest] = name.split(":");
  return [named("step", first), ...rest.map((part) => (/^\d+$/.test(part)
    ? t("campaign.round", { n: part }) : named("channel", part)))].join(" · ");
}

function spent(records) {
  const sum = (name) => (records || []).reduce((total, r) => total + (Number(r[name]) || 0), 0);
  return { tokens: sum("prompt_tokens") + sum("completion_tokens"), cost: sum("cost_usd") };
}

/** Copy, images or a review, wherever a step's output keeps them. */
function pick(output, key, test) {
  if (Array.isArray(output) && output.length && output.every(test)) return output;
  if (output && typeof output === "object" && Array.isArray(output[key])) return output[key];
  return null;
}
const isCopy = (c) => Boolean(c && c.channel && "headline" in c);
const copiesIn = (output) => (isCopy(output) ? [output] : pick(output, "copies", isCopy));
const imagesIn = (output) => pick(output, "images", (i) => i && i.asset_id);
/** The copy so far of an answer still being written (its raw JSON, maybe cut mid-string):
 *  the headline, body and call to action written yet, one a line. */
function copySoFar(raw) {
  const texts = [];
  for (const [, text] of raw.matchAll(/"(?:headline|body|cta)"\s*:\s*"((?:[^"\\]|\\.)*)/g)) {
    try {
      texts.push(JSON.parse(`"${text.replace(/\\u[0-9a-fA-F]{0,3}$/, "")}"`)); // less a cut \uXXXX
    } catch { /* a piece that is not JSON text: leave it out */ }
  }
  return texts.join("\n");
}
const reviewIn = (output) => (output && Array.isArray(output.scores) ? output
  : output && output.review && Array.isArray(output.review.scores) ? output.review : null);

export async function page(ctx, id) {
  let detail;
  try {
    detail = await api(`/api/v1/campaigns/${encodeURIComponent(id)}`);
  } catch (problem) {
    if (problem.status === 404) return notFound(ctx, t("campaign.not_found"));
    throw problem;
  }
  ctx.setTitle(t("campaign.title"));
  const base = `/api/v1/campaigns/${encodeURIComponent(detail.id)}`;
  const badge = h("span", { class: "status-holder" }, statusBadge(detail.status));
  const stepList = h("ol", { class: "steps" });
  const waiting = () => h("p", { class: "empty", text: t("campaign.not_yet") });
  const copyArea = h("div", { class: "copies" }, waiting());
  const imageArea = h("div", { class: "images" }, waiting());
  const scoreArea = h("div", { class: "scores" }, waiting());
  const reviewArea = h("section", { class: "review-panel", "aria-labelledby": "review-heading" });
  const reportArea = h("div", { class: "report-links" });
  const streamError = errorBox();
  reviewArea.hidden = true;
  const steps = new Map(); // step name -> its <li>
  const copies = new Map(); // channel -> {article, stream}
  const images = new Map(); // concept index -> <figure>

  const cancel = h("button", { type: "button", class: "danger", text: t("campaign.cancel") });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const answer = await api(`${base}/cancel`, { method: "POST" });
      setStatus(answer.status);
    } catch (problem) {
      streamError.show(problem.message);
      cancel.disabled = false;
    }
  });

  cancel.hidden = ["succeeded", "failed", "cancelled"].includes(detail.status);

  function setStatus(status) {
    fill(badge, statusBadge(status));
    const over = ["succeeded", "failed", "cancelled"].includes(status);
    cancel.hidden = over;
    if (over) reviewArea.hidden = true;
  }

  function stepItem(name) {
    if (!steps.has(name)) {
      const item = h("li", { class: "step" }, h("span", { class: "step-name", text: stepLabel(name) }),
        h("span", { class: "step-state" }), h("span", { class: "step-cost" }));
      steps.set(name, item);
      stepList.append(item);
    }
    return steps.get(name);
  }

  function markStep(name, state, extra = "") {
    const item = stepItem(name);
    item.dataset.state = state;
    item.querySelector(".step-state").textContent = t(`stepstate.${state}`);
    item.querySelector(".step-cost").textContent = extra;
  }

  function copyCard(channel) {
    if (!copies.has(channel)) {
      const stream = h("pre", { class: "stream" });
      const article = h("article", { class: "copy card", "data-channel": channel },
        h("h3", { text: named("channel", channel) }), stream);
      copies.set(channel, { article, stream, raw: "" });
      copyArea.querySelector(".empty")?.remove();
      copyArea.append(article);
    }
    return copies.get(channel);
  }

  function showCopy(copy) {
    const { article } = copyCard(copy.channel);
    const variants = copy.variants || {};
    fill(article, h("h3", { text: named("channel", copy.channel) }),
      h("p", { class: "headline", text: copy.headline }),
      h("p", { class: "body", text: copy.body }),
      h("p", { class: "cta" }, h("strong", { text: `${t("campaign.cta")}: ` }), copy.cta),
      copy.hashtags && copy.hashtags.length ? h("p", { class: "tags", text: copy.hashtags.join(" ") }) : null,
      variants.headlines ? h("details", {}, h("summary", { text: t("campaign.variants") }),
        h("ul", {}, [...(variants.headlines || []), ...(variants.descriptions || [])].map((v) => h("li", { text: v })))) : null);
  }

  function imageFigure(index) {
    if (!images.has(index)) {
      const figure = h("figure", { class: "image card", "data-index": String(index) },
        h("div", { class: "placeholder" }), h("figcaption"));
      images.set(index, figure);
      imageArea.querySelector(".empty")?.remove();
      imageArea.append(figure);
    }
    return images.get(index);
  }

  function showProgress(state) {
    const figure = imageFigure(state.index);
    if (figure.querySelector("img")) return;
    const percent = Math.round((state.progress || 0) * 100);
    fill(figure.querySelector(".placeholder"), h("progress", { max: 100, value: percent,
      "aria-label": t("campaign.image_progress", { n: state.index + 1 }) }));
    figure.querySelector("figcaption").textContent = `${named("imagestate", state.status)} · ${percent}%`;
  }

  function showImage(image) {
    const figure = imageFigure(image.concept ?? images.size);
    const src = image.url && image.url.startsWith(base) ? image.url : `${base}/images/${image.asset_id}`;
    fill(figure.querySelector(".placeholder"), h("img", { src,
      alt: t("campaign.image_alt", { n: (image.concept ?? 0) + 1 }), width: image.width, height: image.height }));
    figure.querySelector("figcaption").textContent = `${image.width}×${image.height} · ${image.provider}/${image.model}`;
  }

  function showReview(review) {
    fill(scoreArea,
      h("p", { class: review.approved ? "verdict ok" : "verdict" },
        t(review.approved ? "campaign.approved" : "campaign.not_approved")),
      h("table", { class: "list" }, h("caption", { class: "visually-hidden", text: t("campaign.scores") }),
        h("thead", {}, h("tr", {}, ["campaign.criterion", "campaign.score", "campaign.comment"].map(
          (k) => h("th", { scope: "col", text: t(k) })))),
        h("tbody", {}, review.scores.map((s) => h("tr", {},
          h("th", { scope: "row", text: named("criterion", s.criterion) }),
          h("td", { class: "num score", text: String(s.score) }), h("td", { text: s.comment }))))),
      review.issues && review.issues.length ? [h("h3", { text: t("campaign.issues") }),
        h("ul", { class: "issues" }, review.issues.map((i) => h("li", { text: i })))] : null);
  }

  function showOutput(output) {
    for (const copy of copiesIn(output) || []) showCopy(copy);
    for (const image of imagesIn(output) || []) showImage(image);
    const review = reviewIn(output);
    if (review) showReview(review);
  }

  function showReport() {
    fill(reportArea, h("h2", { text: t("campaign.report") }), h("ul", { class: "links" },
      ["html", "md", "json"].map((kind) => h("li", {}, h("a", { href: `${base}/report.${kind}`,
        download: `campaign-${detail.id}.${kind}`, text: t(`campaign.report_${kind}`) })))));
  }

  async function decide(body, button) {
    button.disabled = true;
    const error = reviewArea.querySelector(".error");
    try {
      await api(`${base}/review`, { method: "POST", body });
      reviewArea.hidden = true;
      setStatus("running");
      announce(t(body.approve ? "campaign.sent_approval" : "campaign.sent_changes"));
    } catch (problem) {
      error.show(problem.message);
      button.disabled = false;
    }
  }

  function changeForm(label, change) {
    const note = h("textarea", { rows: 2, maxlength: 2000 });
    const send = h("button", { type: "submit", class: "secondary", text: t("campaign.request_changes") });
    const form = h("form", { class: "change" }, field(label, note), send);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!note.value.trim()) return note.focus();
      decide({ changes: [{ ...change, note: note.value.trim() }] }, send);
    });
    return form;
  }

  function showPause(data) {
    const approve = h("button", { type: "button", class: "approve", text: t("campaign.approve") });
    approve.addEventListener("click", () => decide({ approve: true }, approve));
    const parts = [];
    if (data.gate === "strategy") {
      const strategy = data.strategy || {};
      parts.push(h("pre", { class: "strategy", text: JSON.stringify(strategy, null, 2) }),
        changeForm(t("campaign.strategy_note"), { step: "strategy" }));
    } else {
      for (const copy of data.copies || []) {
        parts.push(h("div", { class: "gate-channel" }, h("h3", { text: named("channel", copy.channel) }),
          h("p", { class: "headline", text: copy.headline }), h("p", { text: copy.body }),
          changeForm(t("campaign.channel_note", { channel: named("channel", copy.channel) }), { channel: copy.channel })));
      }
    }
    const error = errorBox();
    fill(reviewArea, h("h2", { id: "review-heading", text: t("campaign.your_review") }),
      h("p", { text: t(`campaign.gate_${data.gate}`) }), approve, ...parts, error);
    reviewArea.hidden = false;
    announce(t("campaign.awaiting"));
  }

  async function finished() {
    const final = await api(base);
    setStatus(final.status);
    if (final.result) {
      showOutput(final.result.copies);
      showOutput(final.result.images);
      showOutput(final.result.review);
      showReport();
    }
    if (final.error) streamError.show(final.error.message || JSON.stringify(final.error));
    announce(t(`campaign.finished_${final.status}`, { status: named("status", final.status) }));
  }

  function onEvent(type, event) {
    const { step, data = {} } = JSON.parse(event.data);
    if (STATUS_OF[type]) setStatus(STATUS_OF[type]);
    if (step && HIDDEN_STEPS.has(step)) return;
    if (type === "step_started") markStep(step, "running");
    else if (type === "step_finished") {
      const used = spent(data.records);
      markStep(step, "done", used.tokens ? `${used.tokens} tok · ${formatUsd(used.cost)}` : "");
      showOutput(data.output);
      announce(t("campaign.step_done", { step: stepLabel(step) }));
    } else if (type === "step_failed") markStep(step, "failed", data.error ? String(data.error.message || data.error) : "");
    else if (type === "copy_delta") {
      const card = copyCard(data.channel);
      card.raw += data.text || "";
      card.stream.textContent = copySoFar(card.raw);
    }
    else if (type === "image_progress") showProgress(data);
    else if (type === "awaiting_review") showPause(data);
    else if (type === "review") reviewArea.hidden = true;
  }

  const source = new EventSource(`${base}/events`);
  for (const type of EVENTS) {
    source.addEventListener(type, (event) => {
      onEvent(type, event);
      if (LAST.includes(type)) {
        source.close(); // the stream ends here; EventSource would otherwise reconnect
        finished().catch((problem) => streamError.show(problem.message));
      }
    });
  }
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) streamError.show(t("campaign.stream_lost"));
  });
  ctx.onLeave(() => source.close());

  const options = detail.options || {};
  return h("section", { class: "page campaign" },
    h("div", { class: "page-head" }, h("h1", { text: t("campaign.title") }), h("div", { class: "head-tools" }, badge, cancel)),
    h("p", { class: "brief", text: detail.brief }),
    h("p", { class: "meta", text: [channelNames(options.channels) || t("campaigns.auto_channels"),
      options.brand_kit ? options.brand_kit.name : null,
      t(`new.review_${(options.options || {}).review === "manual" ? "manual" : "auto"}`)].filter(Boolean).join(" · ") }),
    streamError, reviewArea, reportArea,
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "steps-heading" }, h("h2", { id: "steps-heading", text: t("campaign.steps") }), stepList),
      h("section", { "aria-labelledby": "copy-heading" }, h("h2", { id: "copy-heading", text: t("campaign.copy") }), copyArea)),
    h("section", { "aria-labelledby": "images-heading" }, h("h2", { id: "images-heading", text: t("campaign.images") }), imageArea),
    h("section", { "aria-labelledby": "scores-heading" }, h("h2", { id: "scores-heading", text: t("campaign.scores") }), scoreArea));
}
