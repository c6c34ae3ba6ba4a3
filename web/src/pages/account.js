// My account: who I am, my platform API keys (created with an optional server scope, shown once,
// revoked at once), my own upstream keys (write-only, masked), my third-party connections, my usage
// (today and the last 30 days) with the quota left, and my request log.
import { api, session } from "../api.js";
import { avatar } from "../avatar.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";
import { usageChart } from "./usage-chart.js";

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
    mount(keys, live.length ? h("table", { class: "grid", tabindex: "0" },
      h("caption", { class: "sr-only" }, t("keys.title")),
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
      h("p", { class: "muted" }, t("keys.about")), keys, fresh, form),
    h("section", { "aria-labelledby": "vault-h" }, h("h2", { id: "vault-h" }, t("vault.title")),
      h("p", { class: "muted" }, t("vault.about")), vaultSection()),
    h("section", { "aria-labelledby": "conn-h" }, h("h2", { id: "conn-h" }, t("conn.title")),
      h("p", { class: "muted" }, t("conn.about")), connectionsSection()),
    h("section", { "aria-labelledby": "usage-h" }, h("h2", { id: "usage-h" }, t("usage.title")), usageSection()),
    h("section", { "aria-labelledby": "logs-h" }, h("h2", { id: "logs-h" }, t("logs.title")),
      h("p", { class: "muted" }, t("logs.about")), logsSection()));
  await load();
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

function failed(el, err) {
  mount(el, h("p", { class: "error", role: "alert" }, err.message));
}

// My own upstream keys (auth's vault): listed masked; a value is entered or replaced write-only (the
// field is cleared after saving, the API answers with the mask only) and deleted at once.
export function vaultForm({ server, name, onSaved, idPrefix = "vault" }) {
  const msg = h("div", { "aria-live": "polite" });
  const serverIn = server ? null : h("input", { id: `${idPrefix}-server`, name: "server", required: true, maxlength: "200",
    autocomplete: "off", placeholder: "io.github.owner/name" });
  const nameIn = name ? null : h("input", { id: `${idPrefix}-name`, name: "name", required: true, maxlength: "128",
    autocomplete: "off", placeholder: "API_KEY" });
  const value = h("input", { id: `${idPrefix}-value`, name: "value", type: "password", required: true, maxlength: "8192",
    autocomplete: "new-password", spellcheck: "false" });
  const form = h("form", { class: "stack", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const saved = await api("/api/v1/vault", { method: "PUT", body: {
        server: server || serverIn.value.trim(), name: name || nameIn.value.trim(), value: value.value } });
      form.reset();
      mount(msg, h("p", { role: "status" }, t("vault.saved", { n: saved.name, v: saved.value })));
      await onSaved?.(saved);
    } catch (err) {
      failed(msg, err);
    }
  } },
  serverIn ? [h("label", { for: serverIn.id }, t("vault.server")), serverIn] : null,
  nameIn ? [h("label", { for: nameIn.id }, t("vault.name")), nameIn] : null,
  h("label", { for: value.id }, name ? t("vault.valueFor", { n: name }) : t("vault.value")), value,
  h("button", { type: "submit" }, t("vault.save")), msg);
  return form;
}

export function vaultTable(items, onDeleted) {
  if (!items.length) return h("p", { class: "muted" }, t("vault.none"));
  return h("table", { class: "grid", tabindex: "0", "data-testid": "vault-table" },
    h("caption", { class: "sr-only" }, t("vault.title")),
    h("thead", {}, h("tr", {}, [t("vault.server"), t("vault.name"), t("vault.masked"), t("vault.updated"), ""]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((v) => h("tr", {},
      h("td", { class: "mono" }, v.server), h("td", { class: "mono" }, v.name), h("td", { class: "mono" }, v.value),
      h("td", {}, when(v.updated_at)),
      h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `${t("vault.delete")} ${v.server} ${v.name}`,
        onclick: async () => {
          await api(`/api/v1/vault?${new URLSearchParams({ server: v.server, name: v.name })}`, { method: "DELETE" });
          await onDeleted();
        } }, t("vault.delete")))))));
}

