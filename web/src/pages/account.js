// My account: who I am, and my platform API keys (created with an optional server scope, shown once,
// revoked at once).
import { api, session } from "../api.js";
import { avatar } from "../avatar.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";

export async function accountPage(root) {
  if (!session.user) {
    mount(root, h("p", {}, t("account.signedOut"), " ", link("/signin", {}, t("nav.signin"))));
    return;
  }
  const u = session.user;
  const keys = h("div", {});
  const fresh = h("div", { "aria-live": "polite" });
  const name = h("input", { id: "key-name", name: "name", required: true, maxlength: "100", autocomplete: "off" });
  const servers = h("input", { id: "key-servers", name: "servers", autocomplete: "off",
    placeholder: t("keys.serversHint") });
  const form = h("form", { class: "stack", onsubmit: async (e) => {
    e.preventDefault();
    const scope = servers.value.split(/[\s,]+/).filter(Boolean);
    try {
      const key = await api("/api/v1/api-keys", { method: "POST", body: { name: name.value.trim(),
        servers: scope.length ? scope : null } });
      form.reset();
      mount(fresh, h("div", { class: "notice", role: "status" }, h("p", {}, t("keys.once")),
        h("pre", { class: "code", tabindex: "0", "data-testid": "new-key" }, key.key)));
      await load();
    } catch (err) {
      mount(fresh, h("p", { class: "error", role: "alert" }, err.message));
    }
  } },
  h("h3", {}, t("keys.create")),
  h("label", { for: "key-name" }, t("keys.name")), name,
  h("label", { for: "key-servers" }, t("keys.servers")), servers,
  h("button", { type: "submit" }, t("keys.createButton")));

  async function load() {
    const page = await api("/api/v1/api-keys");
    const live = page.items.filter((k) => !k.revoked_at);
    mount(keys, live.length ? h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, [t("keys.name"), t("keys.prefix"), t("keys.servers"), t("keys.created"), ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, live.map((k) => h("tr", {},
        h("td", {}, k.name), h("td", { class: "mono" }, `${k.prefix}…`),
        h("td", {}, k.servers ? k.servers.join(", ") : t("keys.all")),
        h("td", {}, new Date(k.created_at).toLocaleDateString()),
        h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `${t("keys.revoke")} ${k.name}`,
          onclick: async () => {
            await api(`/api/v1/api-keys/${k.id}`, { method: "DELETE" });
            await load();
          } }, t("keys.revoke")))))))
      : h("p", { class: "muted" }, t("keys.none")));
  }

  mount(root,
    h("section", { class: "server-head" }, avatar(u.login, 64),
      h("div", {}, h("h1", {}, u.name || u.login), h("p", { class: "muted" }, `${u.login} · ${t(`role.${u.role}`)}`))),
    h("section", { "aria-labelledby": "keys-h" }, h("h2", { id: "keys-h" }, t("keys.title")),
      h("p", { class: "muted" }, t("keys.about")), keys, fresh, form));
  await load();
}
