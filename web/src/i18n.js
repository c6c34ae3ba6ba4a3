// Chinese first (the product's users are), English on request; the choice is kept in localStorage.
// The strings are data, one table per language (locales/*.json, bundled by esbuild); a key missing
// from the English table falls back to the Chinese text, then to the key itself.
import en from "./locales/en.json";
import zh from "./locales/zh.json";

const STRINGS = { zh, en };

let current = localStorage.getItem("wemcp.lang") === "en" ? "en" : "zh";

export function lang() {
  return current;
}

export function setLang(value) {
  current = value === "en" ? "en" : "zh";
  localStorage.setItem("wemcp.lang", current);
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
}

export function t(key, vars = {}) {
  const s = STRINGS[current][key] ?? STRINGS.zh[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

export const KEYS = Object.keys(STRINGS.zh);
export const TABLES = STRINGS;
