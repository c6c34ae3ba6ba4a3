// Agents: my agents, creating one from a model and catalog servers, and an agent's page — chat with
// it (streamed through /v1/agents/{id}/chat/completions, its MCP tool calls shown as steps), its MCP
// URL with connect snippets, edit and delete. All through the public API, like any client.
import { ApiError, api, authHeaders, refresh, session } from "../api.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";

// The development stand-in model provider (make run): shown as such wherever its model appears.
const STAND_IN = "dev-stand-in";
const isStandIn = (model) => model === STAND_IN || String(model || "").endsWith(`/${STAND_IN}`);
const standInBadge = (model) => isStandIn(model)
  ? h("span", { class: "badge stand-in", "data-testid": "stand-in-badge" }, t("agents.standIn")) : null;

function signedOut(root) {
  mount(root, h("p", {}, t("account.signedOut"), " ", link("/signin", {}, t("nav.signin"))));
}

const refs = (a) => (a.mcp_servers || []).map((s) => s.ref || s.server_label || s.server_url).filter(Boolean);

export async function agentsPage(root) {
  if (!session.user) return signedOut(root);
  document.title = `${t("agents.title")} — WeMcp`;
  const page = await api("/api/v1/agents?page_size=100");
  mount(root,
    h("div", { class: "row spread" }, h("h1", {}, t("agents.title")), link("/agents/new", { class: "button" }, t("agents.new"))),
    h("p", { class: "muted" }, t("agents.about")),
    page.items.length ? h("ul", { class: "cards" }, page.items.map((a) => h("li", { class: "card" },
      h("h2", { class: "card-title" }, link(`/agents/${a.id}`, {}, a.name)),
      a.description ? h("p", { class: "desc" }, a.description) : null,
      h("p", { class: "meta" }, h("span", { class: "mono" }, a.model), standInBadge(a.model),
        h("span", {}, t("agents.servers.n", { n: refs(a).length })))))) : h("p", { class: "muted" }, t("agents.none")));
}

// Models from GET /v1/models (the registered providers), as <option>s.
async function modelOptions(selected) {
  const models = (await api("/v1/models")).data || [];
  return models.map((m) => h("option", { value: m.id, selected: m.id === selected },
    isStandIn(m.id) ? `${m.id} — ${t("agents.standIn")}` : m.id));
}

// Pick catalog servers: search, add, remove. `chosen` is a Map slug -> title, kept by the caller.
function serverPicker(chosen) {
  const list = h("ul", { class: "plain chosen", "aria-label": t("agents.chosen") });
  const found = h("div", { "aria-live": "polite" });
  const query = h("input", { id: "server-q", type: "search", autocomplete: "off", placeholder: t("search.placeholder") });
  function render() {
    mount(list, chosen.size ? [...chosen].map(([slug, title]) => h("li", { class: "row" },
      h("span", {}, title), h("span", { class: "muted mono" }, slug),
      h("button", { type: "button", class: "secondary", "aria-label": `${t("agents.remove")} ${title}`,
        onclick: () => { chosen.delete(slug); render(); } }, t("agents.remove"))))
      : h("li", { class: "muted" }, t("agents.noServers")));
  }
  async function search() {
    mount(found, h("p", { class: "muted" }, t("loading")));
    try {
      const r = await api("/api/v1/servers/search", { method: "POST",
        body: { query: query.value.trim(), page: 1, page_size: 8 } });
      mount(found, r.items.length ? h("ul", { class: "plain found" }, r.items.map((s) => h("li", { class: "row" },
        h("span", {}, s.title || s.name), h("span", { class: "muted mono" }, s.slug),
        h("button", { type: "button", class: "secondary", "aria-label": `${t("agents.add")} ${s.title || s.name}`,
          disabled: chosen.has(s.slug), onclick: (e) => {
            chosen.set(s.slug, s.title || s.name);
            e.currentTarget.disabled = true;
            render();
          } }, t("agents.add"))))) : h("p", { class: "muted" }, t("results.none")));
    } catch (err) {
      mount(found, h("p", { class: "error", role: "alert" }, err.message));
    }
  }
  query.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); search(); } });
  render();
  return h("fieldset", { class: "picker" }, h("legend", {}, t("agents.servers")),
    list,
    h("label", { for: "server-q" }, t("agents.findServers")),
    h("div", { class: "row" }, query, h("button", { type: "button", onclick: search }, t("search.go"))),
    found);
}

