"""Running untrusted server code.

Two modes, chosen by a start-up probe (:func:`probe`):

- ``bwrap``: bubblewrap with every namespace unshared (network only when the spec asks), the system
  mounted read-only, the server's own root read-only, a private ``/tmp``, all capabilities dropped,
  ``--die-with-parent``.
- ``restricted``: a plain child with a cleared environment, rlimits (address space, CPU, processes,
  open files, no core files), its own session/process group, ``no_new_privs``, a parent-death
  signal; when the deployer runs as root it also gets a uid of its own (so it cannot read 0600
  files, write outside world-writable places or read another child's ``/proc/*/environ``) and,
  with the network off, an empty network namespace (loopback services are unreachable).

Both are killed with all their descendants (:func:`kill_tree`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
SYSTEM_RO = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ssl", "/etc/ca-certificates",
             "/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime", "/etc/resolv.conf", "/etc/hosts",
             "/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/usr/share/zoneinfo")


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 1024
    cpu_seconds: int = 3600
    max_processes: int = 64
    max_open_files: int = 256


@dataclass
class Capabilities:
    mode: str  # bwrap | restricted
    own_uid: bool  # can give each child a uid of its own
    netns: bool  # can put the child in an empty network namespace
    notes: list[str] = field(default_factory=list)


_libc = ctypes.CDLL(None, use_errno=True)


def _unshare_net() -> bool:
    return _libc.unshare(CLONE_NEWNET) == 0


def probe(requested: str = "auto") -> Capabilities:
    """What this host allows. Runs tiny children; takes a few milliseconds."""
    notes: list[str] = []
    root = os.geteuid() == 0
    netns = False
    if root:
        try:
            r = subprocess.run(["/bin/true"], preexec_fn=lambda: None if _unshare_net() else os._exit(3),
                               timeout=5, check=False)
            netns = r.returncode == 0
        except (OSError, subprocess.SubprocessError):
            netns = False
    bwrap = shutil.which("bwrap")
    if requested in ("auto", "bwrap") and bwrap:
        try:
            # As root, bubblewrap runs under the child's own uid (unprivileged user namespaces), so the
            # per-uid process limit and kill-by-uid apply too: probe it exactly that way.
            r = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "/bin/true"],
                               capture_output=True, timeout=5, check=False,
                               preexec_fn=_as_uid(PROBE_UID) if root else None)
            if r.returncode == 0:
                return Capabilities("bwrap", own_uid=root, netns=True, notes=notes)
            notes.append(f"bwrap present but failed: {r.stderr.decode(errors='replace').strip()[:200]}")
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"bwrap failed: {exc}")
    elif requested in ("auto", "bwrap"):
        notes.append("bwrap not installed (apt-get install bubblewrap)")
    if requested == "bwrap":
        raise RuntimeError("WEMCP_DEPLOYER_SANDBOX=bwrap but bubblewrap does not work here: " + "; ".join(notes))
    return Capabilities("restricted", own_uid=root, netns=netns, notes=notes)


PROBE_UID = 199999


def _as_uid(uid: int) -> Callable[[], None]:
    def become() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return become


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    preexec: Callable[[], None]


def build_launch(caps: Capabilities, argv: list[str], *, root: Path, home: Path, env: dict[str, str],
                 limits: Limits, network: bool, uid: int | None) -> Launch:
    """The command line and pre-exec hook that start ``argv`` confined. Pure apart from the hook."""
    base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home),
                "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
                "NODE_OPTIONS": f"--max-old-space-size={max(64, limits.memory_mb * 3 // 4)}"}
    full_env = {**base_env, **env}
    use_uid = uid if caps.own_uid else None  # bwrap too: it then runs unprivileged as that uid
    use_netns = caps.mode == "restricted" and caps.netns and not network

    def preexec() -> None:
        # Runs in the child between fork and exec: only async-signal-safe-ish, allocation-light calls.
        os.setsid()
        if use_netns and not _unshare_net():
            os._exit(126)
        as_bytes = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (as_bytes, as_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024 * 1024, 512 * 1024 * 1024))
        with contextlib.suppress(OSError):
            os.nice(5)
        if use_uid is not None:
            # NPROC counts per uid: with a uid of its own the limit is this child's alone.
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
            os.setgroups([])
            os.setgid(use_uid)
            os.setuid(use_uid)
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    if caps.mode != "bwrap":
        return Launch(list(argv), full_env, str(root), preexec)

    bw = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session", "--unshare-all",
          "--cap-drop", "ALL", "--clearenv"]
    if network:
        bw.append("--share-net")
    for p in SYSTEM_RO:
        bw += ["--ro-bind-try", p, p]
    bw += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind", str(root), str(root),  # noqa: S108
           "--bind", str(home), str(home), "--chdir", str(root)]
    for k, v in full_env.items():
        bw += ["--setenv", k, v]
    # the interpreter may live outside the system dirs (a venv's base python)
    for extra in _interpreter_dirs(argv, root):
        bw += ["--ro-bind-try", extra, extra]
    return Launch([*bw, "--", *argv], full_env, str(root), preexec)


def _interpreter_dirs(argv: list[str], root: Path) -> list[str]:
    """Read-only binds the command needs outside the code root: its own prefix (an archive's venv
    next to its source) and, through symlinks, the base interpreter's prefix."""
    out: list[str] = []
    if argv and os.path.isabs(argv[0]):
        for path in (os.path.abspath(argv[0]), os.path.realpath(argv[0])):
            prefix = os.path.dirname(os.path.dirname(path))
            inside = prefix == str(root) or prefix.startswith(str(root).rstrip("/") + "/")
            if not path.startswith(("/usr/", "/bin/", "/lib")) and not inside and prefix not in out:
                out.append(prefix)
    return out


