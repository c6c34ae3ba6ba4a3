"""The conformance run of the MCP-fidelity issue (test_mcp_conformance.py: the official suite, ``--suite
all``) through two gateways behind the loopback round-robin balancer (every request to the next
gateway): it must fail no check the server passes directly. The 2026-07-28 era through two replicas
is covered by test_replicas.py (the router's, era and relay tests, parked calls included)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from services.gateway.tests.gateway_testkit import open_stack
from services.gateway.tests.test_mcp_conformance import LOOPBACK_NAMES, OUT, direct_server, failed, run_suite

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def stack(settings_for, clean_bus, clean_redis, infra) -> AsyncIterator[Any]:
    async with open_stack({"replicas": 2, "mcp_allowed_hosts": LOOPBACK_NAMES}, settings_for, infra) as s:
        yield s


@pytest.mark.timeout(900)
async def test_two_replicas_fail_no_check_the_server_passes(stack):
    async with direct_server() as url:
        direct = await run_suite(url, "direct-for-replicas")
        await stack.deploy("conf-http", url, versions=["2025-11-25", "2026-07-28"])
        via = await run_suite(stack.url.replace("127.0.0.1", "localhost") + "/mcp/conf-http", "gateway-2-replicas")
    passed_directly = {k for k, v in direct.items() if v == "SUCCESS"}
    summary = {"direct": (len(passed_directly), len(failed(direct))),
               "gateway-2-replicas": (sum(v == "SUCCESS" for v in via.values()), len(failed(via)))}
    (OUT / "summary-replicas.json").write_text(json.dumps({"passed_failed": summary,
                                                           "failed": sorted(failed(via))}, indent=2))
    assert not failed(via) & passed_directly, (summary, sorted(failed(via) & passed_directly))
    assert len(passed_directly) >= 30, summary
    # the run went through both replicas, sessions owned by each, requests forwarded between them
    hits = stack.balancer.hits
    assert hits[0] > 10 and hits[1] > 10, hits
    assert sum(r.extras["replicas"].forwarded for r in stack.runtimes) > 5