// The create and edit form; `a` is the agent being edited, or null.
async function agentForm(a, onsave) {
  const chosen = new Map(refs(a || {}).map((r) => [r, r]));
  const options = await modelOptions(a?.model);
  const name = h("input", { id: "agent-name", required: true, maxlength: "100", autocomplete: "off", value: a?.name || "" });
  const description = h("input", { id: "agent-description", maxlength: "2000", autocomplete: "off", value: a?.description || "" });
  const model = h("select", { id: "agent-model", required: true }, options);
  const instructions = h("textarea", { id: "agent-instructions", rows: "3", maxlength: "20000" }, a?.instructions || "");
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "stack wide", onsubmit: async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), description: description.value.trim(), model: model.value,
      instructions: instructions.value, mcp_servers: [...chosen.keys()].map((ref) => ({ ref })) };
    try {
      await onsave(body);
    } catch (err) {
      mount(out, h("p", { class: "error", role: "alert" }, err.message));
    }
  } },
  h("label", { for: "agent-name" }, t("agents.name")), name,
  h("label", { for: "agent-description" }, t("agents.description")), description,
  h("label", { for: "agent-model" }, t("agents.model")),
  options.length ? model : h("p", { class: "error", role: "alert" }, t("agents.noModels")),
  h("label", { for: "agent-instructions" }, t("agents.instructions")), instructions,
  serverPicker(chosen),
  h("button", { type: "submit", disabled: !options.length }, a ? t("agents.save") : t("agents.create")), out);
  return form;
}

export async function newAgentPage(root, navigate) {
  if (!session.user) return signedOut(root);
  document.title = `${t("agents.new")} — WeMcp`;
  mount(root, h("p", {}, link("/agents", {}, `← ${t("agents.title")}`)), h("h1", {}, t("agents.new")),
    await agentForm(null, async (body) => {
      const a = await api("/api/v1/agents", { method: "POST", body });
      navigate(`/agents/${a.id}`);
    }));
}

export async function agentPage(root, id, navigate) {
  if (!session.user) return signedOut(root);
  let a;
  try {
    a = await api(`/api/v1/agents/${encodeURIComponent(id)}`);
  } catch (err) {
    const msg = err instanceof ApiError && [404, 422].includes(err.status) ? t("agents.notFound") : t("error", { m: err.message });
    mount(root, h("p", { class: "error", role: "alert" }, msg), link("/agents", {}, t("agents.title")));
    return;
  }
  document.title = `${a.name} — WeMcp`;
  const mine = a.owner_id === session.user.id || ["admin", "superadmin"].includes(session.user.role);
  const edit = h("div", {});
  const mcpUrl = `${location.origin}${a.mcp_url}`;
  mount(root,
    h("p", {}, link("/agents", {}, `← ${t("agents.title")}`)),
    h("section", { class: "agent-head" }, h("h1", {}, a.name),
      a.description ? h("p", {}, a.description) : null,
      h("p", { class: "meta" }, h("span", {}, `${t("agents.model")}: `, h("span", { class: "mono" }, a.model)),
        standInBadge(a.model)),
      refs(a).length ? h("p", { class: "meta" }, `${t("agents.servers")}: `,
        refs(a).map((r) => link(`/servers/${encodeURIComponent(r)}`, { class: "tag" }, r))) : null),
    h("div", { class: "agent-layout" },
      chat(a),
      h("aside", {},
        h("section", { class: "panel", "aria-labelledby": "mcp-h" }, h("h2", { id: "mcp-h" }, t("agents.mcp")),
          h("p", { class: "muted" }, t("agents.mcpAbout")),
          h("p", {}, h("code", { "data-testid": "agent-mcp-url", class: "url" }, mcpUrl)),
          connectSnippets(a, mcpUrl).map(([label, text]) => h("details", {}, h("summary", {}, label),
            h("pre", { class: "code", tabindex: "0" }, text)))),
        mine ? h("section", { class: "panel", "aria-labelledby": "manage-h" }, h("h2", { id: "manage-h" }, t("agents.manage")),
          h("details", { ontoggle: async (e) => {
            if (e.currentTarget.open && !edit.firstChild) {
              mount(edit, await agentForm(a, async (body) => {
                await api(`/api/v1/agents/${a.id}`, { method: "PATCH", body });
                await agentPage(root, id, navigate);
              }));
            }
          } }, h("summary", {}, t("agents.edit")), edit),
          deleteButton(a, navigate)) : null)));
}

function deleteButton(a, navigate) {
  const box = h("div", { class: "row" });
  const ask = h("button", { type: "button", class: "secondary danger", onclick: () => mount(box,
    h("span", { role: "status" }, t("agents.confirmDelete", { n: a.name })),
    h("button", { type: "button", class: "danger", onclick: async () => {
      await api(`/api/v1/agents/${a.id}`, { method: "DELETE" });
      navigate("/agents");
    } }, t("agents.deleteYes")),
    h("button", { type: "button", class: "secondary", onclick: () => mount(box, ask) }, t("agents.cancel"))) },
  t("agents.delete"));
  mount(box, ask);
  return box;
}

