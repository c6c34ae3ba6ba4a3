"""Names people can trust (docs/services/catalog.md#names).

A server's registry name is ``<namespace>/<name>``; who may publish under a namespace:

- ``io.github.<login>``: the user whose linked GitHub account (auth's identities) is ``<login>`` —
  confirmed live against GitHub's API (``GET /users/<login>`` must still be that account's id, so a
  login renamed on GitHub and taken by someone else grants nothing) — or a member of the GitHub
  organisation ``<login>`` (``GET /orgs/<org>/members/<user>``; public memberships without a token);
- the platform's own namespace ``<platform_namespace>.<handle>``: the one user the handle was given
  to (from their login, kept for good); a submission that names nothing (an ``mcpServers`` entry,
  an OpenAPI document) is listed there;
- any other namespace is reverse DNS (``com.example.api`` is ``api.example.com``): the user who
  proved the domain — a DNS TXT record on it, which also covers its subdomains, or the HTTP
  well-known file ``/.well-known/mcp-registry-auth`` on it, which covers that host only (the
  official registry's two methods) — holding ``wemcp-verify=<the claim's token>`` (domain_proof.py).

One name belongs to one owner: a name another owner holds is a 409 (claimable by the prover of its
namespace when its holder never proved it). Admins and the crawler are not refused (imports, the
crawled catalogue), but their listings earn no badge unless proven. :func:`settle` is the one call
the submission code makes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx2 as httpx
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.config import Settings
from wemcp.catalog.domain_proof import PROOF_PREFIX, http_proof, verify_claim
from wemcp.catalog.models import DomainClaim, Server, bus_tables
from wemcp.catalog.normalize import Normalized, field_error
from wemcp.catalog.repository import db, servers
from wemcp.catalog.repository import names as repository
from wemcp.common.errors import Conflict, Forbidden, NotFound, ServiceUnavailable
from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.events.servers import ServerUpdated
from wemcp.common.identity import Identity
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import refusal_in
from wemcp.common.outbox import add_event
from wemcp.common.trust import Issuer

log = get_logger("wemcp.catalog.names")

# a verified badge: the namespace was proven for the owner by one of these
VERIFIED = frozenset({"github", "github_org", "dns", "http"})
# a holder who proved nothing: the prover of the namespace may claim the name
CLAIMABLE = (None, "legacy")
GITHUB_LOGIN = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,38}$")
DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$")


@dataclass(frozen=True)
class Namespace:
    kind: str  # github | platform | domain | reserved
    namespace: str  # as written in the name, lower-cased
    value: str  # the login/org, the handle, the domain


@dataclass
class NameContext:
    """What the rules need beyond the database: settings and the signer of calls to auth."""

    settings: Settings
    issuer: Issuer


def context_of(request: Any) -> NameContext:
    from wemcp.catalog.state import from_request

    return NameContext(from_request(request).settings, request.app.state.runtime.issuer)


def classify(name: str, platform_namespace: str) -> Namespace:
    ns = name.split("/", 1)[0].lower()
    if ns.startswith("io.github."):
        return Namespace("github", ns, ns.removeprefix("io.github."))
    if ns.startswith(platform_namespace + "."):
        return Namespace("platform", ns, ns.removeprefix(platform_namespace + "."))
    if ns in ("io.github", platform_namespace) or platform_namespace.startswith(ns + "."):
        return Namespace("reserved", ns, ns)
    return Namespace("domain", ns, ".".join(reversed(ns.split("."))))


def domain_namespace(domain: str) -> str:
    return ".".join(reversed(domain.split(".")))


def check_domain(domain: str, settings: Settings) -> str:
    """A claimable domain, lower-cased; 422 otherwise. GitHub's and the platform's own domains are
    never claimable (their namespaces follow their own rules)."""
    d = domain.strip().lower().rstrip(".")
    if not DOMAIN.match(d):
        raise field_error("domain", f"{domain!r} is not a domain name (e.g. example.com)", "invalid_domain")
    ns = domain_namespace(d)
    platform = settings.platform_namespace
    for own in ("io.github", platform):
        if ns == own or ns.startswith(own + ".") or own.startswith(ns + "."):
            raise field_error("domain", f"{d} is reserved: names under {own} follow their own rule", "reserved_domain")
    return d


# ---- the accounts a user linked (auth) and GitHub ------------------------------------------------

async def linked_accounts(ctx: NameContext, user_id: UUID) -> dict[str, Any] | None:
    """auth's view of a user (login and linked provider accounts), over the internal service API;
    None when auth knows no such user."""
    url = f"{ctx.settings.auth_url.rstrip('/')}/internal/auth/users/{user_id}/identities"
    try:
        async with httpx.AsyncClient(timeout=ctx.settings.names_timeout_seconds, trust_env=False) as c:
            r = await c.get(url, headers=ctx.issuer.headers("auth"))
    except httpx.HTTPError as exc:
        log.warning("auth_unreachable", error=type(exc).__name__)
        raise ServiceUnavailable("the account service cannot be reached to check the name; try again",
                                 headers={"Retry-After": "30"}) from None
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        log.warning("auth_identities_failed", status=r.status_code)
        raise ServiceUnavailable("the account service did not answer; try again", headers={"Retry-After": "30"})
    data: dict[str, Any] = r.json()
    return data


class GitHub:
    """GitHub's REST API (``WEMCP_CATALOG_GITHUB_API_URL``) through the egress policy."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.github_api_url.rstrip("/")
        self.headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                        "User-Agent": "wemcp-catalog"}
        if settings.github_token:
            self.headers["Authorization"] = f"Bearer {settings.github_token}"
        self.client = settings.egress.client(timeout=settings.names_timeout_seconds)

    async def __aenter__(self) -> GitHub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def _get(self, path: str) -> Any:
        try:
            return await self.client.get(self.base + path, headers=self.headers)
        except httpx.HTTPError as exc:
            refused = refusal_in(exc)
            log.warning("github_unreachable", error=type(exc).__name__, refused=str(refused) if refused else None)
            raise ServiceUnavailable("GitHub cannot be reached to check the name; try again",
                                     headers={"Retry-After": "30"}) from None

    def _unexpected(self, r: Any, what: str) -> ServiceUnavailable:
        log.warning("github_unexpected", what=what, status=r.status_code)
        return ServiceUnavailable(f"GitHub did not answer usefully ({what}: HTTP {r.status_code}); try again",
                                  headers={"Retry-After": "60"})

    async def account_id(self, login: str) -> str | None:
        """The id of the account that has ``login`` now (None: no such account)."""
        r = await self._get(f"/users/{login}")
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise self._unexpected(r, "users")
        return str(r.json().get("id"))

    async def is_member(self, org: str, login: str) -> bool:
        """``login`` belongs to the organisation ``org``. GitHub answers 204 (member) or 404, and a
        302 to the public list when the requester may not see private memberships (no token, or a
        token of a non-member): then a public membership counts."""
        r = await self._get(f"/orgs/{org}/members/{login}")
        if r.status_code == 204:
            return True
        if r.status_code == 404:
            return False
        if r.status_code != 302:
            raise self._unexpected(r, "org members")
        r = await self._get(f"/orgs/{org}/public_members/{login}")
        if r.status_code in (204, 404):
            return r.status_code == 204
        raise self._unexpected(r, "org public members")


