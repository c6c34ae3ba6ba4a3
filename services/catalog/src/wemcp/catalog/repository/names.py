"""SQL of the naming rules (``names.py``, ``names_api.py``): handles, domain claims, and the
listings under a name."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.models import DomainClaim, Handle, Server

# ---- handles -------------------------------------------------------------------------------------


async def handle_of(s: AsyncSession, owner_id: uuid.UUID) -> str | None:
    """The handle given to ``owner_id``, if any."""
    return (await s.execute(select(Handle.handle).where(Handle.owner_id == owner_id))).scalar_one_or_none()


async def take_handle(s: AsyncSession, handle: str, owner_id: uuid.UUID) -> str | None:
    """Give ``handle`` to ``owner_id``; None when it is taken."""
    got: str | None = (
        await s.execute(
            pg_insert(Handle).values(handle=handle, owner_id=owner_id).on_conflict_do_nothing().returning(Handle.handle)
        )
    ).scalar_one_or_none()
    return got


# ---- domain claims -------------------------------------------------------------------------------


async def verified_claims(s: AsyncSession, owner_id: uuid.UUID, domains: list[str]) -> Sequence[DomainClaim]:
    """A user's verified claims on any of ``domains``."""
    return (
        (
            await s.execute(
                select(DomainClaim).where(
                    DomainClaim.owner_id == owner_id,
                    DomainClaim.domain.in_(domains),
                    DomainClaim.verified_at.is_not(None),
                )
            )
        )
        .scalars()
        .all()
    )


async def claims_of(s: AsyncSession, owner_id: uuid.UUID) -> Sequence[DomainClaim]:
    """A user's domain claims, in domain order."""
    return (
        (await s.execute(select(DomainClaim).where(DomainClaim.owner_id == owner_id).order_by(DomainClaim.domain)))
        .scalars()
        .all()
    )


async def claim_of(s: AsyncSession, owner_id: uuid.UUID, domain: str, *, lock: bool = False) -> DomainClaim | None:
    """A user's claim on ``domain`` (lower-cased), row-locked with ``lock``."""
    q = select(DomainClaim).where(DomainClaim.owner_id == owner_id, DomainClaim.domain == domain.lower())
    return (await s.execute(q.with_for_update() if lock else q)).scalar_one_or_none()


async def count_claims(s: AsyncSession, owner_id: uuid.UUID) -> int:
    return (
        await s.execute(select(func.count()).select_from(DomainClaim).where(DomainClaim.owner_id == owner_id))
    ).scalar_one()


async def save_claim(s: AsyncSession, claim: DomainClaim) -> DomainClaim:
    """Write a new or changed claim and read back what the database filled in (times)."""
    s.add(claim)
    await s.flush()
    await s.refresh(claim)
    return claim


async def delete_claim(s: AsyncSession, claim: DomainClaim) -> None:
    await s.delete(claim)


# ---- the listings under a name -------------------------------------------------------------------


async def name_holder(s: AsyncSession, name: str, owner_id: uuid.UUID, existing_id: uuid.UUID | None) -> Any:
    """A listing of ``name`` by someone other than ``owner_id`` (``existing_id`` left out): its
    slug and name_verification, or None."""
    q = select(Server.slug, Server.name_verification).where(
        Server.name == name, Server.owner_id.is_distinct_from(owner_id)
    )
    if existing_id is not None:
        q = q.where(Server.id != existing_id)
    return (await s.execute(q.limit(1))).first()


async def claimable(s: AsyncSession, name: str, user_id: uuid.UUID) -> list[Server]:
    """The listings of ``name`` not ``user_id``'s whose holders proved nothing, oldest first, row-locked."""
    return list(
        (
            await s.execute(
                select(Server)
                .where(
                    Server.name == name,
                    Server.owner_id.is_distinct_from(user_id),
                    or_(Server.name_verification.is_(None), Server.name_verification == "legacy"),
                )
                .order_by(Server.created_at)
                .with_for_update()
            )
        ).scalars()
    )


async def named(s: AsyncSession, name: str) -> list[Server]:
    """Every listing of ``name``, oldest first, row-locked."""
    return list(
        (
            await s.execute(select(Server).where(Server.name == name).order_by(Server.created_at).with_for_update())
        ).scalars()
    )
