// Building the page: h("tag", {attributes, onclick: fn}, ...children), no HTML strings
// (text is always text, so nothing a campaign or a user wrote can become markup).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name in el) el[name] = value; // a property: value, checked, required...
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

let fieldIds = 0;

/** A labelled form field: <label for> and the control (input, select or textarea). */
export function field(label, control, hint) {
  control.id ||= `f${++fieldIds}`;
  const help = hint ? h("p", { class: "hint", id: `${control.id}-hint`, text: hint }) : null;
  if (help) control.setAttribute("aria-describedby", help.id);
  return h("div", { class: "field" }, h("label", { for: control.id, text: label }), control, help);
}

/** An element showing an error (role=alert, read out when it changes); empty when none. */
export function errorBox() {
  const box = h("p", { class: "error", role: "alert" });
  box.hidden = true;
  box.show = (message) => {
    box.textContent = message || "";
    box.hidden = !message;
  };
  return box;
}

/** Say something to screen readers (the shell's aria-live region). */
export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // a fresh text node after clearing: the same words twice are read twice
  requestAnimationFrame(() => { region.textContent = message; });
}

export function formatWhen(iso, locale) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
}

export function formatUsd(value) {
  const number = Number(value || 0);
  return `$${number.toFixed(number && number < 0.01 ? 6 : 4)}`;
}

/** One line per item, trimmed, blank lines dropped. */
export function lines(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean);
}

/** Replace an element's children (null and false skipped, unlike replaceChildren). */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}
