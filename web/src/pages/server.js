// A server's page: what it is, its tools with their input schemas, prompts, resources, and how to
// connect from the common MCP clients.
import { ApiError, api, session } from "../api.js";
import { avatar } from "../avatar.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";
import { vaultForm, vaultTable } from "./account.js";

export async function serverPage(root, slug) {
  let s;
  try {
    s = await api(`/api/v1/servers/${encodeURIComponent(slug)}`);
  } catch (err) {
    const msg = err instanceof ApiError && err.status === 404 ? t("server.notFound") : t("error", { m: err.message });
    mount(root, h("p", { class: "error", role: "alert" }, msg), link("/", {}, t("server.back")));
    return;
  }
  document.title = `${s.title || s.name} — WeMcp`;
  mount(root,
    h("p", {}, link("/", {}, `← ${t("server.back")}`)),
    h("section", { class: "server-head" }, avatar(s.slug, 72),
      h("div", {}, h("h1", {}, s.title || s.name), h("p", { class: "muted mono" }, `${s.name} ${s.version || ""}`),
        h("p", {}, s.description),
        h("p", { class: "meta" }, h("span", {}, `${t("server.status")}: ${s.status}`),
          s.category ? h("span", { class: "tag" }, s.category) : null,
          ...(s.tags || []).map((tag) => h("span", { class: "tag" }, tag)),
          h("span", {}, t("calls", { n: s.calls }))))),
    tabs([
      [t("server.tools"), [ownKey(s), tools(s.slug, s.tools || [])]],
      [t("server.connect"), connect(s)],
      [t("server.prompts"), list(s.prompts || [], (p) => [h("code", {}, p.name), p.description ? ` — ${p.description}` : ""])],
      [t("server.resources"), list(s.resources || [], (r) => [h("code", {}, r.uri || r.name), r.description ? ` — ${r.description}` : ""])],
    ]));
}

function tabs(entries) {
  const panels = entries.map(([, body], i) => h("div", { role: "tabpanel", id: `panel-${i}`, "aria-labelledby": `tab-${i}`,
    hidden: i !== 0, tabindex: "0" }, body));
  const buttons = entries.map(([label], i) => h("button", { type: "button", role: "tab", id: `tab-${i}`,
    "aria-controls": `panel-${i}`, "aria-selected": i === 0 ? "true" : "false", tabindex: i === 0 ? "0" : "-1",
    onclick: () => select(i), onkeydown: (e) => {
      if (e.key === "ArrowRight") select((i + 1) % entries.length, true);
      if (e.key === "ArrowLeft") select((i - 1 + entries.length) % entries.length, true);
    } }, label));
  function select(i, focus) {
    buttons.forEach((b, j) => { b.setAttribute("aria-selected", String(i === j)); b.tabIndex = i === j ? 0 : -1; });
    panels.forEach((p, j) => { p.hidden = i !== j; });
    if (focus) buttons[i].focus();
  }
  return h("section", { class: "tabs" }, h("div", { role: "tablist" }, buttons), panels);
}

function list(items, render) {
  return items.length ? h("ul", { class: "plain" }, items.map((x) => h("li", {}, render(x)))) : h("p", { class: "muted" }, "—");
}

function tools(slug, items) {
  if (!items.length) return h("p", { class: "muted" }, t("server.noTools"));
  return h("ul", { class: "tools" }, items.map((tool, i) => h("li", {},
    h("h3", { class: "mono" }, tool.name), tool.description ? h("p", {}, tool.description) : null,
    h("details", {}, h("summary", {}, t("server.schema")),
      h("pre", { class: "code", tabindex: "0" }, JSON.stringify(tool.inputSchema || tool.input_schema || {}, null, 2))),
    h("details", {}, h("summary", {}, t("try.title")), tryForm(slug, tool, i)))));
}

