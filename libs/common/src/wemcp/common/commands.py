"""What the services' operator commands (``wemcp-auth-admin``, ``wemcp-agents-admin``) share: their
parser of subcommands and the database sessions of one run."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common.db import make_engine, make_session_factory


def command_parser(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    """The command's parser and its subcommands (one is required; its name lands in ``args.command``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    return parser, parser.add_subparsers(dest="command", required=True)


@asynccontextmanager
async def command_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions for one run of a command, on a pool of two connections, closed when it ends."""
    engine = make_engine(database_url, pool_size=2)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()
