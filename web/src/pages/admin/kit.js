// What the admin tabs share: a labelled field, a status/alert line and a date.
import { h, mount } from "../../dom.js";

export const field = (id, label, el) => h("div", { class: "field" }, h("label", { for: id }, label), el);

export function say(out, msg, bad = false) {
  mount(out, h("p", bad ? { class: "error", role: "alert" } : { role: "status" }, msg));
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
