"""What network costs a hosted server: the egress launcher, the handed-over listener, the proxy.

Starts the same tiny stdio MCP server (services/deployer/tests/egress/client_server.py, standard
library only) in the real sandbox (bubblewrap, as probe picks; ``--mode restricted`` as root) through
the deployer's own StdioChild, ``--runs`` times with network and as many without, alternating, and
reports per start: wall time to an answered ``initialize`` (p50/p95), the deployer process's CPU,
the processes the child holds, the deployer's open descriptors and RSS with all children of one kind
running. Then the proxy itself: CPU of the deployer per MiB tunnelled (CONNECT) from a loopback
server to a client inside the sandbox.

    .venv/bin/python bench/egress_bench.py [--runs 20] [--mode bwrap|restricted] [--mib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil

from wemcp.deployer import sandbox
from wemcp.deployer.child import Command, EgressHook, StdioChild
from wemcp.deployer.egress import EgressProxy, ProxyPolicy

REPO = Path(__file__).resolve().parents[1]

DATA = REPO / ".data" / "bench-egress"
LIMITS = sandbox.Limits(memory_mb=512, cpu_seconds=600, max_processes=32, max_open_files=256)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def blob_server(size: int) -> tuple[int, threading.Thread]:
    """A loopback TCP server that sends ``size`` bytes to each connection (after its first line)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    chunk = os.urandom(1 << 16)

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            conn.recv(1024)
            sent = 0
            while sent < size:
                conn.sendall(chunk)
                sent += len(chunk)
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mode", default="bwrap")
    ap.add_argument("--mib", type=int, default=64)
    args = ap.parse_args()
    caps = sandbox.probe(args.mode)
    if caps.refusal:
        sys.exit(caps.refusal)
    root = DATA / "root"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(DATA, 0o755)
    os.chmod(root, 0o755)
    shutil.copyfile(REPO / "services/deployer/tests/egress/client_server.py", root / "server.py")
    preload = root / "egress_preload.js"
    shutil.copyfile(REPO / "services/deployer/src/wemcp/deployer/runtime/egress_preload.js", preload)
    for p in root.iterdir():
        os.chmod(p, 0o644)
    blob_port, _ = blob_server(args.mib << 20)
    proxy = EgressProxy(ProxyPolicy(f"127.0.0.1:{blob_port}"), max_bytes_per_hour=1 << 40)
    me = psutil.Process()

    async def start(network: bool, uid: int) -> tuple[StdioChild, float, float]:
        hook = EgressHook(proxy, "bench", "/usr/bin/python3", str(preload)) if network else None
        child = StdioChild(Command(["/usr/bin/python3", str(root / "server.py")], root, {}), caps=caps, limits=LIMITS,
                           uid=uid, run_dir=DATA / "run" / uuid.uuid4().hex[:8], egress=hook)
        c0, t0 = cpu(), time.perf_counter()
        await child.start()
        return child, (time.perf_counter() - t0) * 1000, (cpu() - c0) * 1000

    wall: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    sandbox_cpu: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.runs):
        for network in (False, True):
            k0 = child_cpu()
            child, ms, cpu_ms = await start(network, 263000 + i % 2)
            wall[network].append(ms)
            cpus[network].append(cpu_ms)
            await child.stop()
            sandbox_cpu[network].append((child_cpu() - k0) * 1000)  # bwrap + launcher + server, reaped

    held: dict[bool, dict[str, float]] = {}
    for network in (False, True):
        base_fds, base_rss = me.num_fds(), me.memory_info().rss
        kids = [(await start(network, 263100 + k + (50 if network else 0)))[0] for k in range(10)]
        procs = [len(psutil.Process(c.proc.pid).children(recursive=True)) + 1 for c in kids if c.proc]
        held[network] = {"procs": statistics.mean(procs), "fds": (me.num_fds() - base_fds) / 10,
                         "rss_kib": (me.memory_info().rss - base_rss) / 10 / 1024}
        if network:
            c = kids[0]
            got = await c.request("tools/call", {"name": "net", "arguments": {"kind": "env"}})
            url = json.loads(got["result"]["content"][0]["text"])["HTTPS_PROXY"]
            assert url.startswith("http://127.0.0.1:")
        for c in kids:
            await c.stop()

    # the launcher alone (outside any sandbox): what network adds to every child start, in CPU
    from wemcp.deployer.egress import LAUNCHER

    launcher_cpu = []
    for _ in range(args.runs):
        a, b = socket.socketpair()
        k0 = child_cpu()
        p = await asyncio.create_subprocess_exec("/usr/bin/python3", "-c", LAUNCHER, "/bin/true",
                                                 pass_fds=(b.fileno(),),
                                                 env={"WEMCP_EGRESS_FD": str(b.fileno()), "PATH": "/usr/bin:/bin"})
        b.close()
        _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, a, 16, 1)
        await p.wait()
        launcher_cpu.append((child_cpu() - k0) * 1000)
        for fd in fds:
            os.close(fd)
        a.close()

    # proxy throughput: a client inside a sandbox tunnels args.mib MiB through CONNECT
    code = ("import os, socket, time\n"
            "p = int(os.environ['HTTPS_PROXY'].rsplit(':', 1)[1])\n"
            "s = socket.create_connection(('127.0.0.1', p))\n"
            f"s.sendall(b'CONNECT 127.0.0.1:{blob_port} HTTP/1.1\\r\\n\\r\\n')\n"
            "head = b''\n"
            "while b'\\r\\n\\r\\n' not in head: head += s.recv(1)\n"
            "s.sendall(b'go\\n'); n = 0\n"
            "while True:\n    d = s.recv(1 << 16)\n    if not d: break\n    n += len(d)\n"
            "print(n)\n")
    ctl, child_end = socket.socketpair()
    home = DATA / "run" / "tp"
    home.mkdir(parents=True, exist_ok=True)
    if caps.own_uid:
        os.chown(home, 263200, 263200)
    egress = sandbox.Egress(child_end.fileno(), "/usr/bin/python3", str(preload))
    launch = sandbox.build_launch(caps, ["/usr/bin/python3", "-c", code], root=root, home=home, env={}, limits=LIMITS,
                                  uid=263200, egress=egress)
    c0, t0 = cpu(), time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*launch.argv, env=launch.env, cwd=launch.cwd, preexec_fn=launch.preexec,
                                                pass_fds=(child_end.fileno(),), stdout=asyncio.subprocess.PIPE)
    child_end.close()
    _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, ctl, 16, 1)
    handle = await proxy.attach("bench-tp", socket.socket(fileno=fds[0]))
    out, _ = await proc.communicate()
    secs, cpu_s = time.perf_counter() - t0, cpu() - c0
    await proxy.detach(handle)
    got = int(out.decode().strip() or 0)
    shutil.rmtree(DATA / "run", ignore_errors=True)

    print(f"sandbox {caps.mode}, {args.runs} starts each, load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} cores")
    for network in (False, True):
        name = "with network" if network else "no network  "
        print(f"{name}: start p50 {statistics.median(wall[network]):.0f} ms p95 {pct(wall[network], 95):.0f} ms; "
              f"deployer CPU per start p50 {statistics.median(cpus[network]):.1f} ms; "
              + (f"child CPU (launcher, server start) p50 {statistics.median(sandbox_cpu[network]):.0f} ms; "
                 if caps.mode == "restricted" else "")  # bwrap's own children are not reaped by the deployer
              + "processes per child "
              + f"{held[network]['procs']:.1f}; deployer fds per child {held[network]['fds']:.1f}; deployer RSS per "
              f"child {held[network]['rss_kib']:.0f} KiB")
    print(f"launcher alone (python3 -c LAUNCHER /bin/true, outside a sandbox): CPU p50 "
          f"{statistics.median(launcher_cpu):.0f} ms p95 {pct(launcher_cpu, 95):.0f} ms")
    print(f"proxy: {got / 2**20:.0f} MiB through CONNECT in {secs:.2f} s ({got / 2**20 / secs:.0f} MiB/s); "
          f"deployer CPU {cpu_s * 1000 / max(1, got / 2**20):.1f} ms per MiB")


if __name__ == "__main__":
    asyncio.run(main())
