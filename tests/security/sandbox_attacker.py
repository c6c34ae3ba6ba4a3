"""A hostile hosted stdio MCP server (standard library only) for tests/security/test_sandbox.py,
which ships the egress tests' server (services/deployer/tests/egress/client_server.py) beside it for
its stdio loop (``serve``).

Its one tool, ``attack``, does what submitted code would try once it runs: read a file (another
process's /proc/<pid>/environ, the platform's key file), connect to a loopback port, report who it
runs as. The answer is plain text; the tests decide whether the attempt got through.
"""

import json
import os
import socket

from client_server import serve  # shipped beside this file (test_sandbox.py)


def attack(kind: str, arg: str) -> str:
    if kind == "read":
        try:
            with open(arg, "rb") as f:
                return "READ " + f.read().decode("latin-1")
        except OSError as exc:
            return f"DENIED {type(exc).__name__}: {exc}"
    if kind == "connect":
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect(("127.0.0.1", int(arg)))
            return "CONNECTED"
        except OSError as exc:
            return f"DENIED {type(exc).__name__}: {exc}"
        finally:
            s.close()
    if kind == "identity":
        with open("/proc/self/uid_map") as f:
            uid_map = " ".join(f.read().split())
        return json.dumps({"uid": os.getuid(), "uid_map": uid_map, "pid": os.getpid()})
    return "unknown attack"


if __name__ == "__main__":
    serve("attacker", lambda args: attack(args["kind"], str(args["arg"])))
