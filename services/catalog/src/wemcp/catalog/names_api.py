"""HTTP API of the naming rules (names.py): a user's namespaces, domain proofs, claiming a name whose
holder proved nothing, and an admin's transfer of a name. Behind the gateway: ``/api/v1/names/...``
and ``/api/v1/servers/{slug}/claim``."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, StringConstraints

from wemcp.catalog import names, repository
from wemcp.catalog.config import Settings
from wemcp.catalog.deps import Names, Sessions
from wemcp.catalog.models import DomainClaim
from wemcp.catalog.normalize import field_error
from wemcp.catalog.schemas import (
    NAME_RE,
    DomainClaimList,
    DomainClaimRead,
    MyNamespaces,
    NameClaimed,
    NameTransferred,
)
from wemcp.common.db import transaction
from wemcp.common.errors import Conflict, NotFound, ServiceUnavailable
from wemcp.common.identity import AdminUser, CurrentUser

router = APIRouter(prefix="/api/v1", tags=["names"])
MAX_CLAIMS_PER_USER = 50


class DomainIn(BaseModel):
    domain: Annotated[str, StringConstraints(min_length=3, max_length=253)]


class VerifyIn(BaseModel):
    method: Literal["dns", "http"]


class TransferIn(BaseModel):
    name: Annotated[str, StringConstraints(pattern=NAME_RE, max_length=200)]
    to_user_id: UUID
    reason: Annotated[str, StringConstraints(max_length=500)] | None = Field(default=None)


def _claim_out(c: DomainClaim, settings: Settings) -> dict[str, Any]:
    record = names.PROOF_PREFIX + c.token
    return {
        "domain": c.domain, "namespace": names.domain_namespace(c.domain), "verified": c.verified_at is not None,
        "method": c.method, "verified_at": c.verified_at.isoformat() if c.verified_at else None,
        "created_at": c.created_at.isoformat() if c.created_at else None,
        "covers": ([f"{names.domain_namespace(c.domain)}/*"]
                   + ([f"{names.domain_namespace(c.domain)}.*/*"] if c.method == "dns" else [])) if c.method else [],
        "proof": {"value": record,
                  "dns": f"a TXT record on {c.domain} with the value {record} (covers its subdomains too)",
                  "http": f"{settings.domain_proof_url.format(domain=c.domain)} serving a line {record} "
                          "(covers that host only)"},
    }


@router.get("/names/mine", response_model=MyNamespaces)
async def my_namespaces(who: CurrentUser, ctx: Names, sessions: Sessions) -> dict[str, Any]:
    """The namespaces the caller may publish under: their own platform namespace, their linked
    GitHub login (``io.github.<login>``; organisations they belong to are checked per submission;
    ``null`` when auth cannot be asked right now) and their domain claims."""
    async with transaction(sessions) as s:
        handle = await names.handle_of(s, who)
        claims = await repository.claims_of(s, who.user_id)
    github: list[dict[str, str]] | None
    try:
        user = await names.linked_accounts(ctx, who.user_id)
        github = [{"login": i["login"], "namespace": f"io.github.{str(i['login']).lower()}"}
                  for i in (user or {}).get("identities", []) if i.get("provider") == "github" and i.get("login")]
    except ServiceUnavailable:  # the rest of the answer does not need auth
        github = None
    return {"handle": handle, "platform_namespace": f"{ctx.settings.platform_namespace}.{handle}", "github": github,
            "domains": [_claim_out(c, ctx.settings) for c in claims]}


@router.get("/names/domains", response_model=DomainClaimList)
async def list_domains(who: CurrentUser, ctx: Names, sessions: Sessions) -> dict[str, Any]:
    async with sessions() as s:
        claims = await repository.claims_of(s, who.user_id)
    return {"items": [_claim_out(c, ctx.settings) for c in claims]}


@router.post("/names/domains", status_code=201, response_model=DomainClaimRead)
async def add_domain(body: DomainIn, who: CurrentUser, ctx: Names, sessions: Sessions) -> dict[str, Any]:
    """Start proving a domain: answers the token to publish (DNS TXT or the well-known file). The
    same domain again answers the same claim."""
    domain = names.check_domain(body.domain, ctx.settings)
    async with transaction(sessions) as s:
        claim = await repository.claim_of(s, who.user_id, domain)
        if claim is None:
            count = await repository.count_claims(s, who.user_id)
            if count >= MAX_CLAIMS_PER_USER:
                raise Conflict(f"you have {count} domain claims, the most allowed; delete one first")
            claim = await repository.save_claim(s, DomainClaim(owner_id=who.user_id, domain=domain,
                                                               token=secrets.token_urlsafe(24)))
        return _claim_out(claim, ctx.settings)


async def _own_claim(s: Any, who: Any, domain: str, *, lock: bool = False) -> DomainClaim:
    claim = await repository.claim_of(s, who.user_id, domain, lock=lock)
    if claim is None:  # another user's claim is not told apart from none
        raise NotFound(f"you have no claim on {domain!r}")
    return claim


@router.post("/names/domains/{domain}/verify", response_model=DomainClaimRead)
async def verify_domain(domain: str, body: VerifyIn, who: CurrentUser, ctx: Names,
                        sessions: Sessions) -> dict[str, Any]:
    """Look for the claim's token now (DNS TXT record or the HTTP well-known file). 422
    ``proof_not_found`` saying what was looked at, when it is not there."""
    settings = ctx.settings
    async with sessions() as s:
        claim = await _own_claim(s, who, domain)
    found, looked = await names.verify_claim(settings, claim, body.method)  # no transaction held meanwhile
    async with transaction(sessions) as s:
        claim = await _own_claim(s, who, domain, lock=True)
        claim.checked_at = repository.now()
        if found:
            claim.method, claim.verified_at = body.method, repository.now()
        claim = await repository.save_claim(s, claim)
        out = _claim_out(claim, settings)
    if not found:
        raise field_error("method", f"{names.PROOF_PREFIX}{claim.token} was not found ({looked})", "proof_not_found")
    return out


@router.delete("/names/domains/{domain}", status_code=204)
async def delete_domain(domain: str, who: CurrentUser, sessions: Sessions) -> Response:
    """Give up a domain claim: names already listed under it stay (as they are); new ones need the
    proof again."""
    async with transaction(sessions) as s:
        await repository.delete_claim(s, await _own_claim(s, who, domain, lock=True))
    return Response(status_code=204)


@router.post("/servers/{slug}/claim", response_model=NameClaimed)
async def claim_server(slug: str, who: CurrentUser, ctx: Names, sessions: Sessions) -> dict[str, Any]:
    """Take the listings under a name whose holder proved nothing (crawled, owner-less rows; rows
    listed before the naming rules), when the caller proves its namespace."""
    async with transaction(sessions) as s:
        rows, method = await names.claim(s, slug, who, ctx)
    return {"name": rows[0].name if rows else None, "slugs": [r.slug for r in rows], "method": method,
            "verified": method in names.VERIFIED}


@router.post("/names/transfer", response_model=NameTransferred)
async def transfer_name(body: TransferIn, who: AdminUser, ctx: Names, sessions: Sessions) -> dict[str, Any]:
    """An admin gives every listing under a name to another user (recorded as an admin action)."""
    async with transaction(sessions) as s:
        rows = await names.transfer(s, body.name, body.to_user_id, who, body.reason, ctx)
    return {"name": body.name, "owner_id": str(body.to_user_id), "slugs": [r.slug for r in rows]}
