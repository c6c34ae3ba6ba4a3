"""Issue 13, item 3: installs never execute submitted code on the host, and the archive the deployer
extracts is the one the catalog checked.

One test per attack. Every package index and registry here is served by the test on 127.0.0.1
(the deployer is pointed at it through its ``PIP_INDEX_URL`` / ``NPM_REGISTRY`` settings), and every
"attack" is a build backend or lifecycle script that writes a marker file: the marker must never
appear.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import textwrap
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from services.catalog.tests.catalog_helpers import as_user
from services.deployer.tests.deployer_testkit import running_deployer
from wemcp.common.events.servers import ServerSubmitted
from wemcp.common.service import running
from wemcp.devstack.testing import serve_app

# ---------------------------------------------------------------------------------------- fixtures

@pytest_asyncio.fixture
async def catalog(settings_for: Any, clean_db: None, clean_bus: None) -> AsyncIterator[httpx.AsyncClient]:
    from wemcp.catalog.config import Settings
    from wemcp.catalog.main import SPEC

    async with running(SPEC, settings_for(Settings)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as client:
            yield client


def installer(tmp_path: Path, **kw: Any) -> Any:
    """The deployer's installer on its own data directory (the code path deploys take)."""
    from wemcp.deployer.install import Installer

    (tmp_path / "archives").mkdir(exist_ok=True)
    return Installer(tmp_path / "data", archive_dir=tmp_path / "archives", venv_python="/usr/bin/python3", **kw)


class Hits:
    """A loopback HTTP server's request log."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def app(self, routes: list[Route]) -> Starlette:
        async def record(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.paths.append(scope["path"])
            await inner(scope, receive, send)

        inner = Starlette(routes=routes)
        return record  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- artefacts

def in_tree_backend(marker: Path) -> dict[str, str]:
    """A project whose PEP 517 build backend (in the tree itself) writes ``marker`` when imported:
    anything that builds it runs submitted code."""
    return {
        "pyproject.toml": textwrap.dedent("""\
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]
            """),
        "backend.py": f"import pathlib\npathlib.Path({str(marker)!r}).write_text('built on the host')\n"
                      "raise SystemExit('the probe backend ran')\n",
    }


def tgz(files: dict[str, str | bytes], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zipped(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def sdist(project: str, version: str, marker: Path) -> tuple[str, bytes]:
    dist = project.replace("-", "_")
    files: dict[str, str | bytes] = dict(in_tree_backend(marker))
    files["PKG-INFO"] = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
    files["pyproject.toml"] += f'[project]\nname = "{project}"\nversion = "{version}"\n'
    return f"{dist}-{version}.tar.gz", tgz(files, prefix=f"{dist}-{version}/")


def wheel(project: str, version: str, requires: list[str]) -> tuple[str, bytes]:
    dist = project.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": "def main():\n    pass\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
                            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[console_scripts]\n{project} = {dist}:main\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record
    return f"{dist}-{version}-py3-none-any.whl", zipped(files)


@asynccontextmanager
async def simple_index(dists: dict[str, list[tuple[str, bytes]]]) -> AsyncIterator[tuple[str, Hits]]:
    """A PEP 503 simple index on loopback: project -> [(file name, bytes)]."""
    hits = Hits()
    files = {fname: data for entries in dists.values() for fname, data in entries}

    async def project(request: Request) -> Response:
        entries = dists.get(request.path_params["name"])
        if entries is None:
            return Response(status_code=404)
        links = "".join(f'<a href="/files/{f}#sha256={hashlib.sha256(d).hexdigest()}">{f}</a>\n' for f, d in entries)
        return HTMLResponse(f"<!DOCTYPE html><html><body>{links}</body></html>")

    async def file(request: Request) -> Response:
        data = files.get(request.path_params["fname"])
        return Response(data, media_type="application/octet-stream") if data else Response(status_code=404)

    app = hits.app([Route("/simple/{name}/", project), Route("/files/{fname}", file)])
    async with serve_app(app) as url:
        yield f"{url}/simple", hits


def python_archive_manifest(name: str) -> dict[str, Any]:
    return {"name": f"io.github.attacker/{name}", "version": "1.0.0", "runtime": "python", "entrypoint": "server.py"}


async def upload(catalog: httpx.AsyncClient, data: bytes, manifest: dict[str, Any], fname: str) -> httpx.Response:
    return await catalog.post("/api/v1/servers/archive", headers=as_user(),
                              data={"manifest": json.dumps(manifest)},
                              files={"archive": (fname, data, "application/octet-stream")})


def assert_problem_422(r: httpx.Response, *needles: str) -> dict[str, Any]:
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])
    return body


def store(tmp_path: Path, data: bytes, ext: str = ".tar.gz") -> str:
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "archives").mkdir(exist_ok=True)
    (tmp_path / "archives" / f"{digest}{ext}").write_bytes(data)
    return digest


# ---------------------------------------------------------------------------------------- attacks

async def test_sdist_only_package_is_never_built_on_the_host(settings_for, infra, clean_db, clean_bus, tmp_path):
    """A PyPI package (or a dependency of one) that has only an sdist: building it would run its build
    backend as the deployer's user. The deploy fails naming the package; the backend never runs."""
    tag = uuid.uuid4().hex[:8]
    top, app, dep = f"probe-sdist-{tag}", f"probe-app-{tag}", f"probe-dep-{tag}"
    markers = {top: tmp_path / "built-top", dep: tmp_path / "built-dep"}
    dists = {top: [sdist(top, "1.0.0", markers[top])],
             app: [wheel(app, "1.0.0", [f"{dep}>=1"])],
             dep: [sdist(dep, "1.0.0", markers[dep])]}
    async with simple_index(dists) as (index, hits), \
            running_deployer(settings_for, infra, tmp_path, pip_index_url=index) as h:
        for slug, project, culprit in (("sdist-top", top, top), ("sdist-dep", app, dep)):
            spec = {"packages": [{"registryType": "pypi", "identifier": project, "version": "1.0.0"}]}
            await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug=slug, name=slug, spec=spec))
            d = await h.until_status(slug, "failed", "deployed")
            assert not markers[culprit].exists(), f"the build backend of {culprit} ran on the host"
            assert d["status"] == "failed", d
            failed = [e for e in await h.outbox("server.deploy_failed") if e["slug"] == slug]
            assert len(failed) == 1, failed
            reason = failed[0]["reason"]
            assert culprit in reason and "not built on the host" in reason, reason
        assert any(p.startswith(f"/simple/{dep}") for p in hits.paths), hits.paths  # the index was really used