// Try a tool from the browser: a form made from its input schema, called through the gateway's REST
// route on the system key or the signed-in user's own (the answer says which).
function tryForm(slug, tool, index) {
  const schema = tool.inputSchema || tool.input_schema || {};
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const fields = Object.entries(props).map(([name, p]) => {
    const id = `try-${index}-${name}`;
    const label = h("label", { for: id }, name, required.has(name) ? " *" : "",
      p.description ? h("span", { class: "muted" }, ` — ${p.description}`) : null);
    let input;
    if (Array.isArray(p.enum)) {
      input = h("select", { id, name }, h("option", { value: "" }, "—"), p.enum.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
    } else if (p.type === "boolean") {
      input = h("input", { id, name, type: "checkbox" });
    } else if (p.type === "object" || p.type === "array") {
      input = h("textarea", { id, name, rows: "3", placeholder: p.type === "array" ? "[]" : "{}" });
    } else {
      input = h("input", { id, name, type: p.type === "number" || p.type === "integer" ? "number" : "text",
        step: p.type === "integer" ? "1" : p.type === "number" ? "any" : null, required: required.has(name) });
    }
    return { name, p, input, row: h("div", { class: "field" }, label, input) };
  });
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "stack", onsubmit: async (e) => {
    e.preventDefault();
    const args = {};
    try {
      for (const { name, p, input } of fields) {
        if (p.type === "boolean") { if (input.checked) args[name] = true; continue; }
        const v = input.value.trim();
        if (v === "") continue;
        if (Array.isArray(p.enum)) args[name] = JSON.parse(v);
        else if (p.type === "number" || p.type === "integer") args[name] = Number(v);
        else if (p.type === "object" || p.type === "array") args[name] = JSON.parse(v);
        else args[name] = v;
      }
    } catch (err) {
      mount(out, h("p", { class: "error", role: "alert" }, t("try.badJson", { m: err.message })));
      return;
    }
    mount(out, h("p", { class: "muted" }, t("loading")));
    try {
      const r = await api(`/api/v1/servers/${encodeURIComponent(slug)}/tools/${encodeURIComponent(tool.name)}/call`,
        { method: "POST", body: { arguments: args } });
      const texts = (r.result.content || []).filter((c) => c.type === "text").map((c) => c.text);
      mount(out, h("p", { class: "muted" }, t(r.result.isError ? "try.toolError" : "try.done", { k: t(`try.key.${["request", "vault", "oauth"].includes(r.key_source) ? "own" : r.key_source}`) })),
        h("pre", { class: "code", tabindex: "0", "data-testid": `try-result-${tool.name}` },
          texts.length ? texts.join("\n") : JSON.stringify(r.result, null, 2)));
    } catch (err) {
      mount(out, h("p", { class: "error", role: "alert" }, err.message));
    }
  } }, fields.map((f) => f.row), h("button", { type: "submit" }, t("try.call")), out);
  return form;
}

