"""End-to-end fixtures: the whole platform as real processes (the same supervisor as `make run`),
on its own embedded Postgres, NATS and Redis so nothing here competes with in-process tests for
durable consumers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import pytest_asyncio

from wemcp.devstack.infra import free_port
from wemcp.devstack.stack import SERVICES, Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    data = Path(tempfile.mkdtemp(prefix="wemcp-e2e-"))
    # the deployer's bridge on a free port of its own (kept across restarts of the deployer): the
    # default, 8710, is taken whenever `make run` or another stack is up on this machine
    s = Stack(data_dir=data, gateway_port=free_port(), durable=False,
              extra_env={"WEMCP_BUS_ACK_WAIT_SECONDS": "2", "LOG_LEVEL": "info",
                         "WEMCP_DEPLOYER_BRIDGE_PORT": str(free_port())})
    try:
        s.start_infra()
        s.migrate()
        s.start_services((*SERVICES, "gateway"), wait=120)
        yield s
    finally:
        s.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.gateway_port}"


@pytest.fixture
def client(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=30) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[object]:
    """Debian's chromium driven by Playwright (`make browser-tools` installs it): the console's tests."""
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "chromium is missing: run `make browser-tools` (as root)"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()
