#!/usr/bin/env node
// stdio -> Streamable HTTP bridge shipped inside cloud code zips of npm servers (Node core only).
// Same contract as wemcp_bridge.py: node wemcp_bridge.js --port 8080 -- <server command...>
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

class Child {
  constructor() {
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "inherit"], detached: true });
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
  if (req.method === "GET") return path === "/healthz" ? reply(res, 200, { ok: true, sessions: sessions.size })
    : reply(res, 405, { error: "use POST /mcp" }, { Allow: "POST, DELETE" });
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
    const batch = Array.isArray(payload) ? payload : [payload];
    let id = sid; const headers = {};
    if (!id && batch.some((m) => m && m.method === "initialize")) {
      id = crypto.randomUUID().replace(/-/g, ""); sessions.set(id, new Child()); headers["Mcp-Session-Id"] = id;
    }
    const child = sessions.get(id || "");
    if (!child) return reply(res, id ? 404 : 400,
      { jsonrpc: "2.0", id: null, error: { code: -32600, message: "unknown or missing session" } });
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
