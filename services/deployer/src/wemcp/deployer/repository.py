"""SQL of the deployer: deployments (by slug or id, the worker's claims) and the lines of an attempt's
log. Every function takes the caller's session; transactions are the caller's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.deployer.models import Deployment, DeploymentLog


async def deployment_by_slug(s: AsyncSession, slug: str, *, for_update: bool = False) -> Deployment | None:
    """The deployment of ``slug`` (locked until the caller's transaction ends with ``for_update``)."""
    q = select(Deployment).where(Deployment.slug == slug)
    return (await s.execute(q.with_for_update() if for_update else q)).scalar_one_or_none()


async def deployment(s: AsyncSession, dep_id: uuid.UUID) -> Deployment | None:
    return await s.get(Deployment, dep_id)


async def deployed_locally(s: AsyncSession) -> Sequence[Deployment]:
    """The deployments running on the local backend (their children start again on the next call)."""
    q = select(Deployment).where(Deployment.status == "deployed", Deployment.backend == "local")
    return (await s.execute(q)).scalars().all()


async def _claim(
    s: AsyncSession, owner: str, lease_seconds: int, status: str, which: str, returning: str
) -> Row[Any] | None:
    """Lease the least recently updated deployment that ``which`` picks to ``owner`` for ``lease_seconds``
    and set its ``status``; skips rows another worker holds. None when there is none."""
    return (
        await s.execute(
            text(
                f"UPDATE deployer.deployments SET status = '{status}', lease_owner = :o, "  # noqa: S608
                f"lease_until = now() + interval '{lease_seconds} seconds', updated_at = now() "
                f"WHERE id = (SELECT id FROM deployer.deployments WHERE {which} "
                f"ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, slug, {returning}"
            ),
            {"o": owner},
        )
    ).first()


async def claim_deploy(s: AsyncSession, owner: str, lease_seconds: int) -> Row[Any] | None:
    """A deployment to run (queued, or deploying under an expired lease), now ``deploying`` and
    leased to ``owner``: ``id, slug, generation``."""
    return await _claim(
        s,
        owner,
        lease_seconds,
        "deploying",
        "desired = 'running' AND (status = 'queued' OR (status = 'deploying' AND lease_until < now()))",
        "generation",
    )


async def claim_stop(s: AsyncSession, owner: str, lease_seconds: int) -> Row[Any] | None:
    """A disabled server to stop (anything but a deploy or stop another worker holds a live lease on),
    now ``stopping`` and leased to ``owner``: ``id, slug, backend``."""
    return await _claim(
        s,
        owner,
        lease_seconds,
        "stopping",
        "desired = 'stopped' AND "
        "(status IN ('queued', 'deployed', 'failed') OR (status IN ('deploying', 'stopping') "
        "AND (lease_until < now() OR lease_owner = :o)))",
        "backend",
    )


async def drop_logs_before(s: AsyncSession, dep_id: uuid.UUID, generation: int) -> None:
    """Remove the log lines of a deployment's attempts older than ``generation``."""
    await s.execute(
        delete(DeploymentLog).where(DeploymentLog.deployment_id == dep_id, DeploymentLog.generation < generation)
    )


async def add_log_lines(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append log lines (``deployment_id``, ``generation``, ``source``, ``line``) in one statement."""
    await s.execute(insert(DeploymentLog), rows)


async def log_lines_after(
    s: AsyncSession, dep_id: uuid.UUID, generation: int, after_id: int, limit: int
) -> Sequence[DeploymentLog]:
    """Up to ``limit`` log lines of attempt ``generation`` of a deployment, after line ``after_id``, in order."""
    return (
        (
            await s.execute(
                select(DeploymentLog)
                .where(
                    DeploymentLog.deployment_id == dep_id,
                    DeploymentLog.generation == generation,
                    DeploymentLog.id > after_id,
                )
                .order_by(DeploymentLog.id)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
