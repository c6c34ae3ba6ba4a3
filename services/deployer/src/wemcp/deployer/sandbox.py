"""Running untrusted server code — only where isolation holds (fail closed).

:func:`probe` runs once at start and picks the first mode that works here, by launching ``/bin/true``
with exactly the flags a server gets:

- ``bwrap``: bubblewrap, unprivileged (as root it runs under the child's own uid): new user, PID,
  network (empty: no network at all), IPC, UTS and cgroup namespaces, nested user namespaces disabled,
  a fresh ``/proc`` (no other process is visible), the system directories read-only, the server's
  install root read-only, its own run directory and a private ``/tmp`` the only writable places,
  nothing else of the host (the project's ``.data/`` — keys, secrets, databases — does not exist in
  there), all capabilities dropped, ``--die-with-parent``, an environment of an explicit allow-list
  plus the server's own inputs.
- ``restricted`` (root without bubblewrap): a uid of its own per child (it cannot read 0600 files nor
  another process's ``/proc/<pid>/environ``), an empty network namespace, a private mount namespace
  whose ``/proc`` hides every other uid's processes (``hidepid``; skipped where mounting is denied —
  the uid still guards ``environ``), ``no_new_privs``, a cleared environment.
- ``network``: a server that asked for network (``"network": true``) keeps its empty namespace
  (only its own loopback, brought up in ``restricted`` mode); a launcher in it hands a listening socket
  on its loopback to the platform's egress proxy before the server starts (:mod:`wemcp.deployer.egress`),
  and ``HTTP(S)_PROXY`` point there: the proxy is the one address it can reach.
- ``none``: neither holds (not root and no working bubblewrap). Nothing is hosted: :func:`build_launch`
  raises :class:`Unavailable` with :attr:`Capabilities.refusal`, the one line naming the fix. The
  deployer itself still starts (remote and OpenAPI servers need no sandbox).

Every mode also gets rlimits (address space, CPU, processes, open files, no core files), a session of
its own and a parent-death signal; all are killed with their descendants (:func:`kill_tree`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
SYSTEM_RO = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ssl", "/etc/ca-certificates",
             "/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime", "/etc/resolv.conf", "/etc/hosts",
             "/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/usr/share/zoneinfo")
FIX = ("install bubblewrap (make sandbox-tools, or apt-get install bubblewrap) or run the deployer as root; "
       "see README#isolation")
PROBE_UID = 199999
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40


class Failed(Exception):
    """A process run for a server (its installer, the server itself) failed: ``str()`` says why in
    words a user can act on, ``tail`` is the end of its (redacted) output."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