function connectSnippets(a, mcpUrl) {
  const auth = "Bearer ${WEMCP_API_KEY}";
  const label = a.name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "agent";
  const chatUrl = `${location.origin}/v1`;
  return [
    ["Claude Desktop / Cursor", JSON.stringify({ mcpServers: { [label]: { url: mcpUrl, headers: { Authorization: auth } } } }, null, 2)],
    ["Claude Code", `claude mcp add --transport http ${label} ${mcpUrl} --header "Authorization: ${auth}"`],
    ["Python (openai)", [
      "import os",
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url="${chatUrl}/agents/${a.id}", api_key=os.environ["WEMCP_API_KEY"])`,
      `r = client.chat.completions.create(model="${a.model}", messages=[{"role": "user", "content": "hi"}])`,
      "print(r.choices[0].message.content)",
    ].join("\n")],
  ];
}

// -- chat ---------------------------------------------------------------------------------------------
// The conversation stays in the page (no history is stored); each send streams one run.
function chat(a) {
  const history = [];
  const log = h("ol", { class: "chat-log" });
  const input = h("textarea", { id: "chat-input", rows: "2", required: true, maxlength: "20000", placeholder: t("agents.say") });
  const send = h("button", { type: "submit" }, t("agents.send"));
  const form = h("form", { class: "chat-form", onsubmit: async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    send.disabled = true;
    history.push({ role: "user", content: text });
    log.append(h("li", { class: "msg user" }, h("span", { class: "sr-only" }, `${t("agents.you")}: `), text));
    const steps = h("ol", { class: "steps tool-steps", "aria-label": t("agents.steps") });
    const answer = h("div", { class: "answer", "data-testid": "agent-answer" });
    const status = h("p", { class: "muted" }, t("agents.thinking"));
    const item = h("li", { class: "msg assistant" }, h("span", { class: "sr-only" }, `${a.name}: `), status, steps, answer);
    log.append(item);
    try {
      const reply = await run(a, history, {
        delta: (s) => { answer.textContent += s; },
        calls: (calls) => mount(steps, calls.map(step)),
      });
      history.push({ role: "assistant", content: reply });
      status.remove();
    } catch (err) {
      history.pop();
      mount(status, h("span", { class: "error", role: "alert" }, err.message));
      status.className = "";
    } finally {
      send.disabled = false;
      input.focus();
    }
  } },
  h("label", { for: "chat-input" }, t("agents.message")), input, send);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  return h("section", { class: "chat panel", "aria-labelledby": "chat-h" }, h("h2", { id: "chat-h" }, t("agents.chat")),
    isStandIn(a.model) ? h("p", { class: "muted" }, t("agents.standInAbout")) : null,
    h("div", { role: "log", "aria-live": "polite", "aria-label": t("agents.chat") }, log), form);
}

function step(c) {
  const ok = c.status === "ok";
  return h("li", { class: ok ? "step ok" : "step failed", "data-testid": "tool-step" },
    h("span", {}, t("agents.called"), " "), h("code", {}, `${c.server || c.ref}.${c.tool}`),
    h("code", { class: "args" }, JSON.stringify(c.arguments || {})),
    h("span", { class: "muted" }, ` ${t(ok ? "agents.stepOk" : "agents.stepFailed", { s: c.status })}`,
      c.latency_ms != null ? ` · ${Math.round(c.latency_ms)} ms` : ""),
    c.output ? h("pre", { class: "code out", tabindex: "0" }, c.output) : null);
}

// One streamed run: content deltas as they come, the MCP calls from the chunk that finishes the run.
async function run(a, messages, on) {
  const body = JSON.stringify({ model: a.model, messages, stream: true });
  const post = () => fetch(`/v1/agents/${a.id}/chat/completions`, { method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json", accept: "text/event-stream", ...authHeaders() }, body });
  let r = await post();
  if (r.status === 401 && (await refresh())) r = await post();
  if (!r.ok) {
    const type = r.headers.get("content-type") || "";
    const problem = type.includes("json") ? await r.json() : { detail: await r.text() };
    throw new ApiError(r.status, problem);
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let reply = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return reply;
        const chunk = JSON.parse(data);
        if (chunk.error) {
          if (chunk.mcp_calls) on.calls(chunk.mcp_calls);
          throw new ApiError(chunk.error.status || 500, { detail: chunk.error.message });
        }
        for (const choice of chunk.choices || []) {
          const piece = choice.delta?.content;
          if (piece) { reply += piece; on.delta(piece); }
          if (choice.finish_reason && chunk.mcp_calls) on.calls(chunk.mcp_calls);
        }
        if (!chunk.choices?.length && chunk.mcp_calls) on.calls(chunk.mcp_calls);
      }
    }
  }
  return reply;
}
