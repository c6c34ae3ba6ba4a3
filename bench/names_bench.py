"""Names: what the naming rules (services/catalog/src/wemcp/catalog/names.py) add to a submission.

Method
- Embedded Postgres 18 (fsync on) and NATS; the catalog in this process (`running(SPEC)`, embedder
  `hash`: no model), requests over an in-memory ASGI transport, as the gateway would send them.
- Each kind: N submissions of new pinned npm packages (`POST /api/v1/servers`), one user, timed
  request to answer:
  - `derived`: an `mcpServers` entry without a name (listed as `io.wemcp.<handle>/...`);
  - `platform`: a server.json named `io.wemcp.<handle>/...` (one handle lookup);
  - `domain`: a server.json under a DNS-proven domain (one claims query);
  - `github`: a server.json under `io.github.<login>/...`: auth's identities endpoint and GitHub's
    `GET /users/<login>` answered by loopback stand-ins (wemcp.testkit.names) —
    real GitHub adds its own round trip per call (two here: the account, then nothing else for one's
    own login; an organisation adds one or two);
  - `admin`: an admin's server.json (the rules skip the network; the closest to "no rules").
- `dns verify`: one TXT lookup against the loopback DNS stand-in through the catalog's client.

    .venv/bin/python bench/names_bench.py [--n 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from benchkit import pct, with_catalog_infra


async def run(args: argparse.Namespace, db_url: str, nats_url: str) -> list[str]:
    import httpx2 as httpx
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from wemcp.catalog import domain_proof
    from wemcp.catalog.config import Settings
    from wemcp.catalog.main import SPEC
    from wemcp.catalog.models import DomainClaim
    from wemcp.common.identity import Identity
    from wemcp.common.service import running
    from wemcp.common.trust import PlatformHeaders
    from wemcp.devstack.infra import free_port
    from wemcp.devstack.testing import serve_app
    from wemcp.testkit.names import GitHubStandIn, dns_stand_in, github_stand_in

    uid = uuid.uuid4()
    user = PlatformHeaders("catalog", Identity(uid, "user", "benchuser"), issuer="gateway")
    admin = PlatformHeaders("catalog", Identity(uuid.uuid4(), "admin", "benchadmin"), issuer="gateway")

    async def identities(request: Any) -> JSONResponse:  # auth's documented answer (docs/services/auth.md)
        return JSONResponse({"user_id": str(uid), "login": "benchuser", "disabled": False,
                             "identities": [{"provider": "github", "subject": "4242", "login": "benchuser"}]})

    auth = Starlette(routes=[Route("/internal/auth/users/{uid}/identities", identities)])
    auth_port = free_port()
    lines = [f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
             f"load_avg={os.getloadavg()[0]:.1f} (others' jobs share this machine)"]
    async with github_stand_in(GitHubStandIn(users={"benchuser": 4242})) as gh, dns_stand_in() as dns, \
            serve_app(auth, auth_port):
        settings = Settings(database_url=db_url, nats_url=nats_url, log_level="warning", embedder="hash",
                            egress_allow="127.0.0.1", auth_url=f"http://127.0.0.1:{auth_port}", github_api_url=gh.url,
                            dns_nameservers=f"127.0.0.1:{dns.port}", max_submissions_per_hour=100_000,
                            max_deployments_in_flight=100_000)
        async with running(SPEC, settings) as app:
            async with app.state.runtime.sessions() as s, s.begin():
                s.add(DomainClaim(owner_id=uid, domain="bench.test", token="t", method="dns",
                                  verified_at=datetime.now(UTC)))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c",
                                         timeout=30) as c:
                def sj(name: str, ident: str) -> dict[str, Any]:
                    return {"server_json": {"name": name, "version": "1.0.0", "packages": [
                        {"registryType": "npm", "identifier": ident, "version": "1.0.0"}]}}

                kinds = {
                    "derived": (user, lambda i: {"mcpServers": {"x": {"command": "npx",
                                                                      "args": ["-y", f"@bd/p{i}@1.0.0"]}}}),
                    "platform": (user, lambda i: sj(f"io.wemcp.benchuser/p{i}", f"@bp/p{i}")),
                    "domain": (user, lambda i: sj(f"test.bench/p{i}", f"@bdom/p{i}")),
                    "github": (user, lambda i: sj(f"io.github.benchuser/p{i}", f"@bgh/p{i}")),
                    "admin": (admin, lambda i: sj(f"io.github.somebody/p{i}", f"@badm/p{i}")),
                }
                # warm-up (first handle, first connections)
                await c.post("/api/v1/servers", headers=user, json=sj("io.wemcp.benchuser/warm", "@w/w"))
                results: dict[str, list[float]] = {k: [] for k in kinds}
                for i in range(args.n):  # interleaved: the machine's load hits every kind alike
                    for kind, (who, body) in kinds.items():
                        t0 = time.perf_counter()
                        r = await c.post("/api/v1/servers", headers=who, json=body(i))
                        results[kind].append((time.perf_counter() - t0) * 1000)
                        if r.status_code != 202:
                            raise RuntimeError(f"{kind}: {r.status_code} {r.text}")
                for kind, ms in results.items():
                    lines.append(f"submit {kind:9s} n={len(ms)}: p50 {statistics.median(ms):.1f} ms, "
                                 f"p95 {pct(ms, 95):.1f} ms")
                dns.txt["bench.test"] = ["wemcp-verify=t"]
                ms = []
                for _ in range(args.n):
                    t0 = time.perf_counter()
                    await domain_proof.txt_records("bench.test", [("127.0.0.1", dns.port)], 2.0)
                    ms.append((time.perf_counter() - t0) * 1000)
                lines.append(f"dns TXT lookup (loopback resolver) n={len(ms)}: p50 {statistics.median(ms):.2f} ms")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=30)
    args = p.parse_args()
    for line in with_catalog_infra("wemcp-names-", lambda db, nats: run(args, db, nats)):
        print(line)


if __name__ == "__main__":
    main()
