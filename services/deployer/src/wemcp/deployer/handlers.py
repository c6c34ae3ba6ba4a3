"""Event handlers: record intent in the consumer's transaction (``service.record_*``: in which order
the three consumers' events apply); the worker does the rest after commit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.servers import ServerDisabled, ServerEnabled, ServerSubmitted
from wemcp.deployer import service


def _wake(session: AsyncSession) -> None:
    orch = service.current()
    if orch is not None:
        orch.wake_after_commit(session)


async def on_server_submitted(event: ServerSubmitted, session: AsyncSession) -> None:
    if await service.record_submission(session, event):
        _wake(session)


async def on_server_disabled(event: ServerDisabled, session: AsyncSession) -> None:
    if await service.record_disable(session, event):
        _wake(session)


async def on_server_enabled(event: ServerEnabled, session: AsyncSession) -> None:
    if await service.record_enable(session, event):
        _wake(session)