async def test_requirements_path_or_option_line_refused(catalog, tmp_path):
    """requirements.txt lines that are installer options or paths (an in-tree build, another index,
    nested files): 422 at submission naming the line, and refused again by the deployer before any
    installer runs."""
    marker = tmp_path / "built-in-tree"
    lines = ["./probe", ".", "-e ./probe", "-e .", "-r extra.txt", "-c constraints.txt",
             "--index-url http://127.0.0.1:9/simple", "--extra-index-url http://127.0.0.1:9/simple",
             "-f ./wheels", "--find-links=./wheels", "--trusted-host 127.0.0.1", "file:probe",
             f"{tmp_path}/probe", "probe-1.0.0.tar.gz"]
    for line in lines:
        files = {"server.py": "print('hi')\n", "requirements.txt": f"mcp==2.3.0\n{line}\n",
                 "extra.txt": "./probe\n", "constraints.txt": "mcp==2.3.0\n",
                 **{f"probe/{k}": v for k, v in in_tree_backend(marker).items()}, **in_tree_backend(marker)}
        data = tgz(files)
        body = assert_problem_422(await upload(catalog, data, python_archive_manifest("inplace"), "src.tar.gz"),
                                  "requirements.txt line 2", line)
        assert body["errors"][0]["type"] == "unsafe_requirement", body

        inst = installer(tmp_path)
        digest = store(tmp_path, data)
        from wemcp.deployer.install import InstallError
        from wemcp.deployer.spec import Archive

        with pytest.raises(InstallError) as err:
            await inst.install_archive(Archive.model_validate(
                {"sha256": digest, "runtime": "python", "entrypoint": "server.py"}))
        assert "requirements.txt line 2" in str(err.value) and line in str(err.value), str(err.value)
        assert not marker.exists(), f"{line!r}: the in-tree build backend ran on the host"


