// Brand kits: the user's and the shared ones; create and edit (one word or claim a line).

import { api } from "./api.js";
import { announce, errorBox, field, h, lines } from "./dom.js";
import { t } from "./i18n.js";
import { notFound } from "./notfound.js";

export async function listPage(ctx) {
  ctx.setTitle(t("kits.title"));
  const { brand_kits: kits } = await api("/api/v1/brand-kits");
  const heading = h("div", { class: "page-head" }, h("h1", { text: t("kits.title") }),
    h("a", { class: "button", href: "/studio/brand-kits/new", "data-link": true, text: t("kits.new") }));
  if (!kits.length) return h("section", { class: "page" }, heading, h("p", { class: "empty", text: t("kits.empty") }));
  return h("section", { class: "page" }, heading, h("ul", { class: "kits" }, kits.map((kit) => h("li", { class: "card kit" },
    h("h2", {}, h("a", { href: `/studio/brand-kits/${kit.id}`, "data-link": true, text: kit.name })),
    kit.shared ? h("span", { class: "badge", text: t("kits.shared") }) : null,
    kit.voice ? h("p", { text: kit.voice }) : null,
    kit.palette.length ? h("p", { class: "palette" }, kit.palette.map((colour) => {
      const swatch = h("span", { class: "swatch", title: colour, text: colour });
      swatch.style.setProperty("--swatch", colour);
      return swatch;
    })) : null,
    kit.words_to_avoid.length ? h("p", { class: "hint", text: `${t("kits.words_to_avoid")}: ${kit.words_to_avoid.join(", ")}` }) : null))));
}

const LISTS = ["words_to_use", "words_to_avoid", "claims_to_avoid"];

export async function editPage(ctx, id) {
  let kit = { name: "", voice: "", words_to_use: [], words_to_avoid: [], claims_to_avoid: [],
    palette: [], typography: "", example_copy: [], shared: false };
  if (id) {
    try {
      kit = await api(`/api/v1/brand-kits/${encodeURIComponent(id)}`);
    } catch (problem) {
      if (problem.status === 404 || problem.status === 422) return notFound(ctx, t("kits.not_found"));
      throw problem;
    }
  }
  const title = id ? t("kits.edit_title", { name: kit.name }) : t("kits.new");
  ctx.setTitle(title);
  const name = h("input", { name: "name", required: true, maxlength: 100, value: kit.name });
  const voice = h("textarea", { name: "voice", rows: 2, maxlength: 300, value: kit.voice });
  const listFields = Object.fromEntries(LISTS.map((key) => [key,
    h("textarea", { name: key, rows: 3, value: kit[key].join("\n") })]));
  const palette = h("input", { name: "palette", value: kit.palette.join(", "), placeholder: "#2E7D32, #F5F5F0" });
  const typography = h("input", { name: "typography", maxlength: 200, value: kit.typography });
  const examples = h("textarea", { name: "example_copy", rows: 4, value: kit.example_copy.join("\n\n") });
  const shared = h("input", { type: "checkbox", name: "shared", id: "kit-shared", checked: kit.shared });
  const error = errorBox();
  const save = h("button", { type: "submit", text: t("kits.save") });
  const form = h("form", { class: "card" },
    field(t("kits.name"), name), field(t("kits.voice"), voice, t("kits.voice_hint")),
    LISTS.map((key) => field(t(`kits.${key}`), listFields[key], t("kits.one_per_line"))),
    field(t("kits.palette"), palette, t("kits.palette_hint")), field(t("kits.typography"), typography),
    field(t("kits.example_copy"), examples, t("kits.examples_hint")),
    ctx.user.role === "admin" ? h("div", { class: "field" }, h("label", { for: shared.id, class: "choice" }, shared, t("kits.share"))) : null,
    error, save);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.show("");
    const body = { name: name.value.trim(), voice: voice.value.trim(), typography: typography.value.trim(),
      palette: palette.value.split(/[\s,]+/).filter(Boolean),
      example_copy: examples.value.split(/\n\s*\n/).map((e) => e.trim()).filter(Boolean) };
    for (const key of LISTS) body[key] = lines(listFields[key].value);
    if (ctx.user.role === "admin") body.shared = shared.checked;
    save.disabled = true;
    try {
      const saved = await api(id ? `/api/v1/brand-kits/${encodeURIComponent(id)}` : "/api/v1/brand-kits",
        { method: id ? "PUT" : "POST", body });
      announce(t("kits.saved", { name: saved.name }));
      ctx.go("/studio/brand-kits");
    } catch (problem) {
      error.show(problem.message);
      save.disabled = false;
    }
  });
  return h("section", { class: "page narrow" }, h("p", {}, h("a", { href: "/studio/brand-kits", "data-link": true, text: t("kits.back") })),
    h("h1", { text: title }), form);
}
