// Users (auth's /api/v1/admin/users): search, change a role (only below one's own, as auth enforces),
// ban with a reason (the user's keys and sessions stop at once) and lift a ban.
import { api, session } from "../../api.js";
import { h, mount } from "../../dom.js";
import { t } from "../../i18n.js";
import { field, filters, run, when } from "./kit.js";

const ROLES = ["user", "merchant", "admin", "superadmin"];

export async function usersTab(root) {
  const out = h("div", { "aria-live": "polite" });
  const list = h("div", {});
  const q = h("input", { id: "u-q", type: "search", maxlength: "200", autocomplete: "off" });
  const role = h("select", { id: "u-role" }, h("option", { value: "" }, t("admin.any")),
    ROLES.map((r) => h("option", { value: r }, t(`role.${r}`))));
  const banned = h("select", { id: "u-banned" }, h("option", { value: "" }, t("admin.any")),
    h("option", { value: "true" }, t("users.banned")), h("option", { value: "false" }, t("users.notBanned")));
  const mine = session.user.role;
  // the roles this admin may give: every one for the superadmin, those below "admin" for an admin
  const grantable = mine === "superadmin" ? ROLES : ROLES.filter((r) => ROLES.indexOf(r) < ROLES.indexOf(mine));
  let cursor = null;

  async function load(more = false) {
    const params = new URLSearchParams({ limit: "25" });
    if (q.value.trim()) params.set("q", q.value.trim());
    if (role.value) params.set("role", role.value);
    if (banned.value) params.set("banned", banned.value);
    if (more && cursor) params.set("cursor", cursor);
    const page = await api(`/api/v1/admin/users?${params}`);
    cursor = page.next_cursor;
    const rows = page.items.map((u) => userRow(u));
    if (more) list.querySelector("tbody").append(...rows);
    else {
      mount(list, h("p", { class: "muted" }, t("users.total", { n: page.total })), page.items.length
        ? h("table", { class: "grid" }, h("thead", {}, h("tr", {}, [t("users.login"), t("users.role"), t("users.state"),
          t("keys.created"), ""].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows))
        : h("p", { class: "muted" }, t("users.none")));
    }
    list.querySelector(".more")?.remove();
    if (cursor) list.append(h("button", { type: "button", class: "secondary more", onclick: () => load(true) }, t("admin.more")));
  }

  function userRow(u) {
    const self = u.id === session.user.id;
    const canTouch = !self && (mine === "superadmin" || ROLES.indexOf(u.role) < ROLES.indexOf(mine));
    const rid = `role-${u.id}`;
    const pick = h("select", { id: rid }, (canTouch ? grantable : [u.role]).map((r) =>
      h("option", { value: r, selected: r === u.role }, t(`role.${r}`))));
    const reason = h("input", { id: `ban-${u.id}`, minlength: "3", maxlength: "2000", required: true });
    const controls = canTouch ? [
      h("div", { class: "row" }, h("label", { class: "sr-only", for: rid }, `${t("users.role")} ${u.login}`), pick,
        h("button", { type: "button", class: "secondary", "aria-label": `${t("users.setRole")} ${u.login}`,
          onclick: () => run(out, () => api(`/api/v1/admin/users/${u.id}/role`, { method: "PUT", body: { role: pick.value } }),
            t("users.roleSet", { u: u.login, r: t(`role.${pick.value}`) })).then((ok) => ok && load()) }, t("users.setRole"))),
      u.banned
        ? h("button", { type: "button", class: "secondary", "aria-label": `${t("users.unban")} ${u.login}`,
          onclick: () => run(out, () => api(`/api/v1/admin/users/${u.id}/unban`, { method: "POST", body: {} }),
            t("users.unbanned", { u: u.login })).then((ok) => ok && load()) }, t("users.unban"))
        : h("form", { class: "row", onsubmit: (e) => {
          e.preventDefault();
          run(out, () => api(`/api/v1/admin/users/${u.id}/ban`, { method: "POST", body: { reason: reason.value.trim() } }),
            t("users.bannedOk", { u: u.login })).then((ok) => ok && load());
        } }, h("label", { for: `ban-${u.id}` }, t("users.banReason")), reason,
        h("button", { type: "submit", "aria-label": `${t("users.ban")} ${u.login}` }, t("users.ban")))] : [];
    return h("tr", { "data-user": u.login },
      h("th", { scope: "row" }, u.login, u.name ? h("div", { class: "muted" }, u.name) : null,
        h("div", { class: "muted mono small" }, u.id)),
      h("td", {}, t(`role.${u.role}`)),
      h("td", {}, u.banned ? h("span", { class: "badge" }, t("users.banned"), u.ban_reason ? `: ${u.ban_reason}` : "") : t("users.active")),
      h("td", {}, when(u.created_at)),
      h("td", {}, controls));
  }

  mount(root, filters(out, load, field("u-q", t("users.search"), q), field("u-role", t("users.role"), role),
    field("u-banned", t("users.state"), banned)), out, list);
  await load();
}