function vaultSection() {
  const list = h("div", {});
  async function load() {
    try {
      mount(list, vaultTable((await api("/api/v1/vault")).items, load));
    } catch (err) {
      failed(list, err);
    }
  }
  load();
  return h("div", {}, list, h("h3", {}, t("vault.add")), vaultForm({ onSaved: load }));
}

// Third-party accounts (OAuth 2.0 apps an admin configured, e.g. Baidu Netdisk): connecting sends
// the browser to the third party (auth binds the flow to this browser); the tokens never come here.
function connectionsSection() {
  const box = h("div", {});
  const msg = h("div", { "aria-live": "polite" });
  const back = new URLSearchParams(location.search).get("connected");
  if (back) mount(msg, h("p", { role: "status", class: "notice" }, t("conn.done", { a: back })));
  async function load() {
    try {
      const [apps, conns] = await Promise.all([api("/api/v1/oauth/apps"), api("/api/v1/connections")]);
      const mine = new Map(conns.items.map((c) => [c.app, c]));
      mount(box, apps.items.length ? h("ul", { class: "plain conns" }, apps.items.map((a) => {
        const c = mine.get(a.slug);
        return h("li", { "data-app": a.slug },
          h("div", {}, h("strong", {}, a.name), " ", h("span", { class: "tag" }, c
            ? (c.needs_reconnect ? t("conn.reconnect") : t("conn.connected"))
            : t("conn.notConnected")),
          h("p", { class: "muted" }, t("conn.servers", { s: (a.servers || []).join(", ") }),
            c ? ` · ${t("conn.since", { at: when(c.connected_at) })}` : "")),
          c && !c.needs_reconnect
            ? h("button", { type: "button", class: "secondary", "aria-label": `${t("conn.disconnect")} ${a.name}`,
              onclick: async () => {
                try {
                  await api(`/api/v1/connections/${encodeURIComponent(a.slug)}`, { method: "DELETE" });
                  await load();
                } catch (err) { failed(msg, err); }
              } }, t("conn.disconnect"))
            : h("button", { type: "button", "aria-label": `${t("conn.connect")} ${a.name}`, onclick: async () => {
              try {
                const r = await api(`/api/v1/connections/${encodeURIComponent(a.slug)}/start`, { method: "POST" });
                location.assign(r.authorization_url);
              } catch (err) { failed(msg, err); }
            } }, t("conn.connect")));
      })) : h("p", { class: "muted" }, t("conn.none")));
    } catch (err) {
      failed(box, err);
    }
  }
  load();
  return h("div", {}, msg, box);
}

