// Request logs (the crawler's /api/v1/logs/calls, the admins' view of every call): newest first,
// filtered by server and status, more with the cursor. No arguments or results: the log has none.
import { api } from "../../api.js";
import { h, mount } from "../../dom.js";
import { t } from "../../i18n.js";
import { field, filters, when } from "./kit.js";

export async function logsTab(root) {
  const out = h("div", { "aria-live": "polite" });
  const list = h("div", {});
  const server = h("input", { id: "log-server", maxlength: "200", autocomplete: "off" });
  const status = h("select", { id: "log-status" }, h("option", { value: "" }, t("admin.any")),
    ["ok", "error", "refused", "timeout"].map((s) => h("option", { value: s }, t(`logs.status.${s}`))));
  let cursor = null;

  async function load(more = false) {
    const params = new URLSearchParams({ view: "all", limit: "50" });
    if (server.value.trim()) params.set("server", server.value.trim());
    if (status.value) params.set("status", status.value);
    if (more && cursor) params.set("cursor", cursor);
    const page = await api(`/api/v1/logs/calls?${params}`);
    cursor = page.next_cursor;
    const rows = page.items.map((c) => h("tr", { "data-call": c.id },
      h("td", {}, when(c.at)), h("th", { scope: "row", class: "mono" }, c.server),
      h("td", { class: "mono" }, c.tool ? `${c.method} ${c.tool}` : c.method),
      h("td", {}, t(`logs.status.${c.status}`) , c.error_code != null ? ` (${c.error_code})` : ""),
      h("td", { class: "mono small" }, c.caller || t("logs.anonymous")),
      h("td", {}, c.key_source), h("td", {}, `${Math.round(c.latency_ms)} ms`)));
    if (more) list.querySelector("tbody").append(...rows);
    else {
      mount(list, page.items.length ? h("table", { class: "grid", tabindex: "0" }, h("thead", {}, h("tr", {},
        [t("logs.at"), t("logs.server"), t("logs.method"), t("server.status"), t("logs.caller"), t("logs.key"), t("logs.latency")]
          .map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows)) : h("p", { class: "muted" }, t("logs.none")));
    }
    list.querySelector(".more")?.remove();
    if (cursor) list.append(h("button", { type: "button", class: "secondary more", onclick: () => load(true) }, t("admin.more")));
  }

  mount(root, filters(out, load, field("log-server", t("logs.server"), server),
    field("log-status", t("server.status"), status)), out, list);
  await load();
}
