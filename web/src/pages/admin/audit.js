// The audit log (auth's /api/v1/admin/audit): every admin action across the services, read-only,
// newest first, filtered by the action's prefix (e.g. "user.", "server.").
import { api } from "../../api.js";
import { h, mount } from "../../dom.js";
import { t } from "../../i18n.js";
import { field, filters, when } from "./kit.js";

export async function auditTab(root) {
  const out = h("div", { "aria-live": "polite" });
  const list = h("div", {});
  const prefix = h("input", { id: "audit-action", maxlength: "80", autocomplete: "off", placeholder: "user." });
  let cursor = null;

  const change = (e) => [e.before && Object.keys(e.before).length ? JSON.stringify(e.before) : "",
    e.after && Object.keys(e.after).length ? ` → ${JSON.stringify(e.after)}` : ""].join("");

  async function load(more = false) {
    const params = new URLSearchParams({ limit: "50" });
    if (prefix.value.trim()) params.set("action_prefix", prefix.value.trim());
    if (more && cursor) params.set("cursor", cursor);
    const page = await api(`/api/v1/admin/audit?${params}`);
    cursor = page.next_cursor;
    const rows = page.items.map((e) => h("tr", { "data-seq": e.seq },
      h("td", {}, when(e.occurred_at)), h("th", { scope: "row", class: "mono" }, e.action),
      h("td", {}, e.service), h("td", { class: "mono small" }, `${e.target_type} ${e.target_id}`),
      h("td", { class: "mono small" }, e.actor_id ? `${e.actor_id} (${e.actor_role || ""})` : "—"),
      h("td", { class: "mono small" }, change(e), e.reason ? h("div", { class: "muted" }, e.reason) : null)));
    if (more) list.querySelector("tbody").append(...rows);
    else {
      mount(list, page.items.length ? h("table", { class: "grid", tabindex: "0" }, h("thead", {}, h("tr", {},
        [t("logs.at"), t("audit.action"), t("audit.service"), t("audit.target"), t("audit.actor"), t("audit.change")]
          .map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows)) : h("p", { class: "muted" }, t("audit.none")));
    }
    list.querySelector(".more")?.remove();
    if (cursor) list.append(h("button", { type: "button", class: "secondary more", onclick: () => load(true) }, t("admin.more")));
  }

  mount(root, h("p", { class: "muted" }, t("audit.about")), filters(out, load, field("audit-action", t("audit.prefix"), prefix)),
    out, list);
  await load();
}
