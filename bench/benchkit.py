"""What the bench scripts share (they run as ``python bench/<name>.py``, so this folder is on the path)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0 to 100), nearest rank: the sorted value at ``round(p/100 * (n-1))``."""
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))]


async def record(results: dict[tuple[str, int], list[dict[str, Any]]], rnd: int, row: str, c: int,
                 res: dict[str, Any], *, width: int, extra: str = "") -> None:
    """Keeps one cell's result (round ``rnd`` of ``row`` at ``c`` clients), says it on stderr (``row``
    right-aligned in ``width`` characters, then ``extra``) and lets the machine settle half a second
    before the next cell."""
    results.setdefault((row, c), []).append(res)
    print(f"  round {rnd + 1} {row:>{width}} c={c:<3} p50 {res['p50']:6.2f} ms  p99 {res['p99']:7.2f} ms  "
          f"{res['rps']:6.0f} calls/s{extra}", file=sys.stderr)
    await asyncio.sleep(0.5)


def with_catalog_infra(prefix: str, body: Callable[[str, str], Awaitable[list[str]]]) -> list[str]:
    """Embedded Postgres (durable, pgvector + pg_trgm, the catalog schema migrated) and NATS in a
    temporary folder; runs ``body(database_url, nats_url)`` and stops both whatever happens."""
    from wemcp.common.migrations import upgrade
    from wemcp.devstack.infra import EmbeddedNats, EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(work / "pg", durable=True)
    nats = EmbeddedNats(work / "nats")
    pg.start()
    nats.start()
    try:
        asyncio.run(_extensions(pg.url))
        upgrade("catalog", pg.url)
        return asyncio.run(body(pg.url, nats.url))
    finally:
        nats.stop()
        pg.stop()


def run_catalog_bench(prefix: str, body: Callable[[str, str], Awaitable[list[str]]]) -> None:
    """What a catalog bench's ``main`` does once its arguments are read: one OpenMP thread that does
    not spin (set before the embedder loads), warnings-only console logs, ``body`` on the catalog's
    infrastructure (``with_catalog_infra``); prints the lines it returns."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from wemcp.common.logging import configure_logging

    configure_logging("bench", "warning", "console")
    print("\n".join(with_catalog_infra(prefix, body)))


async def _extensions(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS pg_trgm;")
    await conn.close()


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()  # fields from 3 (state) on; the name may hold spaces


def children(pid: int) -> list[int]:
    """Live descendants of ``pid`` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def cpu_ms(pid: int, tree: bool = False) -> float:
    """CPU (utime + stime) of ``pid`` in ms, from /proc/<pid>/stat. ``tree``: also its live
    descendants and the children it has already reaped (cutime + cstime: Postgres backends that
    exited), which is what a process tree has spent."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        f = _stat(pid)
    except OSError:
        return 0.0
    total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
    if tree:
        total += int(f[13]) + int(f[14])  # cutime, cstime (fields 16, 17)
        for kid in children(pid):
            try:
                k = _stat(kid)
            except OSError:
                continue
            total += int(k[11]) + int(k[12])
    return total * 1000 / tick