async def test_requirements_url_or_vcs_line_refused(catalog, tmp_path):
    """URL and VCS requirement lines (the host would fetch anything, and build what it fetched): 422
    at submission naming the line; the deployer refuses them too and never contacts the URL."""
    hits = Hits()
    async with serve_app(hits.app([])) as url:
        lines = [f"git+{url}/probe.git", f"probe @ git+{url}/probe.git", f"probe @ {url}/probe-1.0-py3-none-any.whl",
                 f"{url}/probe-1.0.tar.gz", f"hg+{url}/probe", f"probe[x] @ {url}/probe.zip ; python_version > '3'"]
        for line in lines:
            data = tgz({"server.py": "print('hi')\n", "requirements.txt": f"mcp==2.3.0\n{line}\n"})
            body = assert_problem_422(await upload(catalog, data, python_archive_manifest("urls"), "src.tar.gz"),
                                      "requirements.txt line 2", line)
            assert body["errors"][0]["type"] == "unsafe_requirement", body

            from wemcp.deployer.install import InstallError
            from wemcp.deployer.spec import Archive

            digest = store(tmp_path, data)
            with pytest.raises(InstallError) as err:
                await installer(tmp_path).install_archive(Archive.model_validate(
                    {"sha256": digest, "runtime": "python", "entrypoint": "server.py"}))
            assert "requirements.txt line 2" in str(err.value) and line in str(err.value), str(err.value)
        # the deployer's own manifest shape is checked the same way
        from wemcp.deployer.spec import SpecError, parse_spec

        with pytest.raises(SpecError, match="installs from a URL"):
            parse_spec({"archive": {"sha256": "0" * 64, "manifest": {
                "command": "python", "args": ["server.py"], "requirements": [f"probe @ {url}/p.whl"]}}})
    assert hits.paths == [], f"the host fetched submitted URLs: {hits.paths}"


def npm_package(name: str, version: str, markers: Path) -> bytes:
    """An npm package tarball whose every install-time lifecycle script writes a marker."""
    scripts = {s: f"node mark.js {s}" for s in ("preinstall", "install", "postinstall", "prepare", "prepublish")}
    pj = {"name": name, "version": version, "bin": {name: "index.js"}, "scripts": scripts}
    mark = f"require('fs').writeFileSync(require('path').join({str(markers)!r}, process.argv[2]), 'ran')\n"
    return tgz({"package.json": json.dumps(pj), "index.js": "#!/usr/bin/env node\n", "mark.js": mark},
               prefix="package/")


