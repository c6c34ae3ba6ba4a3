"""Caps on installs (issue 15, part 5): one submission cannot fill the disk nor hold an install slot
forever. The deployer's real installer runs uv and npm against registries served here on loopback: a
wheel larger than the size cap, and an npm registry that never answers. Each install is stopped, its
processes killed by PID, its prefix removed, and the failure says which limit it hit."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from wemcp.deployer.install import Installer, InstallError, disk_usage
from wemcp.deployer.spec import Package
from wemcp.devstack.testing import serve_app


def big_wheel(project: str, version: str, payload: int) -> tuple[str, bytes]:
    """A wheel whose package carries ``payload`` bytes of incompressible data (and a console script)."""
    dist = project.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": b"def main():\n    pass\n",
        f"{dist}/blob.bin": os.urandom(payload),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[console_scripts]\n{project} = {dist}:main\n".encode(),
    }
    files[f"{info}/RECORD"] = ("".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return f"{dist}-{version}-py3-none-any.whl", buf.getvalue()


@asynccontextmanager
async def simple_index(project: str, fname: str, data: bytes) -> AsyncIterator[str]:
    async def page(request: Request) -> Response:
        if request.path_params["name"] != project:
            return Response(status_code=404)
        digest = hashlib.sha256(data).hexdigest()
        return HTMLResponse(f'<html><body><a href="/files/{fname}#sha256={digest}">{fname}</a></body></html>')

    async def file(request: Request) -> Response:
        return Response(data, media_type="application/octet-stream")

    app = Starlette(routes=[Route("/simple/{name}/", page), Route("/files/{fname}", file)])
    async with serve_app(app) as url:
        yield f"{url}/simple"


def installer(tmp_path: Path, **kw: Any) -> Installer:
    (tmp_path / "archives").mkdir(parents=True, exist_ok=True)
    return Installer(tmp_path / "data", archive_dir=tmp_path / "archives", venv_python="/usr/bin/python3", **kw)


def processes_naming(text: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if any(text in part for part in (p.info["cmdline"] or [])):
            out.append(p.pid)
    return out


async def test_an_install_larger_than_the_cap_is_stopped_and_removed(tmp_path):
    fname, data = big_wheel("wemcp-bulky", "1.0.0", 3 * 2**20)
    async with simple_index("wemcp-bulky", fname, data) as index:
        inst = installer(tmp_path, pip_index_url=index, max_bytes=2**20)
        with pytest.raises(InstallError) as err:
            await inst.install(Package(registryType="pypi", identifier="wemcp-bulky", version="1.0.0"))
    assert str(err.value) == ("the installed server is larger than 1 MiB on disk (the deployer's install size "
                              "limit, install_max_bytes) and the install was stopped")
    assert not inst.prefix_for("pypi", "wemcp-bulky", "1.0.0").exists()
    # control: the same install under a cap it fits in succeeds, and is that large
    async with simple_index("wemcp-bulky", fname, data) as index:
        inst = installer(tmp_path / "roomy", pip_index_url=index, max_bytes=64 * 2**20)
        done = await inst.install(Package(registryType="pypi", identifier="wemcp-bulky", version="1.0.0"))
    assert disk_usage(done.root) > 3 * 2**20


async def test_an_install_over_the_time_limit_is_killed_by_pid(tmp_path):
    """An npm registry that accepts connections and never answers: npm would wait for minutes."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held: list[socket.socket] = []

    async def accept_forever() -> None:
        loop = asyncio.get_running_loop()
        silent.setblocking(False)
        while True:
            conn, _ = await loop.sock_accept(silent)
            held.append(conn)  # never answered

    acceptor = asyncio.create_task(accept_forever())
    registry = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    inst = installer(tmp_path, npm_registry=registry, timeout=10)
    try:
        with pytest.raises(InstallError) as err:
            await inst.install(Package(registryType="npm", identifier="wemcp-never-answers", version="1.0.0"))
        assert held, "npm never reached the registry: the test proves nothing"
    finally:
        acceptor.cancel()
        for conn in held:
            conn.close()
        silent.close()
    assert str(err.value) == ("the install took longer than 10 s (the deployer's install time limit, "
                              "install_timeout_seconds) and was stopped")
    assert processes_naming(str(tmp_path / "data")) == []  # npm and its children are gone
    assert not list((tmp_path / "data" / "pkgs" / ".tmp").iterdir())
