"""SQL of the agents service: model providers and saved agents. Every function takes the caller's
session; transactions are the caller's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.agents.models import Agent, ModelProvider


async def sealed_providers_for_update(s: AsyncSession) -> Sequence[ModelProvider]:
    """The model providers with a stored API key, locked until the caller's transaction ends."""
    q = select(ModelProvider).where(ModelProvider.api_key_sealed.is_not(None)).with_for_update()
    return (await s.execute(q)).scalars().all()


async def provider_named(s: AsyncSession, name: str) -> bool:
    """Whether a model provider called ``name`` exists."""
    return (await s.execute(select(ModelProvider.id).where(ModelProvider.name == name))).first() is not None


async def providers(s: AsyncSession, *, enabled_only: bool = False) -> Sequence[ModelProvider]:
    """Model providers, oldest first (only the enabled ones with ``enabled_only``)."""
    q = select(ModelProvider)
    if enabled_only:
        q = q.where(ModelProvider.enabled.is_(True))
    return (await s.execute(q.order_by(ModelProvider.created_at))).scalars().all()


async def delete_provider(s: AsyncSession, pid: uuid.UUID) -> bool:
    """Remove a model provider; False when there is none with that id."""
    p = await s.get(ModelProvider, pid)
    if p is None:
        return False
    await s.delete(p)
    return True


async def agents_page(
    s: AsyncSession,
    owner_id: uuid.UUID,
    include_public: bool,
    page: int,
    page_size: int,
) -> tuple[Sequence[Agent], int]:
    """One page of ``owner_id``'s agents (and the public ones with ``include_public``), newest first,
    and their count."""
    cond = Agent.owner_id == owner_id
    if include_public:
        cond = cond | (Agent.visibility == "public")
    total = (await s.execute(select(func.count()).select_from(Agent).where(cond))).scalar_one()
    rows = (
        (
            await s.execute(
                select(Agent)
                .where(cond)
                .order_by(Agent.created_at.desc())
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        )
        .scalars()
        .all()
    )
    return rows, int(total)


def touch(agent: Agent) -> None:
    """Stamp ``updated_at`` with the database's ``now()`` when the caller's transaction flushes, whether
    or not another column changed."""
    agent.updated_at = func.now()
