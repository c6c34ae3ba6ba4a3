"""SQL of the deployer's HTTP handlers: deployments by slug or id, and the lines of an attempt's log.
Every function takes the caller's session; transactions are the caller's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.deployer.models import Deployment, DeploymentLog


async def deployment_by_slug(s: AsyncSession, slug: str) -> Deployment | None:
    return (await s.execute(select(Deployment).where(Deployment.slug == slug))).scalar_one_or_none()


async def deployment(s: AsyncSession, dep_id: uuid.UUID) -> Deployment | None:
    return await s.get(Deployment, dep_id)


async def log_lines_after(s: AsyncSession, dep_id: uuid.UUID, generation: int, after_id: int,
                          limit: int) -> Sequence[DeploymentLog]:
    """Up to ``limit`` log lines of attempt ``generation`` of a deployment, after line ``after_id``, in order."""
    return (await s.execute(
        select(DeploymentLog).where(DeploymentLog.deployment_id == dep_id, DeploymentLog.generation == generation,
                                    DeploymentLog.id > after_id)
        .order_by(DeploymentLog.id).limit(limit))).scalars().all()
