// Log in with an email and password: POST /api/v1/auth/session sets the session cookie.

import { api } from "./api.js";
import { errorBox, field, h } from "./dom.js";
import { t } from "./i18n.js";

export async function page(ctx, next) {
  ctx.setTitle(t("login.title"));
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const error = errorBox();
  const submit = h("button", { type: "submit", text: t("login.submit") });
  const form = h("form", { class: "card", novalidate: false }, field(t("login.email"), email),
    field(t("login.password"), password), error, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.show("");
    try {
      const answer = await api("/api/v1/auth/session", {
        method: "POST",
        body: { email: email.value.trim(), password: password.value },
      });
      ctx.loggedIn(answer.user);
      ctx.go(next || "/studio", true);
    } catch (problem) {
      error.show(problem.status === 401 ? t("login.wrong") : problem.message);
      submit.disabled = false;
      password.focus();
    }
  });
  requestAnimationFrame(() => email.focus());
  return h("section", { class: "page narrow" }, h("h1", { text: t("login.title") }),
    h("p", { class: "lead", text: t("login.lead") }), form);
}
