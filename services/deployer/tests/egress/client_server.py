"""A hosted stdio MCP server that uses the network (tests of the egress proxy): its one tool, ``get``,
fetches a URL with a real client library (``urllib``, ``httpx``, ``requests`` — the last two when
installed) as a server would, through whatever HTTP(S)_PROXY the platform set; ``connect`` tries a
direct TCP connection; ``env`` shows the proxy variables. Answers are plain text the tests judge."""

import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable


def get(lib: str, url: str, ca: str) -> str:
    try:
        if lib == "urllib":
            ctx = ssl.create_default_context(cafile=ca or None)
            try:
                with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
                    return f"{r.status} {r.read().decode()}"
            except urllib.error.HTTPError as exc:
                return f"{exc.code} {exc.read().decode().strip()}"
        if lib == "httpx":
            import httpx

            r = httpx.get(url, timeout=10, verify=ssl.create_default_context(cafile=ca) if ca else True)
            return f"{r.status_code} {r.text.strip()}"
        if lib == "requests":
            import requests

            r = requests.get(url, timeout=10, verify=ca or True)
            return f"{r.status_code} {r.text.strip()}"
    except Exception as exc:  # the test reads what happened
        return f"ERROR {type(exc).__name__}: {exc}"
    return "unknown lib"


def connect(host: str, port: int) -> str:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "CONNECTED"
    except OSError as exc:
        return f"DENIED {type(exc).__name__}: {exc}"
    finally:
        s.close()


def call(args: dict) -> str:
    if args["kind"] == "get":
        return get(args["lib"], args["url"], args.get("ca", ""))
    if args["kind"] == "connect":
        return connect(args["host"], int(args["port"]))
    if args["kind"] == "env":
        return json.dumps({k: v for k, v in os.environ.items() if "proxy" in k.lower()})
    return "unknown kind"


def serve(name: str, tool: Callable[[dict], str], tools: list[dict] | None = None) -> None:
    """MCP over stdio, one JSON-RPC message a line: ``initialize``, ``tools/list`` (when ``tools`` are
    given), ``tools/call`` (its arguments go to ``tool``, whose text is the answer), ``{}`` to anything
    else. tests/security/sandbox_attacker.py serves its tool with it (this file shipped beside it)."""
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" not in msg:
            continue
        if msg.get("method") == "initialize":
            result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                      "serverInfo": {"name": name, "version": "1"}}
        elif msg.get("method") == "tools/list" and tools is not None:
            result = {"tools": tools}
        elif msg.get("method") == "tools/call":
            result = {"content": [{"type": "text", "text": tool(msg["params"]["arguments"])}]}
        else:
            result = {}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve("egress-client", call, [{"name": "net", "inputSchema": {"type": "object"}}])