def kill_tree(pid: int, *, uid: int | None = None, grace: float = 0.0) -> int:
    """Kill ``pid``, its process group and every descendant; with ``uid``, also every process of that
    uid (a child that called setsid() to escape its group is still caught). Returns how many."""
    victims: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        p = psutil.Process(pid)
        victims[p.pid] = p
        for c in p.children(recursive=True):
            victims[c.pid] = c
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    if uid is not None:
        for proc in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["uids"] and proc.info["uids"].real == uid:
                    victims[proc.pid] = proc
    for proc in victims.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if uid is not None:
        # a fork bomb may spawn between the scan and the kill: sweep until none is left
        for _ in range(50):
            left = [psutil.Process(pid) for pid in processes_of_uid(uid)]
            if not left:
                break
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
    return len(victims)


def processes_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is ``uid``."""
    out = []
    for p in psutil.process_iter(["uids", "status"]):
        if p.info["uids"] and p.info["uids"].real == uid and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p.pid)
    return out


def install_bwrap() -> int:
    """Opt-in: install bubblewrap with apt-get (root, Debian/Ubuntu) and report what the probe sees."""
    if shutil.which("bwrap") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            print("install bubblewrap with your package manager (needs root; e.g. apt-get install bubblewrap)")
            return 2
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "bubblewrap"]):
            r = subprocess.run(argv, env=env, check=False)
            if r.returncode != 0:
                print(f"{' '.join(argv)} failed with exit code {r.returncode}")
                return r.returncode
    caps = probe("auto")
    print(f"sandbox mode: {caps.mode}" + (f" ({'; '.join(caps.notes)})" if caps.notes else ""))
    return 0 if caps.mode == "bwrap" else 1


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["install-bwrap"]:
        sys.exit(install_bwrap())
    if sys.argv[1:] == ["probe"]:
        print(probe("auto"))
        sys.exit(0)
    sys.exit("usage: python -m wemcp.deployer.sandbox install-bwrap | probe")