@asynccontextmanager
async def npm_registry(packages: dict[str, tuple[str, bytes]]) -> AsyncIterator[tuple[str, Hits]]:
    """A loopback npm registry: name -> (version, tarball)."""
    hits = Hits()
    base: list[str] = []

    async def packument(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in packages:
            return JSONResponse({"error": "Not found"}, status_code=404)
        version, data = packages[name]
        meta = json.loads(tarfile.open(fileobj=io.BytesIO(data)).extractfile("package/package.json").read())  # type: ignore[union-attr]
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        meta["dist"] = {"tarball": f"{base[0]}/tarballs/{name}-{version}.tgz", "integrity": integrity,
                        "shasum": hashlib.sha1(data).hexdigest()}
        return JSONResponse({"name": name, "dist-tags": {"latest": version}, "versions": {version: meta}})

    async def tarball(request: Request) -> Response:
        for name, (version, data) in packages.items():
            if request.path_params["fname"] == f"{name}-{version}.tgz":
                return Response(data, media_type="application/octet-stream")
        return Response(status_code=404)

    app = hits.app([Route("/tarballs/{fname}", tarball), Route("/{name}", packument)])
    async with serve_app(app) as url:
        base.append(url)
        yield url, hits


async def test_npm_lifecycle_scripts_never_run_on_the_host(tmp_path):
    """preinstall/install/postinstall/prepare of a registry package, of its dependencies and of an
    uploaded archive's own package.json: none runs during the deployer's npm installs."""
    from wemcp.deployer.spec import Archive, Package

    markers = tmp_path / "markers"
    markers.mkdir()
    name = f"wemcp-lifecycle-probe-{uuid.uuid4().hex[:8]}"
    async with npm_registry({name: ("1.0.0", npm_package(name, "1.0.0", markers))}) as (registry, hits):
        inst = installer(tmp_path, npm_registry=registry)
        got = await inst.install(Package.model_validate({"registryType": "npm", "identifier": name,
                                                          "version": "1.0.0"}))
        assert (got.root / "node_modules" / name / "mark.js").exists()  # really installed from the registry
        assert any(p.startswith("/tarballs/") for p in hits.paths), hits.paths

        own = {"name": "archive-app", "version": "1.0.0", "dependencies": {name: "1.0.0"},
               "scripts": {s: f"node {markers}/../mark-archive.js {s}" for s in
                           ("preinstall", "install", "postinstall", "prepare", "prepublish")}}
        (tmp_path / "mark-archive.js").write_text(
            f"require('fs').writeFileSync(require('path').join({str(markers)!r}, 'archive-' + process.argv[2]), "
            "'ran')\n")
        digest = store(tmp_path, tgz({"package.json": json.dumps(own), "index.js": "console.log(1)\n"}))
        got = await inst.install_archive(Archive.model_validate({"sha256": digest, "runtime": "node",
                                                                  "entrypoint": "index.js"}))
        assert (got.root / "node_modules" / name / "mark.js").exists()
    assert sorted(p.name for p in markers.iterdir()) == [], "an npm lifecycle script ran on the host"


def polyglots() -> list[tuple[str, bytes, str]]:
    checked = tgz({"server.py": "print('the reviewed server')\n"})
    smuggled = zipped({"server.py": "print('the smuggled server')\n"})
    return [
        ("tar.gz + zip appended", checked + smuggled, "polyglot"),
        ("zip + tar.gz appended", smuggled + checked, "trailing_data"),
        ("tar.gz + junk", checked + b"\0" * 512 + b"not gzip", "trailing_data"),
    ]


async def test_archive_polyglot_refused_at_submission_and_extraction(catalog, tmp_path):
    """A file that reads as two archives (or hides data beside its entries) is refused with 422 at
    submission and refused again by the deployer, so what runs is what was checked."""
    from wemcp.deployer.install import InstallError
    from wemcp.deployer.spec import Archive

    manifest = python_archive_manifest("polyglot")
    for what, data, kind in polyglots():
        body = assert_problem_422(await upload(catalog, data, manifest, "src.tar.gz"))
        assert body["errors"][0]["type"] == kind, (what, body)

        digest = store(tmp_path, data)
        inst = installer(tmp_path)
        with pytest.raises(InstallError) as err:
            await inst.install_archive(Archive.model_validate(
                {"sha256": digest, "manifest": {"command": "python", "args": ["server.py"]}}))
        assert {"polyglot": "polyglot", "trailing_data": "other data"}[kind] in str(err.value), (what, str(err.value))
        extracted = list((tmp_path / "data").rglob("server.py"))
        assert extracted == [], (what, extracted)


async def test_bytecode_compile_runs_no_code_of_the_package_on_the_host(tmp_path):
    """Installs byte-compile the venv (cold starts, issue 15 part 5). A ``.pth`` file in a wheel runs
    whenever an interpreter's ``site`` reads that venv: compiling must not (the base interpreter with
    ``-I -S``); the package's modules are compiled, never imported."""
    from wemcp.deployer.spec import parse_spec

    tag = uuid.uuid4().hex[:8]
    project = f"probe-pth-{tag}"
    dist = project.replace("-", "_")
    marker = tmp_path / "pth-ran"
    name, data = wheel(project, "1.0.0", [])
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        files = {n: z.read(n).decode() for n in z.namelist()}
    files[f"{dist}_hook.pth"] = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n"
    files[f"{dist}/__init__.py"] = (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
                                    "def main():\n    pass\n")
    info = f"{dist}-1.0.0.dist-info"
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files if n != f"{info}/RECORD") + f"{info}/RECORD,,\n"
    async with simple_index({project: [(name, zipped(files))]}) as (index, hits):
        inst = installer(tmp_path, pip_index_url=index)
        spec = parse_spec({"packages": [{"registryType": "pypi", "identifier": project, "version": "1.0.0"}]})
        assert spec.package is not None
        installed = await inst.install(spec.package)
    assert any(p.startswith(f"/simple/{project}") for p in hits.paths), hits.paths
    assert not marker.exists(), f"package code ran on the host: {marker.read_text()}"
    site = next(Path(installed.root).glob("lib/python*/site-packages"))
    assert list((site / dist / "__pycache__").glob("__init__.*.pyc")), "the package was not byte-compiled"
