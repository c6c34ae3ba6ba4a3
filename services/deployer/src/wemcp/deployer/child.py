"""One stdio MCP server process and the thin JSON-RPC plumbing around it.

The bridge reads only what it must from each line: ``id``, ``method`` and a progress token. It
performs the initialize handshake itself once per process, with the client capabilities the child
was started for (so many client sessions reuse one warm child), and rewrites request ids (and
progress tokens) so clients never collide.

What the server says on its own — its requests (sampling, elicitation, roots) and notifications
(progress, logging, ...) — goes to the call it belongs to (see :meth:`StdioChild.owner_of`): a call
whose caller listens (``forward(..., side=queue)``) gets it on its queue. A request nobody can be
asked is answered with an error, as before; a notification nobody listens to is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from wemcp.common.logging import get_logger, redact_text
from wemcp.deployer import sandbox

if TYPE_CHECKING:
    from wemcp.deployer.egress import EgressProxy

log = get_logger("wemcp.deployer.child")
HANDSHAKE_VERSION = "2025-11-25"
MAX_LINE = 16 * 1024 * 1024


class ChildError(sandbox.Failed):
    """The server process failed; ``str()`` is user-actionable, ``tail`` the redacted output."""


@dataclass
class Command:
    argv: list[str]
    root: Path  # read-only code root
    env: dict[str, str]


@dataclass(frozen=True)
class EgressHook:
    """Network for this child: the proxy that serves it (attributed to ``slug``), the interpreter of
    the launcher and Node's preload (see wemcp.deployer.egress)."""

    proxy: EgressProxy
    slug: str
    python: str
    node_preload: str


@dataclass
class Call:
    """A client request in flight on the child: where the server's messages about it go (``side``,
    None: the caller takes only the reply), the caller's session, and its own progress token."""

    side: Any  # an asyncio.Queue, or anything with put_nowait (the bridge's 2026-07-28 calls)
    session: str | None
    progress_token: Any = None
    client_id: Any = None  # the caller's own id of the request (whose notifications/cancelled names it)


# Notifications about the server's state rather than a call: they go to sessions' GET streams.
OUTSIDE_CALLS = frozenset({"notifications/resources/updated", "notifications/resources/list_changed",
                           "notifications/tools/list_changed", "notifications/prompts/list_changed"})