class Unavailable(RuntimeError):
    """No sandbox works here: nothing may be started. ``str()`` is the one-line refusal."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 1024
    cpu_seconds: int = 3600
    max_processes: int = 64
    max_open_files: int = 256


@dataclass
class Capabilities:
    """What :func:`probe` found. The service only ever uses probe's answer; tests and benchmarks build
    ``Capabilities("restricted", own_uid=False, netns=False)`` by hand to run a trusted child plainly."""

    mode: str  # bwrap | restricted | none
    own_uid: bool  # each child gets a uid of its own
    netns: bool  # each child gets an empty network namespace
    notes: list[str] = field(default_factory=list)
    bwrap: str = "bwrap"  # the bubblewrap binary (bwrap mode)
    hide_proc: bool = False  # restricted: a private /proc that shows no other uid's processes

    @property
    def refusal(self) -> str | None:
        """The one line the deployer logs at start and fails hosted deploys with; None when isolated."""
        if self.mode != "none":
            return None
        return f"wemcp-deployer: no working sandbox ({'; '.join(self.notes) or 'unknown reason'}): {FIX}"


_libc = ctypes.CDLL(None, use_errno=True)


def probe(requested: str = "auto", bwrap: str = "bwrap") -> Capabilities:
    """The first mode that actually works here (``requested`` narrows the choice). Runs one or two
    tiny children with the exact flags servers get; takes a few milliseconds."""
    notes: list[str] = []
    root = os.geteuid() == 0
    if requested in ("auto", "bwrap"):
        path = shutil.which(bwrap)
        if path is None:
            notes.append(f"bubblewrap not found at {bwrap}" if "/" in bwrap else f"{bwrap} is not installed")
        else:
            caps = Capabilities("bwrap", own_uid=root, netns=True, bwrap=path)
            error = _try(caps)
            if error is None:
                return caps
            notes.append(f"bubblewrap does not work here: {error}")
    if requested in ("auto", "restricted"):
        if root:
            caps = Capabilities("restricted", own_uid=True, netns=True, hide_proc=True)
            error = _try(caps)
            if error is not None:  # a container without mount rights: the uid alone guards /proc/<pid>/environ
                caps = Capabilities("restricted", own_uid=True, netns=True, notes=[f"/proc not private: {error}"])
                error = _try(caps)
            if error is None:
                return caps
            notes.append(f"no uid and network namespace of its own: {error}")
        elif requested == "restricted":
            notes.append("the restricted sandbox needs the deployer to run as root")
    return Capabilities("none", own_uid=False, netns=False, notes=notes)


def _try(caps: Capabilities) -> str | None:
    """Start ``/bin/true`` exactly as a server would be started; None, or why it failed."""
    base = Path(tempfile.mkdtemp(prefix="wemcp-probe-"))
    try:
        home = base / "home"
        home.mkdir()
        os.chmod(base, 0o755)  # noqa: S103  (the probe uid must reach its root)
        uid = PROBE_UID if caps.own_uid else None
        if uid is not None:
            os.chown(home, uid, uid)
        launch = build_launch(caps, ["/bin/true"], root=base, home=home, env={}, limits=Limits(), uid=uid)
        r = subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, preexec_fn=launch.preexec,
                           capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)[:200]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if r.returncode != 0:
        return (r.stderr.decode(errors="replace").strip() or f"exit code {r.returncode}")[:200]
    return None


def _as_uid(uid: int) -> Callable[[], None]:
    def become() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return become


@dataclass(frozen=True)
class Egress:
    """A server with network: ``fd`` is the child's end of the socketpair the launcher hands the
    proxy's listening socket over; ``python`` runs the launcher; ``node_preload`` makes Node's clients
    use the proxy (runtime/egress_preload.js, readable by the sandbox uid)."""

    fd: int
    python: str
    node_preload: str


def _loopback_up() -> bool:
    """Bring ``lo`` up in a fresh network namespace (the restricted mode's preexec, still root)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))
    except OSError:
        return False
    return True


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    preexec: Callable[[], None]


def _private_proc() -> bool:
    """In the child's own mount namespace: stop mount propagation to the host, then a /proc of its
    own that shows only its own uid's processes (``hidepid=invisible``, Linux 5.8+; else ``2``)."""
    if _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    return any(_libc.mount(b"proc", b"/proc", b"proc", flags, opt) == 0 for opt in (b"hidepid=invisible", b"hidepid=2"))


def build_launch(caps: Capabilities, argv: list[str], *, root: Path, home: Path, env: dict[str, str],
                 limits: Limits, uid: int | None, egress: Egress | None = None) -> Launch:
    """The command line and pre-exec hook that start ``argv`` confined. Pure apart from the hook.
    Raises :class:`Unavailable` where no sandbox works. With ``egress`` the launcher starts first
    (the caller passes ``egress.fd`` to the child)."""
    if caps.mode == "none":
        raise Unavailable(caps.refusal)
    if egress is not None and not caps.netns:
        raise Unavailable("network for a hosted server needs a network namespace of its own")
    server_argv = list(argv)
    # The whole environment a server gets: this fixed allow-list plus its own inputs (the spec's env and
    # the caller's values for declared variables). Nothing of the deployer's environment is inherited.
    base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home),
                "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
                "NODE_OPTIONS": f"--max-old-space-size={max(64, limits.memory_mb * 3 // 4)}"}
    if egress is not None:
        from wemcp.deployer.egress import LAUNCHER

        base_env["NODE_OPTIONS"] += f" --require {egress.node_preload}"
        base_env["NODE_USE_ENV_PROXY"] = "1"  # Node 22.21+/24 honour HTTP(S)_PROXY themselves too
        argv = [egress.python, "-c", LAUNCHER, *argv]
    full_env = {**base_env, **env}
    if egress is not None:
        full_env["WEMCP_EGRESS_FD"] = str(egress.fd)  # after the server's own env: not overridable
    use_uid = uid if caps.own_uid else None  # bwrap too: it then runs unprivileged as that uid
    namespaces = (CLONE_NEWNET if caps.netns else 0) | (CLONE_NEWNS if caps.hide_proc else 0)
    if caps.mode != "restricted":
        namespaces = 0  # bubblewrap makes its own

    def preexec() -> None:
        # Runs in the child between fork and exec: only async-signal-safe-ish, allocation-light calls.
        os.setsid()
        if namespaces and _libc.unshare(namespaces) != 0:
            os._exit(126)
        if caps.hide_proc and caps.mode == "restricted" and not _private_proc():
            os._exit(125)
        if egress is not None and caps.mode == "restricted" and not _loopback_up():
            os._exit(124)
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

    # --unshare-all: user, ipc, pid, net, uts, cgroup. --disable-userns (needs an explicit
    # --unshare-user): the server cannot make namespaces of its own (less kernel surface).
    bw = [caps.bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--unshare-user", "--disable-userns",
          "--cap-drop", "ALL", "--clearenv", "--hostname", "wemcp-sandbox"]
    for p in SYSTEM_RO:
        bw += ["--ro-bind-try", p, p]
    bw += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind", str(root), str(root),  # noqa: S108
           "--bind", str(home), str(home)]
    # the interpreter may live outside the system dirs (a venv's base python)
    for extra in _interpreter_dirs(server_argv, root) + (_interpreter_dirs([egress.python], root) if egress else []):
        bw += ["--ro-bind-try", extra, extra]
    if egress is not None:
        bw += ["--ro-bind", egress.node_preload, egress.node_preload]
    bw += ["--remount-ro", "/", "--chdir", str(root)]  # the sandbox's own root: nothing new appears in it
    for k, v in full_env.items():
        bw += ["--setenv", k, v]
    # bwrap itself gets an empty environment: only --setenv reaches the server
    return Launch([*bw, "--", *argv], {}, str(root), preexec)


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


if __name__ == "__main__":
    import sys

    from wemcp.deployer.config import Settings

    if sys.argv[1:] != ["probe"]:
        sys.exit("usage: python -m wemcp.deployer.sandbox probe   (what the deployer's start-up probe picks here)")
    settings = Settings()
    found = probe(settings.sandbox, settings.bwrap)
    print(found.refusal or f"sandbox mode: {found.mode}" + (f" ({'; '.join(found.notes)})" if found.notes else ""))
    sys.exit(0 if found.refusal is None else 1)