// Today's calls and the quota left per server and agent (GET /api/v1/me/usage), and the last 30
// days as a chart (GET /api/v1/me/usage/days).
function usageSection() {
  const box = h("div", { "aria-busy": "true" }, h("p", { class: "muted" }, t("loading")));
  (async () => {
    try {
      const [today, history] = await Promise.all([api("/api/v1/me/usage"), api("/api/v1/me/usage/days?days=30")]);
      const calls = [...today.servers, ...today.agents].reduce((a, r) => a + r.calls, 0);
      const quota = (rows, kind) => rows.length ? h("table", { class: "grid", tabindex: "0", "data-testid": `quota-${kind}` },
        h("caption", { class: "sr-only" }, t(`usage.${kind}`)),
        h("thead", {}, h("tr", {}, [t(`usage.${kind}Col`), t("usage.calls"), t("usage.ownKey"), t("usage.used"),
          t("usage.limit"), t("usage.remaining")].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((r) => h("tr", { "data-id": r.id },
          h("th", { scope: "row", class: "mono" }, kind === "servers" ? link(`/servers/${encodeURIComponent(r.id)}`, {}, r.id) : r.id),
          h("td", {}, r.calls), h("td", {}, r.own_key), h("td", {}, r.used),
          h("td", {}, r.limit ?? t("usage.unlimited")), h("td", {}, r.remaining ?? t("usage.unlimited"))))))
        : h("p", { class: "muted" }, t(`usage.no_${kind}`));
      box.removeAttribute("aria-busy");
      mount(box,
        h("p", { "data-testid": "usage-today" }, t("usage.today", { n: calls, day: today.day, zone: today.zone }),
          " ", h("span", { class: "muted" }, t("usage.reset", { at: when(today.reset_at) }))),
        h("h3", {}, t("usage.servers")), quota(today.servers, "servers"),
        h("h3", {}, t("usage.agents")), quota(today.agents, "agents"),
        h("h3", {}, t("usage.history")), usageChart(history.days, "usage30"));
    } catch (err) {
      box.removeAttribute("aria-busy");
      failed(box, err);
    }
  })();
  return box;
}

// My calls (GET /api/v1/logs/calls, view=own): newest first, filtered as the API allows, paged with
// its cursor (a stack of the cursors seen gives "newer").
function logsSection() {
  const field = (id, label, input) => h("div", { class: "field" }, h("label", { for: id }, label), input);
  const server = h("input", { id: "log-server", name: "server", maxlength: "200", autocomplete: "off" });
  const tool = h("input", { id: "log-tool", name: "tool", maxlength: "200", autocomplete: "off" });
  const status = h("select", { id: "log-status", name: "status" }, h("option", { value: "" }, t("logs.any")),
    ["ok", "error", "refused", "timeout"].map((v) => h("option", { value: v }, t(`logs.status.${v}`))));
  const since = h("input", { id: "log-since", name: "since", type: "date" });
  const until = h("input", { id: "log-until", name: "until", type: "date" });
  const out = h("div", { "aria-live": "polite" });
  const cursors = [];  // the cursor of each page shown before this one
  let cursor = null;

  function query() {
    const q = new URLSearchParams({ view: "own" });
    if (server.value.trim()) q.set("server", server.value.trim());
    if (tool.value.trim()) q.set("tool", tool.value.trim());
    if (status.value) q.set("status", status.value);
    if (since.value) q.set("since", new Date(`${since.value}T00:00:00`).toISOString());
    if (until.value) q.set("until", new Date(`${until.value}T23:59:59.999`).toISOString());
    return q;
  }

  // every call the filters match, as the API exports them (format=csv), saved by the browser
  async function exportCsv() {
    const q = query();
    q.set("format", "csv");
    try {
      const text = await api(`/api/v1/logs/calls?${q}`);
      const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
      const a = h("a", { href: url, download: "calls.csv", hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 0);
    } catch (err) {
      failed(out, err);
    }
  }

  async function load() {
    const q = query();
    q.set("limit", "20");
    if (cursor) q.set("cursor", cursor);
    try {
      const page = await api(`/api/v1/logs/calls?${q}`);
      mount(out, page.items.length ? h("table", { class: "grid", tabindex: "0", "data-testid": "logs-table" },
        h("caption", { class: "sr-only" }, t("logs.title")),
        h("thead", {}, h("tr", {}, [t("logs.at"), t("logs.server"), t("logs.tool"), t("logs.method"), t("logs.status"),
          t("logs.key"), t("logs.latency")].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, page.items.map((r) => h("tr", { "data-id": r.id },
          h("td", {}, when(r.at)), h("td", { class: "mono" }, r.server), h("td", { class: "mono" }, r.tool || "—"),
          h("td", { class: "mono" }, r.method), h("td", {}, t(`logs.status.${r.status}`)),
          h("td", {}, t(`logs.key.${["request", "vault", "oauth"].includes(r.key_source) ? "own" : r.key_source}`)),
          h("td", {}, `${Math.round(r.latency_ms)} ms`)))))
        : h("p", { class: "muted" }, t("logs.none")),
      h("div", { class: "pager" },
        h("button", { type: "button", class: "secondary", disabled: !cursors.length, onclick: () => {
          cursor = cursors.pop() ?? null;
          load();
        } }, t("logs.newer")),
        h("button", { type: "button", class: "secondary", disabled: !page.next_cursor, onclick: () => {
          cursors.push(cursor);
          cursor = page.next_cursor;
          load();
        } }, t("logs.older"))));
    } catch (err) {
      failed(out, err);
    }
  }

  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    cursors.length = 0;
    cursor = null;
    load();
  } }, field(server.id, t("logs.server"), server), field(tool.id, t("logs.tool"), tool),
  field(status.id, t("logs.status"), status), field(since.id, t("logs.since"), since), field(until.id, t("logs.until"), until),
  h("button", { type: "submit" }, t("logs.filter")),
  h("button", { type: "button", class: "secondary", onclick: exportCsv }, t("logs.csv")));
  load();
  return h("div", {}, form, out);
}