class StdioChild:
    # where notifications outside any call go (``OUTSIDE_CALLS``; set by the bridge), None: dropped
    outside: Callable[[dict[str, Any]], None] | None = None

    def __init__(self, command: Command, *, caps: sandbox.Capabilities, limits: sandbox.Limits, uid: int | None,
                 run_dir: Path, secrets: list[str] | None = None, start_timeout: float = 60.0,
                 egress: EgressHook | None = None, client_caps: dict[str, Any] | None = None) -> None:
        self.command = command
        self.caps = caps
        self.limits = limits
        self.uid = uid
        self.run_dir = run_dir
        self.secrets = [s for s in (secrets or []) if len(s) >= 4]
        self.start_timeout = start_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.init_result: dict[str, Any] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._write_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_used = time.monotonic()
        self.started_at = 0.0
        self.in_flight = 0
        self.exited = asyncio.Event()
        self.egress = egress
        self._egress_handle: int | None = None
        self.client_caps = client_caps or {}  # declared in the child's initialize: what it may ask
        self.calls: dict[int, Call] = {}
        self.asked: dict[Any, Call] = {}  # the server's own requests, by its id: who was asked

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.uid is not None and self.caps.own_uid:
            os.chown(self.run_dir, self.uid, self.uid)
        ctl = child_end = None
        egress = None
        if self.egress is not None:
            ctl, child_end = socket.socketpair()
            egress = sandbox.Egress(child_end.fileno(), self.egress.python, self.egress.node_preload)
        try:
            try:
                launch = sandbox.build_launch(self.caps, self.command.argv, root=self.command.root,
                                              home=self.run_dir, env=self.command.env, limits=self.limits,
                                              uid=self.uid, egress=egress)
            except sandbox.Unavailable as exc:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                raise ChildError(str(exc)) from None
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *launch.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, env=launch.env, cwd=launch.cwd, preexec_fn=launch.preexec,
                    limit=MAX_LINE, pass_fds=(child_end.fileno(),) if child_end is not None else ())
            except OSError as exc:
                raise ChildError(f"the server command could not be started: {exc.strerror or exc}") from None
            finally:
                if child_end is not None:
                    child_end.close()
            self.started_at = time.monotonic()
            self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr()),
                           asyncio.create_task(self._wait())]
            if ctl is not None:
                await self._attach_egress(ctl)
        finally:
            if ctl is not None:
                ctl.close()
        try:
            result = await self.request("initialize", {
                "protocolVersion": HANDSHAKE_VERSION, "capabilities": self.client_caps,
                "clientInfo": {"name": "wemcp-bridge", "version": "0.1.0"}}, timeout=self.start_timeout)
        except ChildError as exc:
            await asyncio.sleep(0.05)  # let the stderr reader drain the last lines
            tail = self.tail()
            await self.stop()
            raise ChildError(str(exc) + " during start-up; see the log tail", tail) from None
        if result.get("error", {}).get("code") == -32001:
            tail = self.tail()
            await self.stop()
            raise ChildError(f"the server did not answer initialize within {self.start_timeout:g} s; "
                             "it must speak MCP over stdio (and print nothing else on stdout)", tail)
        if "error" in result:
            await self.stop()
            raise ChildError(f"the server refused initialize: {result['error'].get('message', '')[:300]}",
                             self.tail())
        self.init_result = result.get("result") or {}
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self.init_result

    async def _attach_egress(self, ctl: socket.socket) -> None:
        """Receive the listening socket the launcher bound in the sandbox's network namespace and
        let the egress proxy serve it."""
        assert self.egress is not None
        ctl.settimeout(self.start_timeout)
        try:
            _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, ctl, 16, 1)
        except OSError:
            fds = []
        if not fds:
            await asyncio.sleep(0.05)  # let the stderr reader drain the last lines
            tail = self.tail()
            await self.stop()
            raise ChildError("the sandbox's network launcher did not hand over the proxy address", tail)
        for extra in fds[1:]:
            os.close(extra)
        # what arrived came from inside the sandbox: serve it only if it is a listening TCP socket
        try:
            sock = socket.socket(fileno=fds[0])
        except OSError:
            os.close(fds[0])
            sock = None
        try:
            if (sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM
                    or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
                raise OSError("not a listening TCP socket")
            self._egress_handle = await self.egress.proxy.attach(self.egress.slug, sock)
        except OSError as exc:
            if sock is not None:
                sock.close()
            await self.stop()
            raise ChildError(f"the sandbox's network launcher handed over something unusable ({exc})") from None

    async def _wait(self) -> None:
        assert self.proc is not None
        await self.proc.wait()
        self.exited.set()
        err = ChildError(f"the server process exited (code {self.proc.returncode})", self.tail())
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        if self._egress_handle is not None and self.egress is not None:
            handle, self._egress_handle = self._egress_handle, None
            await self.egress.proxy.detach(handle)
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sandbox.kill_tree, self.proc.pid, uid=self.uid if self.caps.own_uid else None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
        elif self.uid is not None and self.caps.own_uid:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sandbox.kill_tree, -1, uid=self.uid)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # ------------------------------------------------------------------ io
    def tail(self, lines: int = 40) -> str:
        text = "\n".join(list(self.stderr_tail)[-lines:])
        return redact(text, self.secrets)

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            self.stderr_tail.append(line.decode("utf-8", "replace").rstrip()[:2000])

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # a line over MAX_LINE
                self.stderr_tail.append("[bridge] dropped an oversized line from stdout")
                continue
            if not line:
                return
            try:
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:  # NaN, integers over 64 bits: json still reads them
                    msg = json.loads(line)
            except ValueError:
                # Servers that print banners on stdout: keep it as log output, not protocol.
                self.stderr_tail.append(line.decode("utf-8", "replace").rstrip()[:2000])
                continue
            if not isinstance(msg, dict):
                continue
            if "method" in msg:
                await self._from_server(msg)
                continue
            mid = msg.get("id")
            fut = self._pending.pop(mid, None) if isinstance(mid, int) else None
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def owner_of(self, msg: dict[str, Any]) -> Call | None:
        """The call a message of the server belongs to. A progress notification names it (its token
        is the call's internal id, see ``forward``); anything else belongs to the one call in flight,
        or to the latest call of a session when every call in flight is that session's. Otherwise
        it is nobody's: on a child shared by several sessions a guess could hand one caller's
        question to another."""
        params = msg.get("params")
        if msg.get("method") == "notifications/progress" and isinstance(params, dict):
            token = params.get("progressToken")
            return self.calls.get(token) if isinstance(token, int) else None
        if not self.calls:
            return None
        sessions = {c.session for c in self.calls.values()}
        if len(self.calls) == 1 or (len(sessions) == 1 and None not in sessions):
            return self.calls[max(self.calls)]
        return None

    async def _from_server(self, msg: dict[str, Any]) -> None:
        if msg.get("method") in OUTSIDE_CALLS and "id" not in msg:
            # about the server's state, not a call: to the sessions' GET streams (the bridge decides whose)
            if self.outside is not None:
                self.outside(msg)
            return
        call = self.owner_of(msg)
        if "id" in msg:  # the server asks: only a caller that listens can answer
            if call is None or call.side is None:
                await self.send({"jsonrpc": "2.0", "id": msg["id"], "error": {
                    "code": -32601, "message": "no client to ask: the request of this call cannot be relayed"}})
                return
            self.asked[msg["id"]] = call
        elif call is None or call.side is None:
            return  # a notification nobody listens to
        elif msg.get("method") == "notifications/progress":
            msg = {**msg, "params": {**msg["params"], "progressToken": call.progress_token}}
        call.side.put_nowait(msg)

    async def answer(self, server_id: Any, reply: dict[str, Any], session: str | None) -> bool:
        """A client's answer to the server's request ``server_id``; False when that session was not asked."""
        call = self.asked.get(server_id)
        if call is None or call.session != session:
            return False
        del self.asked[server_id]
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": server_id}
        if "error" in reply:
            out["error"] = reply["error"]
        else:
            out["result"] = reply.get("result")
        await self.send(out)
        return True

    async def cancel(self, client_id: Any, session: str | None, reason: Any = None) -> bool:
        """The caller of ``session`` cancelled its request ``client_id``: the server is told, under the
        id it saw (``notifications/cancelled``), and the call ends now with -32800 (a server need not
        answer a cancelled request). False: no such call of that session in flight."""
        if session is None:
            return False
        internal = next((i for i, c in self.calls.items() if c.session == session and c.client_id == client_id), None)
        if internal is None:
            return False
        params: dict[str, Any] = {"requestId": internal}
        if isinstance(reason, str):
            params["reason"] = reason
        with contextlib.suppress(ChildError):
            await self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params})
        fut = self._pending.get(internal)
        if fut is not None and not fut.done():
            fut.set_result({"jsonrpc": "2.0", "id": internal,
                            "error": {"code": -32800, "message": "Request cancelled"}})
        return True

    async def send(self, msg: dict[str, Any]) -> None:
        if not self.alive:
            raise ChildError("the server process is not running", self.tail())
        assert self.proc is not None and self.proc.stdin is not None
        try:
            data = orjson.dumps(msg) + b"\n"
        except TypeError:  # integers over 64 bits
            data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        async with self._write_lock:
            try:
                self.proc.stdin.write(data)
                await self.proc.stdin.drain()
            except (ConnectionError, BrokenPipeError) as exc:
                raise ChildError("the server process closed its input", self.tail()) from exc

    async def forward(self, msg: dict[str, Any], timeout: float,  # noqa: ASYNC109
                      side: Any = None, session: str | None = None) -> dict[str, Any]:
        """Send a client request with a fresh id; return the reply with the client's id restored.
        ``side``: where the server's requests and notifications about this call go (``owner_of``);
        ``session``: the caller's session (only it may answer those requests)."""
        client_id = msg.get("id")
        self._next_id += 1
        internal = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[internal] = fut
        call = Call(side, session, client_id=client_id)
        params = msg.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(params, dict) and isinstance(meta, dict) and "progressToken" in meta:
            # the token the server echoes is the call's internal id (unique on this child; two
            # callers may both use token 1); the caller's own is restored on the way out
            call.progress_token = meta["progressToken"]
            msg = {**msg, "params": {**params, "_meta": {**meta, "progressToken": internal}}}
        self.calls[internal] = call
        self.in_flight += 1
        self.last_used = time.monotonic()
        try:
            await self.send({**msg, "id": internal})
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            with contextlib.suppress(ChildError):
                await self.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                 "params": {"requestId": internal, "reason": "timeout"}})
            return {"jsonrpc": "2.0", "id": client_id,
                    "error": {"code": -32001, "message": f"the server did not answer within {timeout:g} s"}}
        finally:
            self._pending.pop(internal, None)
            self.calls.pop(internal, None)
            for sid in [k for k, c in self.asked.items() if c is call]:  # questions of a call that is over
                del self.asked[sid]
            self.in_flight -= 1
            self.last_used = time.monotonic()
        reply["id"] = client_id
        return reply

    async def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:  # noqa: ASYNC109
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": 0, "method": method}
        if params is not None:
            msg["params"] = params
        return await self.forward(msg, timeout)


def redact(text: str, secrets: list[str]) -> str:
    """A server's output as its owner may see it: the callers' input values, tokens and key-like
    strings removed (the output of one user's child must not hand that user's keys to the owner)."""
    return redact_text(text, secrets)
