#!/usr/bin/env node
// stdio -> Streamable HTTP bridge shipped inside cloud code zips of npm servers (Node core only).
// Same contract as wemcp_bridge.py: node wemcp_bridge.js --port 8080 -- <server command...>
// Only the platform may call: X-WeMcp-Assertion signed with the keys derived for this slug
// (WEMCP_BRIDGE_KEYS "kid:hex,...", WEMCP_BRIDGE_AUDIENCE "bridge:<slug>"); without them only /healthz answers.
// The server's keys arrive per call as X-WeMcp-Env-<NAME> headers, for the names WEMCP_BRIDGE_ENV lists
// (names only; others: 400); a session's child starts with exactly those values (and {NAME} placeholders
// of its arguments filled); a later request of the session with other values gets 400. The child never
// sees WEMCP_BRIDGE_* (the key) nor credentials a cloud runtime injects (ALIBABA_CLOUD_*, TENCENTCLOUD_*).
"use strict";
const http = require("http");
const { spawn } = require("child_process");
const crypto = require("crypto");

const args = process.argv.slice(2);
const cut = args.indexOf("--");
if (cut < 0) { console.error("usage: wemcp_bridge.js [--port N] -- <server command...>"); process.exit(2); }
const opts = { port: Number(process.env.WEMCP_BRIDGE_PORT || 8080), host: "0.0.0.0", timeout: 120, idle: 900 };
for (let i = 0; i < cut; i += 2) opts[args[i].replace(/^--/, "")] = args[i + 1];
const argv = args.slice(cut + 1);
const sessions = new Map();
const bridgeKeys = new Map((process.env.WEMCP_BRIDGE_KEYS || "").split(",").filter((e) => e.includes(":"))
  .map((e) => { const i = e.indexOf(":"); return [e.slice(0, i).trim(), Buffer.from(e.slice(i + 1).trim(), "hex")]; }));
const audience = process.env.WEMCP_BRIDGE_AUDIENCE || "";
const accepted = new Set((process.env.WEMCP_BRIDGE_ENV || "").split(",").map((n) => n.trim()).filter(Boolean));
const PRIVATE_ENV = ["WEMCP_BRIDGE_", "ALIBABA_CLOUD_", "TENCENTCLOUD_"];

// the caller's values (X-WeMcp-Env-<NAME>); throws naming an undeclared one
function callValues(req) {
  const values = Object.create(null);
  for (const [k, v] of Object.entries(req.headers)) {
    if (!k.startsWith("x-wemcp-env-")) continue;
    const name = k.slice(12).toUpperCase().replace(/-/g, "_");
    if (!accepted.has(name)) throw new Error(`${name} is not a variable this server declares`);
    values[name] = Array.isArray(v) ? v[0] : v;
  }
  return values;
}
const credentialKey = (values) => crypto.createHash("sha256")
  .update(JSON.stringify(Object.keys(values).sort().map((k) => [k, values[k]]))).digest("hex");

// null when the request may go on, else why not (the format of wemcp.common.trust)
function refusal(token) {
  if (!bridgeKeys.size || !audience) return "this bridge has no keys (WEMCP_BRIDGE_KEYS): it answers nobody";
  if (!token) return "service assertion missing";
  const parts = token.split(".");
  if (parts.length !== 4 || parts[0] !== "v1" || !bridgeKeys.has(parts[1])) return "malformed service assertion or unknown key";
  const good = crypto.createHmac("sha256", bridgeKeys.get(parts[1])).update(token.slice(0, token.lastIndexOf("."))).digest();
  const mac = Buffer.from(parts[3], "base64url");
  if (mac.length !== good.length || !crypto.timingSafeEqual(mac, good)) return "bad service assertion signature";
  let claims; try { claims = JSON.parse(Buffer.from(parts[2], "base64url").toString("utf8")); } catch { return "malformed service assertion"; }
  const now = Date.now() / 1000;
  if (!claims || !Number.isInteger(claims.iat) || !Number.isInteger(claims.exp) || claims.exp - claims.iat <= 0
      || claims.exp - claims.iat > 120) return "service assertion lifetime out of bounds";
  if (claims.iat > now + 10 || claims.exp + 10 <= now) return "service assertion expired or not yet valid";
  if (claims.aud !== audience) return "service assertion is for another server";
  return null;
}

