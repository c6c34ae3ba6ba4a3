// What the admin tabs share: a labelled field, a status/alert line and a date.
import { h, mount } from "../../dom.js";
import { t } from "../../i18n.js";

export const field = (id, label, el) => h("div", { class: "field" }, h("label", { for: id }, label), el);

export function say(out, msg, bad = false) {
  mount(out, h("p", bad ? { class: "error", role: "alert" } : { role: "status" }, msg));
}

// The filter form above a tab's list: its fields and a search button; submitting runs `load`, whose
// failure goes to `out`.
export function filters(out, load, ...fields) {
  return h("form", { class: "search filters", role: "search", onsubmit: (e) => {
    e.preventDefault();
    load().catch((err) => say(out, err.message, true));
  } }, ...fields, h("button", { type: "submit" }, t("search.go")));
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

// Runs an admin action; its result (or the API's problem detail) goes to `out`.
export async function run(out, fn, done) {
  try {
    await fn();
    if (done) say(out, done);
    return true;
  } catch (err) {
    say(out, err.message, true);
    return false;
  }
}