async def github_method(ctx: NameContext, who: Identity, login: str) -> str | None:
    """``github`` when ``who``'s linked GitHub account is ``login`` now, ``github_org`` when one of
    their linked GitHub accounts is a member of the organisation ``login``, else None."""
    if not GITHUB_LOGIN.match(login):
        return None
    user = await linked_accounts(ctx, who.user_id)
    accounts = [i for i in (user or {}).get("identities", []) if i.get("provider") == "github" and i.get("login")]
    if not accounts:
        return None
    async with GitHub(ctx.settings) as gh:
        current = []
        for a in accounts:  # a renamed login (someone else may hold it now) is not the user's
            a_login = str(a["login"]).lower()
            if GITHUB_LOGIN.match(a_login) and await gh.account_id(a_login) == str(a.get("subject")):
                current.append(a_login)
        if login in current:
            return "github"
        for a_login in current:
            if await gh.is_member(login, a_login):
                return "github_org"
    return None


# ---- the platform's own namespace ----------------------------------------------------------------

def _handle_base(login: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", login.lower())).strip("-")[:32].strip("-")


async def handle_of(session: AsyncSession, who: Identity, *, create: bool = True) -> str | None:
    """``who``'s handle: from their login the first time (``u-<id>`` when it has no usable letters
    or is taken, then ``-2``, ``-3`` ...), theirs for good."""
    own = await repository.handle_of(session, who.user_id)
    if own is not None or not create:
        return own
    base = _handle_base(who.login) or f"u-{who.user_id.hex[-12:]}"
    for n in range(1, 50):
        candidate = base if n == 1 else f"{base}-{n}"
        got = await repository.take_handle(session, candidate, who.user_id)
        if got is not None:
            return got
        own = await repository.handle_of(session, who.user_id)
        if own is not None:  # a concurrent submission of the same user gave them one
            return own
    raise Conflict("could not allocate a namespace; try again")


# ---- domains -------------------------------------------------------------------------------------

def _covers(claim: DomainClaim, domain: str) -> bool:
    return claim.domain == domain or (claim.method == "dns" and domain.endswith("." + claim.domain))


async def domain_method(session: AsyncSession, who: Identity, domain: str) -> str | None:
    labels = domain.split(".")
    candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    claims = await repository.verified_claims(session, who.user_id, candidates)
    exact = [c for c in claims if c.domain == domain]
    for c in exact + [c for c in claims if c.domain != domain]:
        if _covers(c, domain):
            return c.method
    return None


# ---- the rule, applied ---------------------------------------------------------------------------

def _how(ns: Namespace, settings: Settings) -> str:
    if ns.kind == "github":
        return (f"link the GitHub account {ns.value!r} (POST /api/v1/auth/github/link) or be a member of that "
                "GitHub organisation")
    if ns.kind == "domain":
        return f"prove the domain {ns.value} (POST /api/v1/names/domains)"
    if ns.kind == "platform":
        return f"{settings.platform_namespace}.<handle> names belong to that handle's user (GET /api/v1/names/mine)"
    return "this namespace is reserved"


async def authorize(session: AsyncSession, name: str, who: Identity, ctx: NameContext, *,
                    network: bool = True) -> str:
    """The way ``who`` holds ``name``'s namespace (github | github_org | platform | dns | http), or
    403 naming what would prove it. ``network=False``: no auth/GitHub call (GitHub names fail)."""
    ns = classify(name, ctx.settings.platform_namespace)
    method: str | None = None
    if ns.kind == "github" and network:
        method = await github_method(ctx, who, ns.value)
    elif ns.kind == "platform":
        # the first use of one's namespace may be by name: the handle is given then
        method = "platform" if await handle_of(session, who) == ns.value else None
    elif ns.kind == "domain" and DOMAIN.match(ns.value):
        method = await domain_method(session, who, ns.value)
    if method is None:
        raise Forbidden(f"{name}: you have not proven the namespace {ns.namespace}; {_how(ns, ctx.settings)}",
                        extra={"name": name, "namespace": ns.namespace, "namespace_kind": ns.kind,
                               "reason": "name_not_yours"})
    return method


async def settle(session: AsyncSession, n: Normalized, owner: Identity | None, existing: Server | None,
                 ctx: NameContext | None) -> str | None:
    """Apply the naming rules to a submission (the one call the submission code makes): may rename a
    name the submitter did not give into their platform namespace, refuses (403) a namespace they
    have not proven and (409) a name another owner holds. Returns the row's ``name_verification``."""
    kept = existing.name_verification if existing is not None else None
    if owner is None:  # the crawler: owner-less rows, no badge
        return kept
    admin = owner.at_least("admin")
    if ctx is None:
        if admin:  # an admin's import: not refused, not proven
            return kept
        raise RuntimeError("a user's submission needs the naming rules' context (names.context_of(request))")
    mine = existing is not None and existing.owner_id == owner.user_id
    if not n.name_given:
        if existing is not None and (mine or admin):  # a new version keeps the listing's name
            n.name = n.spec["name"] = existing.name
            return kept
        handle = await handle_of(session, owner)
        n.name = n.spec["name"] = f"{ctx.settings.platform_namespace}.{handle}/{n.name.split('/', 1)[-1]}"
        method: str | None = "platform"
    elif existing is not None and existing.name == n.name and not mine:
        return kept  # an admin re-specifying someone's (or nobody's) listing: the holder's proof stands
    elif existing is not None and existing.name == n.name and (kept in VERIFIED or kept == "platform"):
        return kept  # proven before: a new version of it
    elif admin or (existing is not None and existing.name == n.name):
        # an admin's own listing, or an owner's listing from before the rules (or transferred to
        # them): proven if it can be (the badge), kept as it was otherwise
        try:
            method = await authorize(session, n.name, owner, ctx, network=not admin)
        except (Forbidden, ServiceUnavailable):
            return kept if existing is not None and existing.name == n.name else None
    else:
        method = await authorize(session, n.name, owner, ctx)
    if not admin:
        # one name, one owner: two first submissions of a name by two users are serialised here
        await db.advisory_lock(session, f"catalog:name:{n.name}")
        held = await repository.name_holder(session, n.name, owner.user_id, existing.id if existing else None)
        if held is not None:
            extra: dict[str, Any] = {"slug": held.slug, "name": n.name}
            hint = "; an admin can transfer it"
            if held.name_verification in CLAIMABLE and method in VERIFIED:
                extra["claim"] = f"/api/v1/servers/{held.slug}/claim"
                hint = f"; you proved its namespace: claim it (POST {extra['claim']}) and submit again"
            raise Conflict(f"the name {n.name} is held by another owner{hint}", extra=extra)
    return method


def stamp(row: Server, method: str | None) -> None:
    """Record how the row's name was proven (and when, if that changed)."""
    if method != row.name_verification or (method is not None and row.name_verified_at is None):
        row.name_verification = method
        row.name_verified_at = db.now() if method is not None else None


# ---- claim and transfer ------------------------------------------------------------------------

async def claim(session: AsyncSession, slug: str, who: Identity, ctx: NameContext) -> tuple[list[Server], str]:
    """The prover of a name's namespace takes the listings under it whose holders proved nothing
    (owner-less crawled rows, rows listed before the rules). Emits ``server.updated`` per row."""
    row = await servers.server_by_slug(session, slug, lock=True)
    if row is None:
        raise NotFound(f"no server {slug!r}")
    if row.owner_id == who.user_id:
        raise Conflict(f"{row.name} is already yours")
    if row.name_verification not in CLAIMABLE:
        raise Conflict(f"{row.name} was proven by its owner ({row.name_verification}); only an admin can transfer it")
    method = await authorize(session, row.name, who, ctx)
    rows = await repository.claimable(session, row.name, who.user_id)
    for r in rows:
        r.owner_id = who.user_id
        stamp(r, method)
        r.updated_at = db.now()
    await session.flush()
    for r in rows:
        await add_event(session, bus_tables, ServerUpdated(server_id=r.id, slug=r.slug, changed=["owner_id"],
                                                           actor_id=who.user_id, owner_id=r.owner_id))
    log.info("name_claimed", name=row.name, slugs=[r.slug for r in rows], method=method)
    return rows, method


async def transfer(session: AsyncSession, name: str, to_user: UUID, who: Identity, reason: str | None,
                   ctx: NameContext) -> list[Server]:
    """An admin gives every listing under ``name`` to ``to_user`` (``transferred``: no badge until the
    new owner proves the namespace with a new version). Emits ``server.updated`` per row and one
    ``admin.action_recorded`` with the owners before and after."""
    rows = await repository.named(session, name)
    if not rows:
        raise NotFound(f"no server named {name!r}")
    if await linked_accounts(ctx, to_user) is None:
        raise field_error("to_user_id", f"no user {to_user}", "unknown_user")
    before = {"owners": sorted({str(r.owner_id) if r.owner_id else "" for r in rows}),
              "verification": sorted({r.name_verification or "" for r in rows}), "slugs": [r.slug for r in rows]}
    moved = [r for r in rows if r.owner_id != to_user or r.name_verification != "transferred"]
    for r in moved:
        r.owner_id = to_user
        r.name_verification, r.name_verified_at = "transferred", db.now()
        r.updated_at = db.now()
    await session.flush()
    for r in moved:
        await add_event(session, bus_tables, ServerUpdated(server_id=r.id, slug=r.slug, changed=["owner_id"],
                                                           actor_id=who.user_id, owner_id=r.owner_id))
    await add_event(session, bus_tables, AdminActionRecorded(
        service="catalog", action="name.transfer", actor_id=who.user_id, actor_role=who.role, target_type="name",
        target_id=name, before=before,
        after={"owners": [str(to_user)], "verification": ["transferred"], "slugs": [r.slug for r in rows]},
        reason=reason))
    return rows


def badge(row: Server, platform_namespace: str) -> dict[str, Any]:
    """The detail's ``name_verification``: ``verified`` is the badge."""
    ns = classify(row.name, platform_namespace)
    return {"verified": row.name_verification in VERIFIED, "method": row.name_verification,
            "namespace": ns.namespace, "namespace_kind": ns.kind,
            "verified_at": row.name_verified_at.isoformat() if row.name_verified_at else None}



__all__ = ["PROOF_PREFIX", "http_proof", "verify_claim"]