class Child {
  constructor(values) {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!PRIVATE_ENV.some((p) => k.toUpperCase().startsWith(p))) env[k] = v;
    Object.assign(env, values);
    const args = argv.map((a) => a.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (m, n) => (Object.prototype.hasOwnProperty.call(values, n) ? values[n] : m)));
    this.key = credentialKey(values);
    this.proc = spawn(args[0], args.slice(1), { stdio: ["pipe", "pipe", "inherit"], detached: true, env });
    this.waiting = new Map();
    this.lastUsed = Date.now();
    this.buf = "";
    this.proc.stdout.on("data", (d) => {
      this.buf += d.toString("utf8");
      let nl;
      while ((nl = this.buf.indexOf("\n")) >= 0) {
        const line = this.buf.slice(0, nl); this.buf = this.buf.slice(nl + 1);
        let msg; try { msg = JSON.parse(line); } catch { continue; }
        if (!msg || typeof msg !== "object") continue;
        if (msg.method !== undefined && msg.id !== undefined) {
          this.send({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "not supported by this host" } });
        } else if (msg.id !== undefined) {
          const w = this.waiting.get(JSON.stringify(msg.id));
          if (w) { this.waiting.delete(JSON.stringify(msg.id)); w(msg); }
        }
      }
    });
    this.proc.on("exit", () => { for (const w of this.waiting.values()) w(null); this.waiting.clear(); this.exited = true; });
  }
  send(msg) { this.proc.stdin.write(JSON.stringify(msg) + "\n"); }
  call(msg) {
    this.lastUsed = Date.now();
    if (msg.id === undefined || msg.method === undefined) { this.send(msg); return Promise.resolve(null); }
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(null), Number(opts.timeout) * 1000);
      const finish = (answer) => {
        clearTimeout(timer); this.waiting.delete(JSON.stringify(msg.id)); this.lastUsed = Date.now();
        resolve(answer || { jsonrpc: "2.0", id: msg.id, error: { code: -32603,
          message: this.exited ? "the server exited" : "the server did not answer in time" } });
      };
      this.waiting.set(JSON.stringify(msg.id), finish);
      this.send(msg);
    });
  }
  kill() { try { process.kill(-this.proc.pid, "SIGKILL"); } catch {} }
}

function reply(res, status, body, headers) {
  const data = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, { ...(headers || {}), ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    "Content-Length": Buffer.byteLength(data) });
  res.end(data);
}

const server = http.createServer((req, res) => {
  const path = req.url.split("?")[0];
  if (req.method === "GET" && path === "/healthz") return reply(res, 200, { ok: true, sessions: sessions.size });
  const why = refusal(req.headers["x-wemcp-assertion"]);
  if (why) { req.resume(); return reply(res, 401, { error: why }); }
  if (req.method === "GET") return reply(res, 405, { error: "use POST /mcp" }, { Allow: "POST, DELETE" });
  const sid = req.headers["mcp-session-id"];
  if (req.method === "DELETE") {
    const c = sessions.get(sid || ""); if (c) { sessions.delete(sid); c.kill(); }
    return reply(res, c ? 200 : 404);
  }
  if (req.method !== "POST" || !["/mcp", "/mcp/", "/"].includes(path))
    return reply(res, 404, { error: "not found" });
  let body = "";
  req.on("data", (d) => { body += d; });
  req.on("end", async () => {
    let payload; try { payload = JSON.parse(body); } catch {
      return reply(res, 400, { jsonrpc: "2.0", id: null, error: { code: -32700, message: "parse error" } }); }
    let values; try { values = callValues(req); } catch (e) {
      return reply(res, 400, { jsonrpc: "2.0", id: null, error: { code: -32600, message: e.message } }); }
    const batch = Array.isArray(payload) ? payload : [payload];
    let id = sid; const headers = {};
    if (!id && batch.some((m) => m && m.method === "initialize")) {
      id = crypto.randomUUID().replace(/-/g, ""); sessions.set(id, new Child(values)); headers["Mcp-Session-Id"] = id;
    }
    const child = sessions.get(id || "");
    if (!child) return reply(res, id ? 404 : 400,
      { jsonrpc: "2.0", id: null, error: { code: -32600, message: "unknown or missing session" } });
    if (Object.keys(values).length && credentialKey(values) !== child.key) return reply(res, 400,
      { jsonrpc: "2.0", id: null, error: { code: -32600, message: "credentials differ from the session's" } });
    const answers = (await Promise.all(batch.filter((m) => m && typeof m === "object").map((m) => child.call(m))))
      .filter(Boolean);
    if (!answers.length) return reply(res, 202, undefined, headers);
    reply(res, 200, Array.isArray(payload) ? answers : answers[0], headers);
  });
});

setInterval(() => {
  const now = Date.now();
  for (const [k, c] of sessions) if (now - c.lastUsed > Number(opts.idle) * 1000) { sessions.delete(k); c.kill(); }
}, Math.max(1000, Number(opts.idle) * 250)).unref();
const stop = () => { for (const c of sessions.values()) c.kill(); process.exit(0); };
process.on("SIGTERM", stop); process.on("SIGINT", stop);
server.listen(Number(opts.port), opts.host, () => console.error(`wemcp-bridge: listening on ${opts.host}:${server.address().port}`));
