#!/usr/bin/env python3
"""stdio -> Streamable HTTP bridge shipped inside cloud code zips (standard library only).

Usage: python3 wemcp_bridge.py --port 8080 -- <server command...>

``POST /mcp``: JSON-RPC message(s) from the client. An ``initialize`` without a session starts a
child (one per session, so sessions never share state) and answers with ``Mcp-Session-Id``; later
requests carry that header. Requests are answered with ``application/json``; notifications and
responses get 202. Requests the child sends to the client (sampling, roots...) are answered
"not supported"; its notifications are dropped. ``DELETE /mcp`` ends the session and kills its
child. ``GET /healthz`` for platform probes. Children idle longer than ``--idle`` seconds are
stopped.

The server's keys arrive with the calls, never with the function: the gateway sends the caller's
values for the variables the server declares as ``X-WeMcp-Env-<NAME>`` headers (from the vault, the
request or the platform's system key), and the child of a session is started with exactly those
values in its environment (and ``{NAME}`` placeholders of its arguments filled with them). Which
names a call may set is ``WEMCP_BRIDGE_ENV`` (``NAME,NAME``; names only, no values); any other
``X-WeMcp-Env-*`` is refused with 400. A session keeps the values it started with: a later request
of the session with other values is refused (400), so two callers never share a child. The child's
environment never holds the bridge's own settings (``WEMCP_BRIDGE_*``: its key) nor credentials a
cloud runtime may inject (``ALIBABA_CLOUD_*``, ``TENCENTCLOUD_*``).

Only the platform may call: every request but ``/healthz`` carries ``X-WeMcp-Assertion``, the
gateway's assertion signed with a key derived for this server's slug (``WEMCP_BRIDGE_KEYS``:
``kid:hex,...``, ``WEMCP_BRIDGE_AUDIENCE``: ``bridge:<slug>``; wemcp.common.trust). The function never
holds the platform's keys, so the code it runs can at most call itself. Without those settings it
answers nothing but ``/healthz`` (fails closed).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_LIFETIME, LEEWAY = 120, 10  # as wemcp.common.trust
ENV_HEADER = "x-wemcp-env-"
# never handed to the server: the bridge's own settings (its key) and what a cloud runtime injects
PRIVATE_ENV = ("WEMCP_BRIDGE_", "ALIBABA_CLOUD_", "TENCENTCLOUD_")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def child_env(values: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(PRIVATE_ENV)}
    env.update(values)
    return env


def credential_key(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(values.items())).encode()).hexdigest()


class Guard:
    """Checks the platform's assertion (the format of wemcp.common.trust, standard library only)."""

    def __init__(self, keys: str, audience: str) -> None:
        self.keys = {kid: bytes.fromhex(h) for kid, _, h in (e.strip().partition(":") for e in keys.split(",")
                                                            if e.strip())}
        self.audience = audience

    def refusal(self, token: str | None) -> str | None:
        """None when the request may go on, else why not."""
        if not self.keys or not self.audience:
            return "this bridge has no keys (WEMCP_BRIDGE_KEYS): it answers nobody"
        if not token:
            return "service assertion missing"
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "v1" or parts[1] not in self.keys:
            return "malformed service assertion or unknown key"
        try:
            mac = base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4))
            claims = json.loads(base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4)))
        except ValueError:
            return "malformed service assertion"
        good = hmac.new(self.keys[parts[1]], token[:token.rfind(".")].encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, good) or not isinstance(claims, dict):
            return "bad service assertion signature"
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if not isinstance(iat, int) or not isinstance(exp, int) or not 0 < exp - iat <= MAX_LIFETIME:
            return "service assertion lifetime out of bounds"
        if iat > now + LEEWAY or exp + LEEWAY <= now:
            return "service assertion expired or not yet valid"
        if claims.get("aud") != self.audience:
            return "service assertion is for another server"
        return None


class Child:
    def __init__(self, argv: list[str], values: dict[str, str]) -> None:
        argv = [_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), a) for a in argv]
        self.key = credential_key(values)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                                     start_new_session=True, env=child_env(values))
        self.lock = threading.Lock()
        self.waiting: dict[str, tuple[threading.Event, list]] = {}
        self.last_used = time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if "method" in msg and "id" in msg:  # a request to the client: not routed
                self.send({"jsonrpc": "2.0", "id": msg["id"],
                           "error": {"code": -32601, "message": "not supported by this host"}})
                continue
            if "id" in msg:
                slot = self.waiting.pop(json.dumps(msg["id"]), None)
                if slot is not None:
                    slot[1].append(msg)
                    slot[0].set()
        for event, _ in list(self.waiting.values()):
            event.set()

    def send(self, msg: dict) -> None:
        assert self.proc.stdin is not None
        with self.lock:
            self.proc.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
            self.proc.stdin.flush()

    def call(self, msg: dict, timeout: float) -> dict | None:
        self.last_used = time.monotonic()
        if "id" not in msg or "method" not in msg:
            self.send(msg)
            return None
        event = threading.Event()
        box: list[dict] = []
        self.waiting[json.dumps(msg["id"])] = (event, box)
        self.send(msg)
        event.wait(timeout)
        self.last_used = time.monotonic()
        if box:
            return box[0]
        return {"jsonrpc": "2.0", "id": msg["id"],
                "error": {"code": -32603, "message": "the server exited" if self.proc.poll() is not None
                          else f"the server did not answer within {timeout:g} s"}}

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()


