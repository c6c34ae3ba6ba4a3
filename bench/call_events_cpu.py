"""Benchmark (issue 14): CPU per call of the gateway's call-event publishing, one message per call
(the recorder before batching, taken from git) against ``mcp.call.batch`` batches (this tree).

    .venv/bin/python bench/call_events_cpu.py [--calls 40000] [--rate 2000] [--rounds 3]
                                              [--baseline-commit 351c9a4]

An embedded NATS (JetStream, file storage, the platform's streams) on a free loopback port; in this
process, a recorder gets ``--calls`` records at ``--rate`` calls/s (bursts every 5 ms, as a loaded
gateway's event loop delivers them) until all are acknowledged. Reported per call: this process's
CPU (``time.process_time``: record() on the hot path plus building, publishing and acknowledging the
events — what the gateway process spends on events) and the NATS server's CPU (from /proc), median
of the rounds; the two recorders alternate per round so load drifts hit both. The spool is not
involved (NATS stays up). The calls are not served here: only the events' cost is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import psutil

from wemcp.common.bus import ensure_streams
from wemcp.devstack.infra import EmbeddedNats

REPO = Path(__file__).resolve().parent.parent
PATH = "services/gateway/src/wemcp/gateway/calls.py"
LINGER = 0.02


def load_old(commit: str) -> Any:
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{PATH}"], check=True, capture_output=True,
                         text=True).stdout
    path = Path(tempfile.mkdtemp()) / "calls_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("calls_old", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["calls_old"] = mod
    spec.loader.exec_module(mod)
    return mod


class _Null:
    published = 0

    def record(self, _rec: Any) -> None:
        self.published += 1

    async def stop(self) -> None:
        pass


async def one(mod: Any, js: Any, calls: int, rate: float, nats_proc: psutil.Process) -> tuple[float, float, float]:
    if mod is None:  # no events: what the driver loop and an idle NATS cost by themselves
        recorder = _Null()
        mod = sys.modules["wemcp.gateway.calls"]
    elif mod.__name__ == "calls_old":
        recorder = mod.CallRecorder()
        recorder.start(js)
    else:
        recorder = mod.CallRecorder(None, linger=LINGER)
        await recorder.start(js._nc)
    burst = max(1, int(rate * 0.005))
    await asyncio.sleep(0.2)
    n0 = nats_proc.cpu_times()
    c0, t0 = time.process_time(), time.perf_counter()
    sent = 0
    while sent < calls:
        for _ in range(min(burst, calls - sent)):
            recorder.record(mod.CallRecord(None, "echo", "tools/call", "echo", "none", True, False, "ok", None,
                                           1.5, 120, 80))
            sent += 1
        await asyncio.sleep(burst / rate)
    while recorder.published < calls:  # noqa: ASYNC110 (polling a counter)
        await asyncio.sleep(0.01)
    c1, t1 = time.process_time(), time.perf_counter()
    n1 = nats_proc.cpu_times()
    await recorder.stop()
    nats_cpu = (n1.user + n1.system) - (n0.user + n0.system)
    return (c1 - c0) * 1e6 / calls, nats_cpu * 1e6 / calls, calls / (t1 - t0)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=40_000)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-commit", default="351c9a4")
    ap.add_argument("--linger", type=float, default=0.02, help="the batching recorder's linger")
    args = ap.parse_args()
    global LINGER
    LINGER = args.linger
    import wemcp.gateway.calls as new

    old = load_old(args.baseline_commit)
    work = Path(tempfile.mkdtemp(prefix="wemcp-bench-"))
    server = EmbeddedNats(work / "nats")
    server.start()
    try:
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js)
        rows: dict[str, list[tuple[float, float, float]]] = {"none (driver, idle NATS)": [],
                                                             "per call (before)": [], "mcp.call.batch": []}
        for _ in range(args.rounds):
            rows["none (driver, idle NATS)"].append(await one(None, js, args.calls, args.rate, proc))
            rows["per call (before)"].append(await one(old, js, args.calls, args.rate, proc))
            rows["mcp.call.batch"].append(await one(new, js, args.calls, args.rate, proc))
        print(f"{args.calls} calls at {args.rate:g}/s, {args.rounds} rounds; load {psutil.getloadavg()}")
        print("| recorder | gateway µs/call (median; rounds) | NATS µs/call (median; rounds) | calls/s |")
        print("|---|---:|---:|---:|")
        for name, rs in rows.items():
            g, n, r = zip(*rs, strict=True)
            print(f"| {name} | {statistics.median(g):.1f} ({', '.join(f'{x:.1f}' for x in g)}) | "
                  f"{statistics.median(n):.1f} ({', '.join(f'{x:.1f}' for x in n)}) | {statistics.median(r):.0f} |")
        await nc.close()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
