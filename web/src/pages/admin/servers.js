// Servers by status (the catalog's admin view, every status with its count); disable with a reason
// and enable again. The catalog checks the admin role on each call.
import { api } from "../../api.js";
import { h, link, mount } from "../../dom.js";
import { t } from "../../i18n.js";
import { field, filters, run, when } from "./kit.js";

const STATUSES = ["draft", "pending_review", "rejected", "submitted", "deploying", "published", "failed", "disabled"];
// disabling is for what was let through to deployment; a submission waiting for review is rejected instead
const DISABLEABLE = new Set(["submitted", "deploying", "published", "failed"]);

export async function serversTab(root) {
  const out = h("div", { "aria-live": "polite" });
  const list = h("div", {});
  const status = h("select", { id: "s-status" }, h("option", { value: "" }, t("admin.any")));
  const q = h("input", { id: "s-q", type: "search", maxlength: "200", autocomplete: "off" });
  let cursor = null;

  async function load(more = false) {
    const params = new URLSearchParams({ limit: "25" });
    if (status.value) params.set("status", status.value);
    if (q.value.trim()) params.set("q", q.value.trim());
    if (more && cursor) params.set("cursor", cursor);
    const page = await api(`/api/v1/admin/servers?${params}`);
    cursor = page.next_cursor;
    const chosen = status.value;
    status.replaceChildren(h("option", { value: "" }, `${t("admin.any")} (${page.total})`),
      ...STATUSES.map((s) => h("option", { value: s, selected: s === chosen }, `${t(`status.${s}`)} (${page.counts[s] ?? 0})`)));
    const rows = page.items.map((s) => row(s));
    if (more) list.querySelector("tbody").append(...rows);
    else {
      mount(list, page.items.length ? h("table", { class: "grid" }, h("thead", {}, h("tr", {},
        [t("publish.name"), t("server.version"), t("server.status"), t("admin.updated"), ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, t("results.none")));
    }
    list.querySelector(".more")?.remove();
    if (cursor) list.append(h("button", { type: "button", class: "secondary more", onclick: () => load(true) }, t("admin.more")));
  }

  function row(s) {
    const reason = h("input", { id: `dis-${s.slug}`, maxlength: "500" });
    const act = (verb, body, done) => run(out, () => api(`/api/v1/servers/${encodeURIComponent(s.slug)}/${verb}`,
      { method: "POST", body }), done).then((ok) => ok && load());
    return h("tr", { "data-slug": s.slug },
      h("th", { scope: "row" }, link(`/servers/${encodeURIComponent(s.slug)}`, {}, s.title || s.name),
        h("div", { class: "muted mono small" }, s.name)),
      h("td", { class: "mono" }, s.version || ""),
      h("td", {}, t(`status.${s.status}`), s.status_detail ? h("div", { class: "muted" }, s.status_detail) : null),
      h("td", {}, when(s.updated_at)),
      h("td", {}, !DISABLEABLE.has(s.status) && s.status !== "disabled" ? null : s.status === "disabled"
        ? h("button", { type: "button", class: "secondary", "aria-label": `${t("servers.enable")} ${s.slug}`,
          onclick: () => act("enable", undefined, t("servers.enabled", { s: s.slug })) }, t("servers.enable"))
        : h("form", { class: "row", onsubmit: (e) => {
          e.preventDefault();
          act("disable", reason.value.trim() ? { reason: reason.value.trim() } : {}, t("servers.disabled", { s: s.slug }));
        } }, h("label", { for: `dis-${s.slug}` }, t("servers.reason")), reason,
        h("button", { type: "submit", class: "secondary", "aria-label": `${t("servers.disable")} ${s.slug}` }, t("servers.disable")))));
  }

  status.addEventListener("change", () => load());
  mount(root, filters(out, load, field("s-status", t("server.status"), status), field("s-q", t("servers.search"), q)),
    out, list);
  await load();
}
