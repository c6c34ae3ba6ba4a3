"""A deployer process for tests/security/test_sandbox.py, run as root or as an unprivileged uid.

It builds the deployer's local backend exactly as the service does (``LocalDeployer.from_settings``
with ``WEMCP_DEPLOYER_*`` settings: the sandbox probe, the bridge, the installer), deploys the hostile archive
(sandbox_attacker.py) through the local backend, calls its ``attack`` tool once and prints one JSON
line: ``{"mode", "deployer_uid", "text"}``, or ``{"refused": reason}`` when the deploy fails.

    python sandbox_deployer.py <archive file name in WEMCP_DEPLOYER_ARCHIVE_DIR> <kind> <arg>
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

from wemcp.deployer.backends.base import DeployError, Target
from wemcp.deployer.backends.local import LocalDeployer
from wemcp.deployer.config import Settings
from wemcp.deployer.spec import parse_spec


async def main(archive: str, kind: str, arg: str) -> dict[str, Any]:
    local = LocalDeployer.from_settings(Settings())
    spec = parse_spec({"archive": {"path": archive, "manifest": {"command": "server.py", "args": []}}})
    target = Target("attacker", uuid.uuid4(), spec)

    async def progress(name: str, detail: str | None = None) -> None:
        pass

    try:
        await local.deploy(target, progress)
    except DeployError as exc:
        return {"refused": exc.reason}
    try:
        child = await local.bridge.child_for(target.slug, {})
        reply = await child.request("tools/call", {"name": "attack", "arguments": {"kind": kind, "arg": arg}})
        return {"mode": local.bridge.caps.mode, "deployer_uid": os.getuid(),
                "text": reply["result"]["content"][0]["text"]}
    finally:
        await local.undeploy(target.slug)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
