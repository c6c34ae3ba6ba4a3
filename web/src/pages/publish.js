// Publish: paste a Claude Desktop config, a server.json or an OpenAPI document (the inputs it needs
// are shown before submitting), or upload a source archive; then follow the deployment live (the
// deployer's event stream) and see my servers with their status.
import { api, authHeaders, session } from "../api.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";

const SECRET = /KEY|TOKEN|SECRET|PASSWORD|PASS|CREDENTIAL/i;

// What a pasted document asks for, read in the page (the catalog decides for real on submit).
export function detect(doc) {
  if (doc && typeof doc === "object" && doc.mcpServers && typeof doc.mcpServers === "object") {
    return Object.entries(doc.mcpServers).map(([name, e]) => ({
      kind: "mcpServers", name, run: [e.command, ...(e.args || [])].filter(Boolean).join(" ") || e.url || "",
      inputs: Object.keys(e.env || {}).map((k) => ({ name: k, secret: SECRET.test(k) })),
    }));
  }
  if (doc && typeof doc === "object" && (doc.packages || doc.remotes)) {
    const pkg = (doc.packages || [])[0];
    const vars = (pkg && pkg.environmentVariables) || [];
    return [{ kind: "server.json", name: doc.name || "", run: pkg ? `${pkg.registryType} ${pkg.identifier}${pkg.version ? `@${pkg.version}` : ""}`
      : ((doc.remotes || [])[0] || {}).url || "",
    inputs: vars.map((v) => ({ name: v.name, secret: !!v.isSecret })) }];
  }
  if (doc && typeof doc === "object" && doc.openapi) {
    const schemes = Object.keys((doc.components && doc.components.securitySchemes) || {});
    return [{ kind: "OpenAPI", name: (doc.info && doc.info.title) || "", run: ((doc.servers || [])[0] || {}).url || "",
      inputs: schemes.map((s) => ({ name: s, secret: true })) }];
  }
  return null;
}

