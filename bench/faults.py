"""The fault suite (issue 14): the whole platform on embedded Postgres/NATS/Redis (free loopback
ports, the same supervisor code as ``make run``), a steady stream of ``tools/call`` through the
gateway to hosted stdio echo servers plus deployments that succeed and fail, and one fault after
another: SIGKILL of each service with durable consumers (started again as the supervisor would),
a restart of NATS, of Postgres, of Redis (stopped by PID, down for ``--outage`` s, started on the
same port and data directory) and of the gateway (SIGTERM). One row per fault: events produced,
applied, lost, doubled and the catch-up time. Every row must read lost 0, doubled 0.

    .venv/bin/python bench/faults.py [--seconds 20] [--outage 5] [--nats-outage 30] [--rate 100] [--clients 8]
                                     [--deploys 4] [--faults kill-catalog,restart-nats,...]
                                     [--ack-wait S] [--no-durable] [--keep DIR]

How it counts and what each column means: ``wemcp.devstack.faults`` (its docstring). The platform
runs with production settings (Postgres fsync on, Redis append-only file, JetStream's ack wait of
30 s) unless ``--no-durable`` / ``--ack-wait`` say otherwise. Exit status 1 when any row has a loss,
a double or did not catch up within ``--wait``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

from wemcp.devstack.faults import ALL_FAULTS, HEADER, check_fault, run_suite, table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--faults", default=",".join(ALL_FAULTS),
                    help="comma-separated: kill-<service>[+<service>...], restart-<nats|postgres|redis|gateway>"
                         f"\n(default: {','.join(ALL_FAULTS)})")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="traffic per fault: the fault starts after a third of it (default 20)")
    ap.add_argument("--outage", type=float, default=5.0, help="seconds Postgres/Redis stay down (default 5)")
    ap.add_argument("--nats-outage", type=float, default=30.0,
                    help="seconds NATS stays down (default 30; issue 14's spool target is 300)")
    ap.add_argument("--rate", type=float, default=100.0, help="calls/s in total, 0 = as fast as they go (default 100)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent load clients (default 8)")
    ap.add_argument("--deploys", type=int, default=4,
                    help="submissions per fault, half deploy and half fail (default 4)")
    ap.add_argument("--wait", type=float, default=180.0,
                    help="longest wait for the effects of one fault (default 180)")
    ap.add_argument("--ack-wait", type=float, default=None,
                    help="JetStream ack wait of the consumers (default: the platform's, 30 s)")
    ap.add_argument("--no-durable", action="store_true", help="Postgres without fsync (faster, less real)")
    ap.add_argument("--keep", type=Path, default=None, help="data directory to use and keep (logs in DIR/logs)")
    args = ap.parse_args()
    faults = [check_fault(f.strip()) for f in args.faults.split(",") if f.strip()]

    def log(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    log(f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()}")
    log(f"faults {faults}; {args.seconds:g} s of traffic each at {args.rate:g} calls/s from {args.clients} "
        f"clients, outage {args.outage:g} s (NATS {args.nats_outage:g} s), {args.deploys} deployments per fault")
    results = asyncio.run(run_suite(faults, seconds=args.seconds, outage=args.outage, clients=args.clients,
                                    rate=args.rate, deploys=args.deploys, wait=args.wait, nats_outage=args.nats_outage,
                                    durable=not args.no_durable, ack_wait=args.ack_wait, keep=args.keep, log=log))
    log(f"load {os.getloadavg()}")
    print()
    print(table(results))
    print(f"\ncolumns: {', '.join(HEADER)}; 'usage applied' = ratelimit's daily usage calls / calls answered; "
          "'counter applied' = the catalog's call counter / calls answered and not refused; "
          "'deploys applied' = deployments whose catalog status equals the deployer's / deployments ended")
    bad = [r for r in results if r.lost or r.doubled or r.catchup_s is None or r.deploys_unfinished]
    for r in bad:
        print(f"NOT OK: {r.fault}: lost {r.lost}, doubled {r.doubled}, catch-up {r.catchup_s}; "
              + "; ".join(r.mismatches), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
