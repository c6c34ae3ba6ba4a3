"""Benchmark: the agent-run context (wemcp.quota.runcontext) — sign, first verification of a token
(PyJWT: header, HMAC, claims) and a repeated verification of the same token (every MCP call of a run
carries the same one; a process checks its signature once, its expiry and user every call).

    .venv/bin/python bench/runcontext_verify.py [--rounds 5] [--number 5000]

No servers. Each figure: the median over ``--rounds`` of ``timeit`` over ``--number`` calls, in µs
per call, with the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import timeit
import uuid

from wemcp.quota import runcontext
from wemcp.quota.runcontext import sign_run_context, verify_run_context

SECRET = "bench-agent-run-secret-0123456789"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--number", type=int, default=5000)
    args = ap.parse_args()
    user = str(uuid.uuid4())
    servers = [f"server-{i}" for i in range(4)]
    token = sign_run_context(SECRET, user_id=user, agent_id=str(uuid.uuid4()), run_id=uuid.uuid4().hex,
                             servers=servers)

    def first() -> None:
        runcontext._verified.clear()  # what a token's first call in a process costs
        verify_run_context(token, SECRET, user_id=user)

    cells = {
        "sign": lambda: sign_run_context(SECRET, user_id=user, agent_id="a", run_id="r", servers=servers),
        "verify, first call of a token": first,
        "verify, same token again": lambda: verify_run_context(token, SECRET, user_id=user),
    }
    print(f"{platform.machine()} {platform.python_version()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}; token {len(token)} bytes")
    for name, fn in cells.items():
        runs = [timeit.timeit(fn, number=args.number) / args.number * 1e6 for _ in range(args.rounds)]
        print(f"{name:32s} {statistics.median(runs):8.1f} µs  (rounds {min(runs):.1f} to {max(runs):.1f})")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