class Bridge:
    def __init__(self, argv: list[str], timeout: float, idle: float, guard: Guard,
                 accepted: frozenset[str] = frozenset()) -> None:
        self.argv, self.timeout, self.idle = argv, timeout, idle
        self.guard = guard
        self.accepted = accepted  # the variables a call may set (X-WeMcp-Env-<NAME>)
        self.sessions: dict[str, Child] = {}
        self.lock = threading.Lock()

    def reap(self) -> None:
        while True:
            time.sleep(max(1.0, self.idle / 4))
            now = time.monotonic()
            with self.lock:
                stale = [k for k, c in self.sessions.items() if now - c.last_used > self.idle]
                children = [self.sessions.pop(k) for k in stale]
            for c in children:
                c.kill()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client hung up: not an error
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def make_handler(bridge: Bridge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:
            sys.stderr.write("wemcp-bridge: " + fmt % args + "\n")

        def _reply(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refused(self) -> bool:
            why = bridge.guard.refusal(self.headers.get("X-WeMcp-Assertion"))
            if why is not None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)  # keep the connection usable
                self._reply(401, {"error": why})
            return why is not None

        def _values(self) -> dict[str, str]:
            """The caller's values (``X-WeMcp-Env-<NAME>``); ValueError names an undeclared one."""
            values: dict[str, str] = {}
            for k, v in self.headers.items():
                if k.lower().startswith(ENV_HEADER):
                    name = k[len(ENV_HEADER):].upper().replace("-", "_")
                    if name not in bridge.accepted:
                        raise ValueError(f"{name} is not a variable this server declares")
                    values[name] = v
            return values

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                self._reply(200, {"ok": True, "sessions": len(bridge.sessions)})
            elif not self._refused():
                self._reply(405, {"error": "use POST /mcp"}, {"Allow": "POST, DELETE"})

        def do_DELETE(self) -> None:
            if self._refused():
                return
            sid = self.headers.get("Mcp-Session-Id", "")
            with bridge.lock:
                child = bridge.sessions.pop(sid, None)
            if child is not None:
                child.kill()
            self._reply(200 if child else 404)

        def do_POST(self) -> None:
            if self._refused():
                return
            if self.path.split("?")[0].rstrip("/") not in ("/mcp", ""):
                self._reply(404, {"error": "not found"})
                return
            try:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            except ValueError:
                self._reply(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
                return
            try:
                values = self._values()
            except ValueError as exc:
                self._reply(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": str(exc)}})
                return
            batch = payload if isinstance(payload, list) else [payload]
            sid = self.headers.get("Mcp-Session-Id")
            headers: dict[str, str] = {}
            if any(isinstance(m, dict) and m.get("method") == "initialize" for m in batch) and not sid:
                sid = uuid.uuid4().hex
                with bridge.lock:
                    bridge.sessions[sid] = Child(bridge.argv, values)
                headers["Mcp-Session-Id"] = sid
            with bridge.lock:
                child = bridge.sessions.get(sid or "")
            if child is None:
                self._reply(404 if sid else 400, {"jsonrpc": "2.0", "id": None,
                                                  "error": {"code": -32600, "message": "unknown or missing session"}})
                return
            if values and credential_key(values) != child.key:
                self._reply(400, {"jsonrpc": "2.0", "id": None,
                                  "error": {"code": -32600, "message": "credentials differ from the session's"}})
                return
            answers = [a for a in (child.call(m, bridge.timeout) for m in batch if isinstance(m, dict)) if a]
            if not answers:
                self._reply(202, None, headers)
            else:
                self._reply(200, answers if isinstance(payload, list) else answers[0], headers)

    return Handler


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        sys.exit("usage: wemcp_bridge.py [--port N] [--host H] -- <server command...>")
    cut = args.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=int(os.environ.get("WEMCP_BRIDGE_PORT") or 8080))
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--idle", type=float, default=900.0)
    opts = p.parse_args(args[:cut])
    guard = Guard(os.environ.get("WEMCP_BRIDGE_KEYS", ""), os.environ.get("WEMCP_BRIDGE_AUDIENCE", ""))
    accepted = frozenset(n.strip() for n in os.environ.get("WEMCP_BRIDGE_ENV", "").split(",") if n.strip())
    bridge = Bridge(args[cut + 1:], opts.timeout, opts.idle, guard, accepted)
    threading.Thread(target=bridge.reap, daemon=True).start()
    server = _Server((opts.host, opts.port), make_handler(bridge))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.stderr.write(f"wemcp-bridge: listening on {opts.host}:{server.server_address[1]}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for child in list(bridge.sessions.values()):
            child.kill()


if __name__ == "__main__":
    main()