function snippet(label, text) {
  const pre = h("pre", { class: "code", tabindex: "0" }, text);
  const btn = h("button", { type: "button", class: "copy", onclick: async () => {
    try {
      await navigator.clipboard.writeText(text);
      btn.textContent = t("copied");
    } catch {
      const range = document.createRange();
      range.selectNodeContents(pre);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
  } }, t("copy"));
  return h("div", { class: "snippet" }, h("h3", {}, label), btn, pre);
}

// key: a key minted for these snippets on request (shown once); otherwise a placeholder
export function snippets(s, key = null) {
  const c = s.connect || {};
  if (c.runs === "local") return [["Claude Desktop / Cursor", JSON.stringify(c.config, null, 2)]];
  const url = c.url;
  const name = s.slug;
  const auth = key ? `Bearer ${key}` : "Bearer ${WEMCP_API_KEY}";
  const pyAuth = key ? JSON.stringify(`Bearer ${key}`) : "f\"Bearer {os.environ['WEMCP_API_KEY']}\"";
  const nodeAuth = key ? JSON.stringify(`Bearer ${key}`) : "`Bearer ${process.env.WEMCP_API_KEY}`";
  return [
    ["Claude Desktop", JSON.stringify(key ? withKey(c.config, key) : c.config, null, 2)],
    ["Claude Code", `claude mcp add --transport http ${name} ${url} --header "Authorization: ${auth}"`],
    ["Cursor (~/.cursor/mcp.json)", JSON.stringify({ mcpServers: { [name]: { url, headers: { Authorization: auth } } } }, null, 2)],
    ["VS Code (.vscode/mcp.json)", JSON.stringify({ servers: { [name]: { type: "http", url,
      headers: { Authorization: auth } } } }, null, 2)],
    ["Python (mcp SDK)", [
      "import asyncio, os, httpx2",
      "from mcp import Client",
      "from mcp.client.streamable_http import streamable_http_client",
      "",
      "async def main():",
      `    http = httpx2.AsyncClient(headers={"Authorization": ${pyAuth}})`,
      `    async with Client(streamable_http_client("${url}", http_client=http)) as client:`,
      "        print(await client.list_tools())",
      "",
      "asyncio.run(main())",
    ].join("\n")],
    ["Node (@modelcontextprotocol/sdk)", [
      'import { Client } from "@modelcontextprotocol/sdk/client/index.js";',
      'import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";',
      "",
      `const transport = new StreamableHTTPClientTransport(new URL("${url}"), {`,
      `  requestInit: { headers: { Authorization: ${nodeAuth} } },`,
      "});",
      'const client = new Client({ name: "my-app", version: "1.0.0" });',
      "await client.connect(transport);",
      "console.log(await client.listTools());",
    ].join("\n")],
  ];
}

function withKey(config, key) {
  return JSON.parse(JSON.stringify(config).replaceAll("${WEMCP_API_KEY}", key));
}

// The connect snippets carry a placeholder; on request, a NEW platform API key scoped to this server
// is minted (POST /api/v1/api-keys, shown this once) and filled in. Existing keys are never shown.
function connect(s) {
  const c = s.connect || {};
  const inputs = c.inputs || [];
  const list = h("div", {});
  const minted = h("div", { "aria-live": "polite" });
  const render = (key) => mount(list, snippets(s, key).map(([label, text]) => snippet(label, text)));
  render(null);
  const mint = c.runs === "hosted" && session.user ? h("button", { type: "button", class: "secondary", onclick: async () => {
    mint.disabled = true;
    try {
      const key = await api("/api/v1/api-keys", { method: "POST", body: {
        name: `${s.slug}`.slice(0, 80) + " (console)", servers: [s.slug] } });
      mount(minted, h("div", { class: "notice", role: "status", "data-testid": "minted-key" },
        h("p", {}, t("server.minted", { n: key.name })), h("p", { class: "muted" }, t("keys.once"))));
      render(key.key);
    } catch (err) {
      mint.disabled = false;
      mount(minted, h("p", { class: "error", role: "alert" }, err.message));
    }
  } }, t("server.mint")) : null;
  return h("div", {},
    c.runs === "local" ? h("p", {}, t("server.local")) : [
      h("p", {}, `${t("server.url")}: `, h("code", {}, c.url)), h("p", { class: "muted" }, t("server.keyNote", { v: "${WEMCP_API_KEY}" }))],
    inputs.length ? h("div", {}, h("h3", {}, t("server.inputs")), h("ul", { class: "plain" }, inputs.map((i) => h("li", {},
      h("code", {}, i.name), " ", h("span", { class: "tag" }, i.isRequired ? t("required") : t("optional")),
      i.isSecret ? h("span", { class: "tag" }, t("secret")) : null)))) : null,
    mint ? h("p", {}, mint, " ", h("span", { class: "muted" }, t("server.mintAbout"))) : null, minted, list);
}

// My own upstream key for this server (auth's vault): saved values shown masked, entered or replaced
// write-only. The gateway uses them before the platform's key, for try-it and every client alike.
function ownKey(s) {
  const c = s.connect || {};
  const inputs = c.runs === "hosted" ? c.inputs || [] : [];
  if (!inputs.length) return null;
  const box = h("section", { class: "panel own-key", "aria-labelledby": "own-key-h" },
    h("h2", { id: "own-key-h" }, t("server.ownKey")));
  if (!session.user) {
    box.append(h("p", { class: "muted" }, t("server.ownKeySignIn"), " ", link("/signin", {}, t("nav.signin"))));
    return box;
  }
  const saved = h("div", {});
  const forms = h("div", {});
  async function load() {
    try {
      const { items } = await api(`/api/v1/vault?${new URLSearchParams({ server: s.slug })}`);
      const have = new Set(items.map((v) => v.name));
      const needed = inputs.filter((i) => i.isRequired && i.isSecret);
      const own = needed.length && needed.every((i) => have.has(i.name));
      mount(saved, h("p", { "data-testid": "key-in-use" }, own ? t("server.usesOwn") : t("server.usesSystem")),
        items.length ? vaultTable(items, load) : null);
    } catch (err) {
      mount(saved, h("p", { class: "error", role: "alert" }, err.message));
    }
  }
  mount(forms, inputs.map((i, n) => vaultForm({ server: s.slug, name: i.name, onSaved: load, idPrefix: `own-${n}` })));
  load();
  box.append(h("p", { class: "muted" }, t("server.ownKeyAbout")), saved, forms);
  return box;
}
