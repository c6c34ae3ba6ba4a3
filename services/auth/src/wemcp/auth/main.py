"""Composition root of the auth service: `wemcp-auth` serves its HTTP API (public under /api/v1,
internal under /internal/auth) and relays its outbox in one process."""

from __future__ import annotations

import asyncio

from wemcp.auth.admin_api import admin_router
from wemcp.auth.api import internal, router
from wemcp.auth.config import Settings, get_settings
from wemcp.auth.connections import refresher
from wemcp.auth.deps import AuthState
from wemcp.auth.models import bus_tables, probe_receipts
from wemcp.auth.moderation import store_action
from wemcp.auth.signin import router as signin_router
from wemcp.auth.tokens import SigningKeys
from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.sealing import Keyring
from wemcp.common.service import Runtime, ServiceSpec, cancel_task, run_service

SUBSCRIPTIONS = [
    (AdminActionRecorded, store_action),  # the audit log: every service's admin actions
]


async def _open(runtime: Runtime) -> None:
    settings = runtime.settings
    assert isinstance(settings, Settings) and runtime.sessions is not None and runtime.redis is not None
    keyring = Keyring.from_settings(settings.keks, settings.active_kek, settings.dev_kek_file)
    keys = SigningKeys(runtime.sessions, keyring, settings)
    await keys.ensure()
    state = AuthState(settings, keyring, keys, runtime.sessions, runtime.redis)
    runtime.extras["auth"] = state
    runtime.extras["auth_refresher"] = asyncio.create_task(refresher(state), name="auth-connection-refresher")


async def _close(runtime: Runtime) -> None:
    await cancel_task(runtime.extras.pop("auth_refresher", None))


SPEC = ServiceSpec(name="auth", routers=[router, signin_router, admin_router, internal],
                   tables=bus_tables, probe_receipts=probe_receipts, subscriptions=SUBSCRIPTIONS,
                   uses_redis=True, on_start=[_open], on_stop=[_close])


def run() -> int:
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
