"""Operator commands of the agents service.

``wemcp-agents-admin rotate-key``: re-wrap every stored model-provider key's data key under the
active KEK, the first secret of ``WEMCP_AGENTS_PROVIDER_KEY_SECRET`` (``wemcp.common.sealing``; the
values themselves are not re-encrypted). Rotation: put the new secret first and the old one after it
(``new,old``) on the agents service, restart, run this, then drop the old secret.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.agents import repository
from wemcp.agents.config import get_settings
from wemcp.common.commands import command_parser, command_sessions
from wemcp.common.sealing import Keyring


async def rotate_provider_keys(sessions: async_sessionmaker[AsyncSession], ring: Keyring) -> int:
    """Re-wrap every sealed provider key under ``ring.active``; returns how many changed."""
    changed = 0
    async with sessions() as s, s.begin():
        for row in await repository.sealed_providers_for_update(s):
            assert row.api_key_sealed is not None
            new = ring.rewrap(row.api_key_sealed)
            if new != row.api_key_sealed:
                row.api_key_sealed = new
                changed += 1
    return changed


async def _main(args: argparse.Namespace) -> int:
    settings = get_settings()
    ring = settings.provider_keyring()
    if ring is None:
        print("wemcp-agents-admin: WEMCP_AGENTS_PROVIDER_KEY_SECRET is not set", file=sys.stderr)
        return 2
    async with command_sessions(settings.database_url) as sessions:
        if args.command == "rotate-key":
            print(f"re-wrapped {await rotate_provider_keys(sessions, ring)} provider keys under {ring.active}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser, sub = command_parser("wemcp-agents-admin", "WeMcp agents operator commands")
    sub.add_parser("rotate-key", help="re-wrap stored provider keys under the first provider-key secret")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
