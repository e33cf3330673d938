// English and Korean: the browser's language unless the user picked one (kept in
// localStorage); <html lang> follows.

const SUPPORTED = ["en", "ko"];
const KEY = "sparklio.lang";
let strings = {};
let fallback = {};
export let lang = "en";

function initial() {
  const kept = localStorage.getItem(KEY);
  if (SUPPORTED.includes(kept)) return kept;
  const wanted = (navigator.languages || [navigator.language || "en"]).map((l) => l.slice(0, 2));
  return wanted.find((l) => SUPPORTED.includes(l)) || "en";
}

async function load(code) {
  const response = await fetch(`/studio/static/i18n/${code}.json`, { credentials: "same-origin" });
  return response.json();
}

export async function setLanguage(code, keep = false) {
  lang = SUPPORTED.includes(code) ? code : "en";
  if (keep) localStorage.setItem(KEY, lang);
  if (!Object.keys(fallback).length) fallback = await load("en");
  strings = lang === "en" ? fallback : await load(lang);
  document.documentElement.lang = lang;
}

export async function startLanguage() {
  await setLanguage(initial());
}

/** The text for `key` in the current language, {name}s filled from `vars`. */
export function t(key, vars = {}) {
  const text = strings[key] ?? fallback[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

export function locale() {
  return lang === "ko" ? "ko-KR" : "en-US";
}
