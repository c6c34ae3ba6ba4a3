"""Operator commands (``wemcp-auth-admin`` or ``python -m wemcp.auth.admin``).

    create-superadmin [--login admin] [--email E] [--signin-link]
                                                    the first superadmin (or promote an existing
                                                    login) and a new platform API key, printed
                                                    alone on the last line of output (with
                                                    --signin-link, on a development stack, a
                                                    one-time console sign-in link on stderr first)
    signin-link [--login admin]                     (development stacks only) a one-time link that
                                                    signs that user in to the web console, valid
                                                    10 minutes, printed on stdout
    rotate-signing-key                              a new JWT signing key; the old one stays
                                                    published until its tokens expired
    rotate-kek                                      re-wrap every data key under WEMCP_AUTH_ACTIVE_KEK
    generate-kek [--id ID]                          print a new "id:base64" KEK for WEMCP_AUTH_KEKS

It reads the same settings as the service (DATABASE_URL, WEMCP_AUTH_KEKS ...). Exit codes: 0 ok,
2 configuration problem, 1 other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.auth import repository, service
from wemcp.auth.config import Settings, get_settings
from wemcp.auth.models import OAuthApp, OAuthConnection, SigningKey, User, VaultSecret, bus_tables
from wemcp.auth.tokens import create_signing_key
from wemcp.common.commands import command_parser, command_sessions
from wemcp.common.errors import ConfigError
from wemcp.common.events.users import UserRoleChanged
from wemcp.common.outbox import add_event
from wemcp.common.sealing import Keyring


async def create_superadmin(
    sessions: async_sessionmaker[AsyncSession], login: str, email: str | None
) -> tuple[User, str, bool]:
    async with sessions() as s, s.begin():
        user = await repository.user_by_login(s, login, for_update=True)
        created = user is None
        if user is None:
            user = await service.create_user(
                s, login=login, email=email, role="superadmin", provider="admin-cli"
            )
        elif user.role != "superadmin":
            previous, user.role = user.role, "superadmin"
            await add_event(
                s, bus_tables, UserRoleChanged(user_id=user.id, role="superadmin", previous_role=previous)
            )
        _, raw = await service.create_api_key(s, user.id, "admin-cli", None, None)
    return user, raw, created


async def rotate_kek(sessions: async_sessionmaker[AsyncSession], keyring: Keyring) -> int:
    """Re-wrap every sealed value's data key under the active KEK; returns how many changed."""
    changed = 0
    columns = (
        (VaultSecret, "sealed"),
        (OAuthConnection, "token_sealed"),
        (OAuthApp, "client_secret_sealed"),
        (SigningKey, "private_sealed"),
    )
    for model, column in columns:
        async with sessions() as s, s.begin():
            for row in await repository.all_rows_for_update(s, model):
                old = getattr(row, column)
                new = keyring.rewrap(old)
                if new != old:
                    setattr(row, column, new)
                    changed += 1
    return changed


async def _link(sessions: async_sessionmaker[AsyncSession], settings: Settings, user: User) -> str:
    from wemcp.auth.signin import mint

    async with sessions() as s, s.begin():
        raw = await mint(s, user)
    return f"{settings.public_url.rstrip('/')}/signin#token={raw}"


async def _main(args: argparse.Namespace) -> int:
    if args.command == "generate-kek":  # needs no settings: it is how production gets its first KEK
        print(Keyring.generate_spec(args.id))
        return 0
    settings = get_settings()
    keyring = Keyring.from_settings(settings.keks, settings.active_kek, settings.dev_kek_file)
    async with command_sessions(settings.database_url) as sessions:
        if args.command == "create-superadmin":
            user, raw, created = await create_superadmin(sessions, args.login, args.email)
            print(f"{'created' if created else 'found'} superadmin {user.login} ({user.id})", file=sys.stderr)
            if args.signin_link and settings.environment != "production":
                print(f"sign in to the console (once, within 10 minutes): {await _link(sessions, settings, user)}",
                      file=sys.stderr)
            print("the API key below is shown once; keep it safe", file=sys.stderr)
            print(raw)
        elif args.command == "signin-link":
            if settings.environment == "production":
                print("wemcp-auth-admin: sign-in links exist only on development stacks", file=sys.stderr)
                return 2
            async with sessions() as s:
                found = await repository.user_by_login(s, args.login)
            if found is None:
                print(f"wemcp-auth-admin: no user {args.login!r}", file=sys.stderr)
                return 1
            print(await _link(sessions, settings, found))
        elif args.command == "rotate-signing-key":
            async with sessions() as s, s.begin():
                kid = await create_signing_key(s, keyring)
            print(kid)
        elif args.command == "rotate-kek":
            print(f"re-wrapped {await rotate_kek(sessions, keyring)} values under {keyring.active}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser, sub = command_parser("wemcp-auth-admin", "WeMcp auth operator commands")
    p = sub.add_parser("create-superadmin")
    p.add_argument("--login", default="admin")
    p.add_argument("--email", default=None)
    p.add_argument("--signin-link", action="store_true", help="also print a one-time console sign-in link")
    link = sub.add_parser("signin-link")
    link.add_argument("--login", default="admin")
    sub.add_parser("rotate-signing-key")
    sub.add_parser("rotate-kek")
    g = sub.add_parser("generate-kek")
    g.add_argument("--id", default="k1")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except ConfigError as exc:
        print(f"wemcp-auth-admin: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
