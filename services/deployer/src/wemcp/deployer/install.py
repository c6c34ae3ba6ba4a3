"""Installing packages into isolated prefixes: one directory per ``registry/name@version``, built in
a temporary directory and renamed into place, so a half-finished install is never used and a second
deploy of the same version costs nothing (idempotent).

Installs run on the host, outside the sandbox, so they never run submitted code: Python packages
and their dependencies install from wheels only (``--no-build``: no build backend runs), npm never
runs lifecycle scripts (``--ignore-scripts``), and only plain registry requirements are installed
(``wemcp.common.requirements``: no options, paths, URLs or VCS references). Uploaded archives are
extracted with the same strict reader the catalog checked them with (``wemcp.common.archives``),
from the very bytes whose sha256 was checked."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import contextvars
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wemcp.common.archive_client import ArchiveClient, ArchiveFetchError, stored_file
from wemcp.common.archives import ArchiveLimits, ArchiveRefused, read_archive
from wemcp.common.logging import get_logger
from wemcp.common.requirements import DependencyRefused, check_package_json, check_requirement, parse_requirements_txt
from wemcp.common.trust import Issuer
from wemcp.deployer.sandbox import Failed, kill_tree
from wemcp.deployer.spec import Archive, Package

log = get_logger("wemcp.deployer.install")

MAX_ARCHIVE_BYTES = 50 * 1024 * 1024  # expanded; also the largest stored archive file read
MAX_ARCHIVE_FILES = 5000
ARCHIVE_LIMITS = ArchiveLimits(max_expanded=MAX_ARCHIVE_BYTES, max_entries=MAX_ARCHIVE_FILES)
NO_BUILD = "WeMcp installs wheels only: packages are not built on the host"
READER = "strict-1"  # wemcp.common.archives


class InstallError(Failed):
    """Installing a server's package or archive failed; ``str()`` is user-actionable, ``tail`` the
    installer's redacted output."""


@dataclass
class Installed:
    root: Path  # the read-only code root the sandbox sees
    argv: list[str]  # the command, before package arguments
    version: str | None
    cached: bool


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:120]


# Where the installers' output goes line by line while they run (the deployment's log, which
# GET /api/v1/deployments/{slug}/events streams); set per deployment task, unset elsewhere.
OUTPUT_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("install_output",
                                                                                          default=None)
WATCH_SECONDS = 1.0  # how often a running install's size is measured


async def _run(argv: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float,  # noqa: ASYNC109
               watch: Path | None = None, max_bytes: int | None = None) -> tuple[int, str]:
    """Run an install step in a session of its own, its output passed line by line to the
    deployment's log (``OUTPUT_SINK``). Over ``timeout`` seconds, or once ``watch`` (the prefix it
    fills) holds more than ``max_bytes`` on disk, the step and every process it started are killed by
    PID and :class:`InstallError` says which limit it hit."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd,
                                                start_new_session=True, limit=1 << 20)
    sink = OUTPUT_SINK.get()
    chunks: list[bytes] = []

    async def pump() -> None:
        assert proc.stdout is not None
        while True:
            try:
                chunk = await proc.stdout.readline()
            except ValueError:  # a line longer than the limit: take what is there
                chunk = await proc.stdout.read(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            if sink is not None:
                sink(chunk.decode("utf-8", "replace").rstrip("\r\n"))
        await proc.wait()

    talk = asyncio.ensure_future(pump())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    refusal = None
    while True:
        left = deadline - loop.time()
        if left <= 0:
            refusal = (f"the install took longer than {timeout:g} s (the deployer's install time limit, "
                       "install_timeout_seconds) and was stopped")
            break
        done, _ = await asyncio.wait([talk], timeout=min(WATCH_SECONDS, left))
        if done:
            break
        if watch is not None and max_bytes is not None and await asyncio.to_thread(disk_usage, watch) > max_bytes:
            refusal = _too_big(max_bytes)
            break
    if refusal is not None:
        await asyncio.to_thread(kill_tree, proc.pid)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(talk, 10)
        raise InstallError(refusal)
    talk.result()
    if watch is not None and max_bytes is not None and await asyncio.to_thread(disk_usage, watch) > max_bytes:
        raise InstallError(_too_big(max_bytes))
    return proc.returncode or 0, b"".join(chunks).decode("utf-8", "replace")


def _too_big(max_bytes: int) -> str:
    return (f"the installed server is larger than {max_bytes / 2**20:g} MiB on disk (the deployer's install size "
            "limit, install_max_bytes) and the install was stopped")


def disk_usage(root: Path) -> int:
    """Bytes on disk under ``root`` (each file once, however many hard links; symlinks not followed)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


