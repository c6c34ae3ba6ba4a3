"""Helpers of the security tests: the whole platform as real processes (the supervisor ``make run``
uses, on its own embedded Postgres, NATS and Redis, like tests/e2e), started once per test run for
every module that asks and stopped when the run ends; accounts made the way operators make them; and
a raw HTTP/1.1 client that sends the request target byte for byte (httpx and curl normalise paths;
an attacker's client does not)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import pytest

from tests.e2e.e2e_kit import superadmin_key, user_key
from wemcp.devstack.infra import free_port
from wemcp.devstack.stack import SERVICES, Stack

_STACK = pytest.StashKey[Stack]()

__all__ = ["RawResponse", "platform", "raw_request", "superadmin_key", "user_key"]


def platform(config: pytest.Config) -> Stack:
    """The running platform, started on first use and stopped at the end of the test run (one
    stack however many modules use it: it takes a while to start on a small machine)."""
    stack = config.stash.get(_STACK, None)
    if stack is not None:
        return stack
    data = Path(tempfile.mkdtemp(prefix="wemcp-security-"))
    stack = Stack(data_dir=data, gateway_port=free_port(), durable=False,
                  # the bridge on a free port (other stacks may run on this machine at the same time)
                  extra_env={"WEMCP_BUS_ACK_WAIT_SECONDS": "2", "LOG_LEVEL": "info",
                             "WEMCP_DEPLOYER_BRIDGE_PORT": str(free_port())})

    def stop() -> None:
        stack.stop()
        shutil.rmtree(data, ignore_errors=True)

    config.add_cleanup(stop)  # registered first: a stack that fails half-way is stopped too
    stack.start_infra()
    stack.migrate()
    stack.start_services((*SERVICES, "gateway"), wait=120)
    config.stash[_STACK] = stack
    return stack


@dataclass
class RawResponse:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> list[bytes]:
        """Every value of a header (lower-case name): a header sent twice shows up twice."""
        return [v for k, v in self.headers if k == name]

    @property
    def content_type(self) -> str:
        values = self.header(b"content-type")
        return values[0].decode() if values else ""

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Parser:
    def __init__(self) -> None:
        self.response = RawResponse()
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.response.body += body

    def on_message_complete(self) -> None:
        self.done = True


async def raw_request(port: int, method: str, target: bytes, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> RawResponse:
    """One request on a fresh connection to 127.0.0.1:``port``, with ``target`` written into the
    request line exactly as given (dot segments, escapes, control bytes and all)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = {"host": f"127.0.0.1:{port}", "connection": "close", "content-length": str(len(body)),
                **(headers or {})}
        writer.write(method.encode() + b" " + target + b" HTTP/1.1\r\n"
                     + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in head.items()) + b"\r\n" + body)
        await writer.drain()
        state = _Parser()
        parser = httptools.HttpResponseParser(state)
        while not state.done:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            if not chunk:
                break
            parser.feed_data(chunk)
        state.response.status = parser.get_status_code()
        return state.response
    finally:
        writer.close()