export async function publishPage(root) {
  if (!session.user) {
    mount(root, h("p", {}, t("account.signedOut"), " ", link("/signin", {}, t("nav.signin"))));
    return;
  }
  const preview = h("div", { "aria-live": "polite" });
  const progress = h("div", { "aria-live": "polite" });
  const mine = h("div", {});
  const text = h("textarea", { id: "doc", rows: "10", class: "mono", spellcheck: "false",
    placeholder: '{"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}' });
  let parsed = null;
  text.addEventListener("input", () => {
    parsed = null;
    if (!text.value.trim()) return mount(preview);
    try {
      parsed = JSON.parse(text.value);
    } catch (err) {
      return mount(preview, h("p", { class: "error" }, t("publish.notJson", { m: err.message })));
    }
    const found = detect(parsed);
    if (!found) return mount(preview, h("p", { class: "error" }, t("publish.unknown")));
    mount(preview, h("h3", {}, t("publish.detected")), h("ul", { class: "plain" }, found.map((d) => h("li", {},
      h("strong", {}, `${d.kind}: ${d.name}`), " ", h("code", {}, d.run),
      d.inputs.length ? h("ul", {}, d.inputs.map((i) => h("li", {}, h("code", {}, i.name), " ",
        h("span", { class: "tag" }, i.secret ? t("secret") : t("publish.setting")))))
        : h("p", { class: "muted" }, t("publish.noInputs"))))));
  });
  const pasteForm = h("form", { class: "stack wide", onsubmit: async (e) => {
    e.preventDefault();
    if (!parsed) return mount(preview, h("p", { class: "error", role: "alert" }, t("publish.unknown")));
    await submitted(() => api("/api/v1/servers", { method: "POST", body: parsed }));
  } }, h("label", { for: "doc" }, t("publish.paste")), text, preview, h("button", { type: "submit" }, t("publish.submit")));

  const manifest = h("textarea", { id: "manifest", rows: "4", class: "mono", spellcheck: "false",
    placeholder: '{"name": "my-server", "version": "1.0.0", "runtime": "python", "entrypoint": "server.py"}' });
  const file = h("input", { id: "archive", type: "file", accept: ".tar.gz,.tgz,.zip" });
  const archiveForm = h("form", { class: "stack wide", onsubmit: async (e) => {
    e.preventDefault();
    const form = new FormData();
    form.append("manifest", manifest.value);
    if (file.files[0]) form.append("archive", file.files[0]);
    await submitted(async () => {
      const r = await fetch("/api/v1/servers/archive", { method: "POST", body: form, headers: authHeaders() });
      const body = await r.json();
      if (!r.ok) throw new Error(body.detail || body.title);
      return body;
    });
  } }, h("label", { for: "manifest" }, t("publish.manifest")), manifest,
  h("label", { for: "archive" }, t("publish.archive")), file, h("button", { type: "submit" }, t("publish.upload")));

  async function submitted(send) {
    mount(progress, h("p", { class: "muted" }, t("loading")));
    try {
      const r = await send();
      await loadMine();
      if (r.status === "pending_review") {
        mount(progress, h("p", { role: "status" }, t("publish.review", { s: r.slug })));
      } else {
        await follow(r.slug);
      }
    } catch (err) {
      mount(progress, h("p", { class: "error", role: "alert" }, err.message));
    }
  }

  async function follow(slug) {
    const steps = h("ol", { class: "steps" });
    const logs = h("pre", { class: "code log", tabindex: "0" });
    const final = h("div", { role: "status" });
    mount(progress, h("h2", { id: "progress-h" }, t("publish.progress", { s: slug })), steps, logs, final);
    // the deployer knows the server once it took the submission (the catalog then says "deploying")
    for (let i = 0; i < 120; i++) {
      const row = (await api("/api/v1/me/servers?page_size=100")).items.find((x) => x.slug === slug);
      if (row && row.status !== "submitted") break;
      await new Promise((done) => setTimeout(done, 500));
    }
    await stream(`/api/v1/deployments/${encodeURIComponent(slug)}/events`, (event, data) => {
      if (event === "step") steps.append(h("li", {}, data.step, data.detail ? ` — ${data.detail}` : ""));
      else if (event === "log") logs.append(`${data.line}\n`);
      else if (event === "done") {
        mount(final, h("p", { class: data.status === "deployed" ? "" : "error" }, t(`publish.done.${data.status}`, { r: data.reason || "" })),
          data.status === "deployed" ? link(`/servers/${encodeURIComponent(slug)}`, {}, t("publish.open")) : null);
      }
    });
    await loadMine();
  }

  async function loadMine() {
    const page = await api("/api/v1/me/servers?page_size=50");
    mount(mine, page.items.length ? h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, [t("publish.name"), t("server.version"), t("server.status"), ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, page.items.map((s) => h("tr", {},
        h("td", {}, link(`/servers/${encodeURIComponent(s.slug)}`, {}, s.title || s.name)),
        h("td", { class: "mono" }, s.version || ""),
        h("td", {}, t(`status.${s.status}`), s.review_reason || s.status_detail ? h("div", { class: "muted" }, s.review_reason || s.status_detail) : null),
        h("td", {}, ["submitted", "deploying"].includes(s.status)
          ? h("button", { type: "button", class: "secondary", onclick: () => follow(s.slug) }, t("publish.watch")) : null,
        manage(s))))))
      : h("p", { class: "muted" }, t("publish.none")), mineOut);
  }

  // Edit a server's presentation (PATCH /api/v1/servers/{slug}) or withdraw it (it stops being
  // listed and called; an admin can enable it again). The catalog checks ownership on each call.
  const mineOut = h("div", { "aria-live": "polite" });
  function manage(s) {
    const id = `edit-${s.slug}`;
    const title = h("input", { id: `${id}-title`, required: true, maxlength: "100", value: s.title || s.name });
    const description = h("textarea", { id: `${id}-desc`, rows: "3", maxlength: "2000" });
    const save = h("button", { type: "submit", disabled: true }, t("publish.save"));
    const say = (msg, bad) => mount(mineOut, h("p", bad ? { class: "error", role: "alert" } : { role: "status" }, msg));
    const edit = h("form", { class: "stack", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api(`/api/v1/servers/${encodeURIComponent(s.slug)}`, { method: "PATCH",
          body: { title: title.value.trim(), description: description.value.trim() } });
        await loadMine();
        say(t("publish.saved", { s: s.slug }));
      } catch (err) {
        say(err.message, true);
      }
    } }, h("label", { for: `${id}-title` }, t("publish.titleField")), title,
    h("label", { for: `${id}-desc` }, t("publish.description")), description,
    save);
    // the list has no description: the form starts from the server's own, so saving keeps what it does not change
    const opened = async (e) => {
      if (!e.target.open || !save.disabled) return;
      try {
        const d = await api(`/api/v1/servers/${encodeURIComponent(s.slug)}`);
        title.value = d.title || d.name;
        description.value = d.description || "";
        save.disabled = false;
      } catch (err) {
        say(err.message, true);
      }
    };
    return [h("details", { ontoggle: opened }, h("summary", {}, t("publish.edit"), h("span", { class: "sr-only" }, ` ${s.slug}`)), edit),
      s.status === "disabled" ? null : h("button", { type: "button", class: "secondary",
        "aria-label": `${t("publish.withdraw")} ${s.slug}`, onclick: async () => {
          if (!window.confirm(t("publish.withdrawConfirm", { s: s.title || s.name }))) return;
          try {
            await api(`/api/v1/servers/${encodeURIComponent(s.slug)}/withdraw`, { method: "POST" });
            await loadMine();
            say(t("publish.withdrawn", { s: s.slug }));
          } catch (err) {
            say(err.message, true);
          }
        } }, t("publish.withdraw"))];
  }

  mount(root, h("h1", {}, t("publish.title")), h("p", { class: "muted" }, t("publish.about")),
    pasteForm, h("details", {}, h("summary", {}, t("publish.orArchive")), archiveForm), progress,
    h("section", { "aria-labelledby": "mine-h" }, h("h2", { id: "mine-h" }, t("publish.mine")), mine));
  await loadMine();
}

// Server-sent events over fetch (EventSource cannot send the Authorization header).
async function stream(path, onEvent) {
  const r = await fetch(path, { headers: { accept: "text/event-stream", ...authHeaders() } });
  if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
      if (event === "done") {
        reader.cancel();
        return;
      }
    }
  }
}