class Installer:
    def __init__(self, data_dir: Path, *, archive_dir: Path, venv_python: str, npm_registry: str | None = None,
                 pip_index_url: str | None = None, timeout: float = 600.0, uv: str | None = None,
                 archive_source: str | None = None, signer: Issuer | None = None,
                 max_bytes: int = 1 << 30) -> None:
        self.data_dir = data_dir
        self.max_bytes = max_bytes  # on disk, per installed prefix (the shared caches are not counted)
        self.signer = signer  # the deployer's service credential for the catalog's internal route
        self.archive_dir = archive_dir
        # the catalog's internal archive endpoint: archives uploaded there are fetched on first use
        self.archive_source = archive_source.rstrip("/") if archive_source else None
        self.venv_python = venv_python
        self.npm_registry = npm_registry
        self.pip_index_url = pip_index_url
        self.timeout = timeout
        self.uv = uv or shutil.which("uv") or _sibling_uv()
        self.pkgs = data_dir / "pkgs"
        self.cache = data_dir / "cache"
        self._locks: dict[str, asyncio.Lock] = {}

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.cache / "home"),
               "npm_config_cache": str(self.cache / "npm"), "npm_config_update_notifier": "false",
               "npm_config_fund": "false", "npm_config_audit": "false",
               "UV_CACHE_DIR": str(self.cache / "uv"), "UV_NO_PROGRESS": "1", "UV_PYTHON_DOWNLOADS": "never"}
        if self.npm_registry:
            env["npm_config_registry"] = self.npm_registry
        if self.pip_index_url:
            env["UV_INDEX_URL"] = self.pip_index_url
        # Installs run on the deployer's own network path: keep its proxy and CA settings.
        for k, v in os.environ.items():
            if (k.lower() in ("http_proxy", "https_proxy", "no_proxy", "all_proxy") or "CA_CERT" in k
                    or k in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
                    or (k.startswith(("PIP_", "UV_", "npm_config_")) and k not in env)):
                env[k] = v
        userrc = Path.home() / ".npmrc"
        if userrc.exists() and "npm_config_userconfig" not in env:
            env["npm_config_userconfig"] = str(userrc)
        (self.cache / "home").mkdir(parents=True, exist_ok=True)
        return env

    def prefix_for(self, kind: str, name: str, version: str) -> Path:
        return self.pkgs / kind / f"{_safe(name)}@{_safe(version)}"

    async def install(self, pkg: Package) -> Installed:
        version = pkg.version if pkg.version and pkg.version != "latest" else None
        if version:
            final = self.prefix_for(pkg.registry_type, pkg.identifier, version)
            marker = final / ".wemcp.json"
            if marker.exists():
                meta = json.loads(marker.read_text())
                if pkg.registry_type == "pypi" and not meta.get("bytecode"):
                    await self._compile_once(final, marker, meta)
                return Installed(final, meta["argv"], meta["version"], cached=True)
        lock = self._locks.setdefault(f"{pkg.registry_type}:{pkg.identifier}:{version}", asyncio.Lock())
        async with lock:
            if version and (self.prefix_for(pkg.registry_type, pkg.identifier, version) / ".wemcp.json").exists():
                return await self.install(pkg)
            if pkg.registry_type == "pypi" and version:
                # venvs hard-code their own path: build in place; the marker, written last, makes it valid
                final = self.prefix_for("pypi", pkg.identifier, version)
                shutil.rmtree(final, ignore_errors=True)
                final.mkdir(parents=True)
                try:
                    resolved, argv_rel = await self._pypi(pkg, version, final)
                    await self._compile(final)
                except BaseException:
                    shutil.rmtree(final, ignore_errors=True)
                    raise
                argv = [a.replace("{ROOT}", str(final)) for a in argv_rel]
                _world_readable(final)
                (final / ".wemcp.json").write_text(json.dumps({"argv": argv, "version": resolved, "bytecode": True}))
                return Installed(final, argv, resolved, cached=False)
            tmp = self.pkgs / ".tmp" / uuid.uuid4().hex
            tmp.mkdir(parents=True)
            try:
                if pkg.registry_type == "npm":
                    resolved, argv_rel = await self._npm(pkg, version, tmp)
                else:
                    resolved, argv_rel = await self._pypi(pkg, version, tmp)
                final = self.prefix_for(pkg.registry_type, pkg.identifier, resolved)
                argv = [a.replace("{ROOT}", str(final)) for a in argv_rel]
                (tmp / ".wemcp.json").write_text(json.dumps({"argv": argv, "version": resolved}))
                final.parent.mkdir(parents=True, exist_ok=True)
                if (final / ".wemcp.json").exists():
                    return Installed(final, argv, resolved, cached=True)
                shutil.rmtree(final, ignore_errors=True)
                if pkg.registry_type == "pypi":
                    shutil.rmtree(tmp, ignore_errors=True)
                    return await self.install(pkg.model_copy(update={"version": resolved}))
                os.rename(tmp, final)
                _world_readable(final)
                return Installed(final, argv, resolved, cached=False)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    async def _compile(self, venv: Path) -> None:
        """Byte-compile a venv's packages at install time. The sandbox mounts the install root
        read-only, so a child can never cache bytecode and would compile every module it imports at
        each (cold) start: about half of a PyPI server's start-up CPU. Run by the *base* interpreter
        with ``-I -S``: no site module, so no ``.pth`` file of an installed package runs outside the
        sandbox (compileall compiles, it never imports what it compiles). Best effort: a file that
        does not compile is the server's problem at run time, not the install's."""
        code, out = await _run([self.venv_python, "-I", "-S", "-m", "compileall", "-q", "-j", "0",
                                str(venv / "lib")],
                               env=self._env(), timeout=self.timeout)
        if code != 0:
            log.info("bytecode_compile_incomplete", venv=str(venv), tail=_tail(out, 5))

    async def _compile_once(self, prefix: Path, marker: Path, meta: dict[str, Any]) -> None:
        """A venv installed before installs compiled bytecode: compile it once."""
        await self._compile(prefix)
        _world_readable(prefix)
        meta["bytecode"] = True
        marker.write_text(json.dumps(meta))  # noqa: ASYNC240 (a few bytes, once per old venv)

    async def _npm(self, pkg: Package, version: str | None, prefix: Path) -> tuple[str, list[str]]:
        npm = shutil.which("npm")
        if not npm:
            raise InstallError("npm is not installed on the deployer host")
        ref = f"{pkg.identifier}@{version or 'latest'}"
        code, out = await _run([npm, "install", "--prefix", str(prefix), "--no-save", "--omit=dev",
                                "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error",
                                ref],
                               env=self._env(), timeout=self.timeout, watch=prefix, max_bytes=self.max_bytes)
        if code != 0:
            raise InstallError(_npm_reason(pkg, version, out), _tail(out))
        pj = prefix / "node_modules" / pkg.identifier / "package.json"
        meta = json.loads(pj.read_text())
        bins = meta.get("bin") or {}
        if isinstance(bins, str):
            bins = {pkg.identifier.split("/")[-1]: bins}
        if not bins:
            raise InstallError(f"npm package {pkg.identifier}@{meta.get('version')} declares no executable "
                               "(package.json has no \"bin\"); it cannot be started as a stdio server")
        short = pkg.identifier.split("/")[-1]
        rel = bins.get(short) or bins.get(pkg.identifier) or next(iter(bins.values()))
        entry = f"{{ROOT}}/node_modules/{pkg.identifier}/{rel}"
        return meta["version"], [shutil.which("node") or "/usr/bin/node", entry]

    async def _venv(self, prefix: Path, requirements: list[str]) -> str:
        if not self.uv:
            raise InstallError("uv is not available on the deployer host")
        try:  # the catalog refused these already; a spec can reach the deployer by other routes
            requirements = [check_requirement(r) for r in requirements]
        except DependencyRefused as exc:
            raise InstallError(str(exc)) from None
        code, out = await _run([self.uv, "venv", "--python", self.venv_python, "--no-project", "-q", str(prefix)],
                               env=self._env(), timeout=self.timeout)
        if code != 0:
            raise InstallError("could not create a Python environment for the server", _tail(out))
        if requirements:
            # --no-build: wheels only, for the packages and every dependency (a build backend is code)
            code, out = await _run([self.uv, "pip", "install", "--python", str(prefix / "bin" / "python"),
                                    "--no-progress", "--no-build", "--", *requirements],
                                   env=self._env(), timeout=self.timeout, watch=prefix, max_bytes=self.max_bytes)
            if code != 0:
                raise InstallError(_pip_reason(requirements, out), _tail(out))
        return out

    async def _pypi(self, pkg: Package, version: str | None, prefix: Path) -> tuple[str, list[str]]:
        req = f"{pkg.identifier}=={version}" if version else pkg.identifier
        await self._venv(prefix, [req])
        base = re.sub(r"\[.*\]$", "", pkg.identifier)
        norm = re.sub(r"[-_.]+", "_", base).lower()
        dist = None
        for d in (prefix / "lib").glob("python*/site-packages/*.dist-info"):
            name, _, ver = d.name[: -len(".dist-info")].rpartition("-")
            if re.sub(r"[-_.]+", "_", name).lower() == norm:
                dist, resolved = d, ver
                break
        if dist is None:
            raise InstallError(f"{pkg.identifier} installed but its metadata was not found")
        scripts: dict[str, str] = {}
        ep = dist / "entry_points.txt"
        if ep.exists():
            cp = configparser.ConfigParser(interpolation=None)
            cp.read_string(ep.read_text())
            if cp.has_section("console_scripts"):
                scripts = dict(cp.items("console_scripts"))
        if not scripts:
            raise InstallError(f"PyPI package {pkg.identifier}=={resolved} declares no console script; "
                               "it cannot be started as a stdio server")
        script = base.lower() if base.lower() in scripts else next(iter(scripts))
        return resolved, [f"{{ROOT}}/bin/{script}"]

    # ------------------------------------------------------------------ source archives
    def _stored(self, sha256: str) -> Path | None:
        """The archive store's file for a digest, whichever of the accepted formats it is."""
        return stored_file(self.archive_dir, sha256)

    def archive_file(self, archive: Archive) -> Path:
        if archive.path:
            path = (self.archive_dir / archive.path).resolve()
            if self.archive_dir.resolve() not in path.parents:
                raise InstallError("archive.path must name a file inside the archive store")
        else:
            stored = self._stored(str(archive.sha256))
            if stored is None:
                raise InstallError(f"no uploaded archive with sha256 {archive.sha256}; upload it again")
            path = stored
        if not path.is_file():
            raise InstallError("the uploaded archive was not found; upload it again")
        return path

    def archive_client(self) -> ArchiveClient | None:
        """The typed client for the catalog's archives (``wemcp.common.archive_client``), None when no
        catalog is configured (only the local archive store is read)."""
        if self.archive_source is None:
            return None
        signer = self.signer
        return ArchiveClient(self.archive_source, max_bytes=MAX_ARCHIVE_BYTES,
                             credential=(lambda: signer.headers("catalog")) if signer is not None else None)

    async def fetch_archive(self, sha256: str) -> None:
        """Copy an archive uploaded to the catalog into the archive store by its content address: the
        client streams it (bounded), checks the bytes against the digest and writes it atomically."""
        client = self.archive_client()
        if client is None:
            return
        try:
            await client.fetch(sha256, self.archive_dir)
        except ArchiveFetchError as exc:
            raise InstallError(str(exc)) from None

    async def install_archive(self, archive: Archive) -> Installed:
        assert archive.manifest is not None  # the spec model fills it from runtime + entrypoint
        if archive.sha256 and not archive.path and self._stored(archive.sha256) is None:
            await self.fetch_archive(archive.sha256)
        src = self.archive_file(archive)
        if src.stat().st_size > MAX_ARCHIVE_BYTES:
            raise InstallError(f"the archive is larger than {MAX_ARCHIVE_BYTES // 2**20} MiB")
        # hashed and extracted from these same bytes: what is extracted is what the digest names
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if archive.sha256 and digest != archive.sha256:
            raise InstallError("the uploaded archive does not match its sha256; upload it again")
        # the reader's version is part of the key: prefixes extracted by the old, lenient one are not reused
        manifest_key = hashlib.sha256(f"{READER}:{archive.manifest.model_dump_json()}".encode()).hexdigest()[:12]
        final = self.pkgs / "archive" / f"{digest[:32]}-{manifest_key}"
        marker = final / ".wemcp.json"
        if marker.exists():
            meta = json.loads(marker.read_text())
            return Installed(Path(meta["cwd"]), meta["argv"], meta["version"], cached=True)
        lock = self._locks.setdefault(f"archive:{final.name}", asyncio.Lock())
        async with lock:
            if marker.exists():
                return await self.install_archive(archive)
            shutil.rmtree(final, ignore_errors=True)
            code_dir = final / "src"
            code_dir.mkdir(parents=True)
            try:
                try:
                    await asyncio.to_thread(read_archive, data, ARCHIVE_LIMITS, dest=code_dir)
                except ArchiveRefused as exc:
                    raise InstallError(f"the archive is refused: {exc}") from None
                m = archive.manifest
                if m.command in ("python", "python3"):
                    reqs = list(m.requirements)
                    if not reqs and (code_dir / "requirements.txt").is_file():
                        reqs = _archive_requirements(code_dir / "requirements.txt")
                    await self._venv(final / "venv", reqs)
                    await self._compile(final / "venv")
                    argv = [str(final / "venv" / "bin" / "python"), *m.args]
                elif m.command == "node":
                    if (code_dir / "package.json").is_file():
                        await self._npm_archive_deps(code_dir)
                    argv = [shutil.which("node") or "/usr/bin/node", *m.args]
                else:
                    exe = (code_dir / m.command).resolve()
                    if code_dir.resolve() not in exe.parents or not exe.is_file():
                        raise InstallError(f"manifest.command {m.command!r} is not a file in the archive")
                    exe.chmod(0o755)
                    argv = [str(exe), *m.args]
                marker.write_text(json.dumps({"argv": argv, "version": digest[:12], "cwd": str(code_dir)}))
                _world_readable(final)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
            return Installed(code_dir, argv, digest[:12], cached=False)


    async def _npm_archive_deps(self, code_dir: Path) -> None:
        """The archive's package.json dependencies, registry packages only, installed next to its
        code. npm runs in a directory holding nothing but a copy of package.json: a project
        ``.npmrc`` (which can name the registry or the git binary) and a lockfile's arbitrary
        ``resolved`` URLs never reach it; lifecycle scripts are off, the root's included."""
        try:
            manifest = json.loads((code_dir / "package.json").read_text("utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not an object")
            check_package_json(manifest)
        except DependencyRefused as exc:
            raise InstallError(str(exc)) from None
        except ValueError as exc:
            raise InstallError(f"the archive's package.json is not valid JSON ({str(exc)[:100]})") from None
        if not any(manifest.get(f) for f in ("dependencies", "optionalDependencies", "peerDependencies")):
            return  # nothing to install (node_modules the archive ships, if any, stays as checked)
        npm = shutil.which("npm") or "npm"
        work = self.pkgs / ".tmp" / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            (work / "package.json").write_text(json.dumps(manifest))
            code, out = await _run([npm, "install", "--prefix", str(work), "--omit=dev", "--ignore-scripts",
                                    "--no-package-lock", "--no-audit", "--no-fund", "--loglevel=error"],
                                   env=self._env(), cwd=work, timeout=self.timeout, watch=work,
                                   max_bytes=self.max_bytes)
            if code != 0:
                raise InstallError("npm install of the archive's dependencies failed", _tail(out))
            if (work / "node_modules").is_dir():
                shutil.rmtree(code_dir / "node_modules", ignore_errors=True)
                os.rename(work / "node_modules", code_dir / "node_modules")
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _archive_requirements(path: Path) -> list[str]:
    """The requirements of an archive's requirements.txt, each a plain registry requirement (they
    are passed to the installer as arguments, never as ``-r file``: no options, no includes)."""
    try:
        return parse_requirements_txt(path.read_text("utf-8"))
    except DependencyRefused as exc:
        raise InstallError(str(exc)) from None
    except UnicodeDecodeError:
        raise InstallError("the archive's requirements.txt is not UTF-8 text") from None


def _world_readable(root: Path) -> None:
    """The sandbox uid must read (never write) the installed code."""
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            with contextlib.suppress(OSError):
                if not os.path.islink(p):
                    os.chmod(p, (os.stat(p).st_mode | 0o555) & ~0o022)
        for f in filenames:
            p = os.path.join(dirpath, f)
            with contextlib.suppress(OSError):
                if not os.path.islink(p):
                    os.chmod(p, (os.stat(p).st_mode | 0o444) & ~0o022)
    with contextlib.suppress(OSError):
        os.chmod(root, 0o755)  # noqa: S103


def _tail(out: str, lines: int = 30) -> str:
    return "\n".join(out.strip().splitlines()[-lines:])


def _npm_reason(pkg: Package, version: str | None, out: str) -> str:
    ref = f"{pkg.identifier}@{version or 'latest'}"
    if "E404" in out or "404 Not Found" in out:
        return f"npm package {pkg.identifier} does not exist on the registry; check the package name"
    if "ETARGET" in out or "No matching version" in out:
        return f"npm package {pkg.identifier} has no version {version!r}; publish it or pick an existing version"
    if "ENOTFOUND" in out or "ECONNREFUSED" in out or "ETIMEDOUT" in out:
        return "the npm registry could not be reached; the deployment will succeed when it is back"
    return f"npm install {ref} failed; see the log tail"


def _pip_reason(reqs: list[str], out: str) -> str:
    low = out.lower()
    # uv --no-build: "Wheels are required for `x` because building from source is disabled ...",
    # "... attempted to build `x`", "x==1.0 has no usable wheels"
    m = (re.search(r"wheels are required for `([^`]+)`", out, re.I) or re.search(r"attempted to build `([^`]+)`", out)
         or re.search(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:==\S+)? has no usable wheels", out))
    if m:
        return (f"{m.group(1)} has no wheel for this platform; {NO_BUILD}. Pick a version (or a "
                "dependency) that publishes wheels")
    if "not found in the package registry" in low or ("no solution found" in low and "there is no version" not in low \
            and "was not found" in low):
        return f"PyPI package {reqs[0]} does not exist; check the package name"
    if "there is no version of" in low or "no matching distribution" in low:
        return f"{reqs[0]}: no such version on PyPI; pick an existing version"
    if "because" in low and "depends on" in low:
        return f"{reqs[0]}: its dependencies cannot be resolved; see the log tail"
    return f"installing {' '.join(reqs)} failed; see the log tail"


def _sibling_uv() -> str | None:
    import sys

    for cand in (Path(sys.executable).parent / "uv", Path(sys.prefix).parent / ".tools" / "bin" / "uv"):
        if cand.exists():
            return str(cand)
    return None


def describe(installed: Installed) -> dict[str, Any]:
    return {"root": str(installed.root), "argv": installed.argv, "version": installed.version}
