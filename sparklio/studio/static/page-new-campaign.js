// A new campaign: a brief (typed, pasted, or read from a .yaml/.json/.md/.txt file and parsed by
// the API as `sparklio campaign BRIEF_FILE` parses it), a brand kit, channels, review mode.

import { api } from "./api.js";
import { errorBox, field, h } from "./dom.js";
import { t } from "./i18n.js";

export const CHANNELS = ["instagram", "naver_search", "youtube", "kakao", "email", "blog"];

function readText(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsText(file);
  });
}

export async function page(ctx) {
  ctx.setTitle(t("new.title"));
  const { brand_kits: kits } = await api("/api/v1/brand-kits");
  let fromFile = {}; // what a brief file adds beyond the brief and channels (facts, variants...)

  const brief = h("textarea", { name: "brief", rows: 8, required: true, maxlength: 20000 });
  const file = h("input", { type: "file", name: "brief_file", accept: ".yaml,.yml,.json,.md,.txt" });
  const fileStatus = h("p", { class: "hint", role: "status" });
  const fileError = errorBox();
  const kit = h("select", { name: "brand_kit" }, h("option", { value: "", text: t("new.no_kit") }),
    kits.map((k) => h("option", { value: k.id, text: k.shared ? `${k.name} (${t("kits.shared")})` : k.name })));
  const boxes = CHANNELS.map((c) => h("input", { type: "checkbox", name: "channels", value: c, id: `channel-${c}` }));
  const channels = h("fieldset", { class: "choices" }, h("legend", { text: t("new.channels") }),
    h("p", { class: "hint", text: t("new.channels_hint") }),
    boxes.map((box) => h("label", { for: box.id, class: "choice" }, box, t(`channel.${box.value}`))));
  const modes = ["auto", "manual"].map((mode) => h("input", {
    type: "radio", name: "review", value: mode, id: `review-${mode}`, checked: mode === "auto" }));
  const review = h("fieldset", { class: "choices" }, h("legend", { text: t("new.review") }),
    modes.map((m) => h("label", { for: m.id, class: "choice" }, m, t(`new.review_${m.value}`))));
  const error = errorBox();
  const submit = h("button", { type: "submit", text: t("new.submit") });

  file.addEventListener("change", async () => {
    const chosen = file.files[0];
    fileError.show("");
    if (!chosen) return;
    try {
      const parsed = await api("/api/v1/campaigns/brief-file", {
        method: "POST", body: { filename: chosen.name, text: await readText(chosen) } });
      const { brief: text, channels: picked, ...rest } = parsed;
      brief.value = text || "";
      if (Array.isArray(picked)) for (const box of boxes) box.checked = picked.includes(box.value);
      fromFile = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== null && v !== undefined));
      fileStatus.textContent = t("new.file_read", { name: chosen.name }); // role=status: read out
    } catch (problem) {
      fileError.show(t("new.file_error", { name: chosen.name, message: problem.message }));
    }
  });

  const form = h("form", { class: "card" },
    field(t("new.brief"), brief, t("new.brief_hint")),
    field(t("new.file"), file, t("new.file_hint")), fileStatus, fileError,
    field(t("new.kit"), kit), channels, review, error, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.show("");
    const picked = boxes.filter((b) => b.checked).map((b) => b.value);
    const body = { ...fromFile, brief: brief.value.trim(),
      options: { ...(fromFile.options || {}), review: modes.find((m) => m.checked).value } };
    if (picked.length) body.channels = picked;
    else delete body.channels;
    if (kit.value) body.brand_kit_id = kit.value;
    if (!body.brief) {
      error.show(t("new.brief_missing"));
      brief.focus();
      return;
    }
    submit.disabled = true;
    try {
      const started = await api("/api/v1/campaigns", { method: "POST", body });
      ctx.go(`/studio/campaigns/${started.id}`);
    } catch (problem) {
      error.show(problem.message);
      submit.disabled = false;
    }
  });
  return h("section", { class: "page narrow" }, h("h1", { text: t("new.title") }), form);
}
