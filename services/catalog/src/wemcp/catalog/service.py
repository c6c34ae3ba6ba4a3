"""Use cases of the catalog: submissions, owner and admin actions, detail, categories, news, feed
and the registry-compatible feed. Every state change that others must know about stages its event
in the same transaction (outbox)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx2 as httpx
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog import names as name_rules
from wemcp.catalog.config import Settings
from wemcp.catalog.models import Category, News, Server, Submission, bus_tables
from wemcp.catalog.names import NameContext
from wemcp.catalog.normalize import Normalized, field_error
from wemcp.catalog.repository import db
from wemcp.catalog.repository import servers as repository
from wemcp.catalog.schemas import ServerUpdate, slugify
from wemcp.common.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unprocessable
from wemcp.common.events.servers import ServerDisabled, ServerEnabled, ServerSubmitted, ServerUpdated
from wemcp.common.events.spec import Input, ServerSpec
from wemcp.common.identity import Identity
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import refusal_in
from wemcp.common.outbox import add_event

log = get_logger("wemcp.catalog")
ICON = "https://api.dicebear.com/7.x/bottts/svg?seed={slug}"
OPENAPI_ACCEPT = "application/json, application/yaml;q=0.9, application/x-yaml;q=0.9, text/yaml;q=0.9, */*;q=0.5"


# ---- submission ----------------------------------------------------------------------------------

async def fetch_openapi(url: str, settings: Settings) -> dict[str, Any]:
    """Fetch an OpenAPI document by URL for its submitter: through the egress policy (public
    addresses only, checked at connect time; ``WEMCP_EGRESS_ALLOW``), no redirects, bounded size
    and time."""
    policy = settings.egress
    try:
        policy.check_url(url)
    except ValueError as exc:
        raise field_error("openapi_url", str(exc)) from None
    limit = settings.max_json_body_bytes
    try:
        async with policy.client(timeout=settings.openapi_fetch_timeout_seconds) as c:
            async with c.stream("GET", url, headers={"Accept": OPENAPI_ACCEPT}) as r:
                if r.status_code != 200:
                    raise field_error("openapi_url", f"fetching it answered HTTP {r.status_code}")
                buf = bytearray()
                async for chunk in r.aiter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        raise field_error("openapi_url", f"the document is larger than {limit} bytes")
    except httpx.HTTPError as exc:
        refused = refusal_in(exc)
        if refused is not None:
            raise field_error("openapi_url", str(refused), "egress_refused") from None
        raise field_error("openapi_url", f"cannot fetch it: {type(exc).__name__}") from None
    doc = parse_openapi_document(bytes(buf))
    if not isinstance(doc, dict):
        raise field_error("openapi_url", "the document is not a JSON or YAML object")
    return doc


def parse_openapi_document(raw: bytes) -> Any:
    """JSON, else YAML (OpenAPI documents are often published as YAML). YAML is loaded safely
    (no Python objects), aliases are refused (an alias bomb expands exponentially once the
    document is serialised), and dates/other non-JSON scalars become strings."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    import yaml

    try:
        text = raw.decode("utf-8")
        if any(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise field_error("openapi_url", "YAML aliases (*refs) are not accepted", "yaml_alias")
        doc = yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError):
        raise field_error("openapi_url", "the document is neither JSON nor YAML") from None
    return json.loads(json.dumps(doc, default=str))


async def _free_slug(session: AsyncSession, base: str) -> str:
    base = slugify(base, 60)
    taken = await repository.taken_slugs(session, base)
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


async def check_category(session: AsyncSession, slug: str | None, field: str = "category") -> None:
    if slug is not None and (await session.get(Category, slug)) is None:
        raise field_error(field, f"unknown category {slug!r}", "unknown_category")


async def submit(session: AsyncSession, n: Normalized, owner: Identity | None, *,
                 source_kind: str | None = None, limits: Settings | None = None,
                 names: NameContext | None = None) -> tuple[Server, bool]:
    """Store a submission as ``submitted`` and stage ``server.submitted`` — or, from a publisher who
    is not trusted (``review.is_trusted``), as ``pending_review`` with no event: it deploys once an
    admin approves it (``review.approve``). Returns (row, duplicate).

    The same package and version again is idempotent (the first row comes back, nothing is
    emitted); a new version of a package its owner already listed resubmits that row. With
    ``limits``, a plain user's submission is refused over the per-user limits (:func:`check_limits`)."""
    await check_category(session, n.category)
    owner_id = owner.user_id if owner else None
    existing = await repository.first_of_package(session, n.package_key)
    if owner is not None and not owner.at_least("admin"):  # the crawler (no owner) and admins may
        if existing is not None and existing.owner_id is None:
            # An owner-less (imported, crawled) server runs for every user of it: re-specifying it
            # (its package, its env defaults) is an admin's call, never the first comer's.
            raise Forbidden(f"{n.package_key} is listed without an owner; only an admin can change it",
                            extra={"slug": existing.slug})
        if existing is not None and existing.owner_id != owner_id:
            raise Conflict(f"{n.package_key} is already listed by another owner", extra={"slug": existing.slug})
        _refuse_startup_env(n.spec)
    if existing is not None and existing.version == n.version and existing.status != "rejected":
        return existing, True
    verification = await name_rules.settle(session, n, owner, existing, names)  # who may use the name
    if limits is not None and owner is not None and owner.user_id is not None and not owner.at_least("admin"):
        await check_limits(session, owner.user_id, limits, resubmitting=existing.id if existing else None)
    from wemcp.catalog import review

    trusted = await review.is_trusted(session, owner)
    if existing is not None:
        existing.version, existing.spec, existing.name = n.version, n.spec, n.name
        existing.title, existing.description = n.title, n.description
        name_rules.stamp(existing, verification)
        existing.updated_at = db.now()
        if not existing.review_cleared and not trusted:
            # a pending or rejected package waits (again) for review: nothing deploys before approval
            review.queue(existing)
            await session.flush()
            return existing, False
        existing.review_cleared = True
        if existing.status != "disabled":
            existing.status, existing.status_detail = "submitted", None
        if not existing.lifecycle_generation:
            # a new deployment follows: its unstamped steps (older deployer) may replace the last
            # terminal state (stamped ones carry the next generation, which supersedes it anyway)
            existing.lifecycle_terminal = False
        await session.flush()
        await _emit_submitted(session, existing)
        return existing, False

    new_id = await _insert_under_free_slug(session, n.name.split("/")[-1], lambda slug: dict(
        name=n.name, version=n.version, package_key=n.package_key, title=n.title,
        description=n.description, readme=n.readme, icon=n.icon or ICON.format(slug=slug),
        owner_id=owner_id, source_kind=source_kind or n.source_kind, spec=n.spec,
        status="submitted" if trusted else "pending_review", review_cleared=trusted,
        review_requested_at=None if trusted else db.now(), category=n.category, tags=n.tags,
        name_verification=verification, name_verified_at=db.now() if verification else None))
    if new_id is None:  # a concurrent identical submission won
        row = await repository.package_version(session, n.package_key, n.version)
        return row, True
    row = await repository.inserted_server(session, new_id)
    if trusted:
        await _emit_submitted(session, row)
    return row, False


async def _insert_under_free_slug(session: AsyncSession, base: str,
                                  values: Callable[[str], dict[str, Any]]) -> UUID | None:
    """Insert a server row under a free slug made from ``base`` (``values(slug)`` gives the other
    columns), trying again when a concurrent insert takes the slug first. None: the same package and
    version is already there (a concurrent identical insert won)."""
    for attempt in range(5):
        slug = await _free_slug(session, base)
        try:
            async with session.begin_nested():
                new_id = await repository.insert_server(session, {"slug": slug, **values(slug)})
        except IntegrityError:  # the slug was taken between our look and our insert
            if attempt == 4:
                raise
            continue
        return new_id
    raise Conflict("could not allocate a slug; try again")


async def import_crawled(session: AsyncSession, n: Normalized, source: str) -> Server | None:
    """A crawled server: listed owner-less and unhosted (``spec.hosting = "unhosted"``: published
    for search at once, never deployed, ``connect`` says how to run or reach it). Deduplicated by
    package key: a key already listed by anyone else (an owner, a submission, an admin's import) is
    left alone, whatever version the crawler saw; a crawled listing follows the newest description.
    Returns the row to project, or None when nothing changed."""
    spec = {**n.spec, "hosting": "unhosted", "crawled_from": source}
    existing = await repository.rows_of_package(session, n.package_key)
    # the crawler's own listing only: an admin who resubmitted a crawled row to host it made it theirs
    if any(r.source_kind != "crawled" or as_spec(r.spec).hosting != "unhosted" for r in existing):
        log.info("crawled_server_already_listed", package_key=n.package_key)
        return None
    if existing:
        row = existing[0]
        if row.version == n.version and row.spec == spec and row.description == n.description:
            return None
        row.version, row.spec, row.name, row.title, row.description = n.version, spec, n.name, n.title, n.description
        row.updated_at = db.now()
        await session.flush()
        await session.refresh(row)
        return row
    new_id = await _insert_under_free_slug(session, n.name.split("/")[-1], lambda slug: dict(
        name=n.name, version=n.version, package_key=n.package_key, title=n.title,
        description=n.description, readme="", icon=ICON.format(slug=slug), owner_id=None,
        source_kind="crawled", spec=spec, status="published", published_at=db.now()))
    if new_id is None:
        return None
    return await repository.inserted_server(session, new_id)


def hosting_of(spec: ServerSpec | dict[str, Any]) -> str:
    """hosted (the platform runs or relays it), local (its users run it) or unhosted (crawled: listed only)."""
    h = as_spec(spec).hosting
    return h if h in ("local", "unhosted") else "hosted"


async def check_limits(session: AsyncSession, owner_id: UUID, limits: Settings, *, resubmitting: UUID | None) -> None:
    """Per-user limits, one user at a time (a transaction-scoped advisory lock on the user): at most
    ``max_submissions_per_hour`` submissions in any rolling hour, and at most
    ``max_deployments_in_flight`` of the user's servers being deployed (a new version of a server
    that is being deployed replaces that deployment: it adds none). 429 with Retry-After; the
    submission is logged once it passes."""
    await db.advisory_lock(session, f"catalog:submit:{owner_id}")
    await repository.forget_old_submissions(session, owner_id)
    now, oldest, recent = await repository.recent_submissions(session, owner_id)
    if recent >= limits.max_submissions_per_hour:
        wait = max(1, math.ceil((oldest + timedelta(hours=1) - now).total_seconds()))
        raise TooManyRequests(f"you submitted {recent} servers or versions in the last hour, the most allowed; "
                              f"try again in {math.ceil(wait / 60)} min", headers={"Retry-After": str(wait)},
                              extra={"retry_after": wait, "limit": limits.max_submissions_per_hour})
    in_flight = await repository.deployments_in_flight(session, owner_id, resubmitting)
    if in_flight >= limits.max_deployments_in_flight:
        raise TooManyRequests(f"{in_flight} of your servers are still being deployed, the most allowed at once; "
                              "submit again when one of them is done", headers={"Retry-After": "30"},
                              extra={"retry_after": 30, "limit": limits.max_deployments_in_flight})
    session.add(Submission(owner_id=owner_id))


# Variables that change how an interpreter or the dynamic loader starts the server: a default for
# one of them runs code in every user's process of the server, so only admins may declare them.
STARTUP_ENV = frozenset({
    "NODE_OPTIONS", "NODE_PATH", "NODE_EXTRA_CA_CERTS", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME",
    "PYTHONINSPECT", "PYTHONUSERBASE", "PYTHONEXECUTABLE", "PYTHONBREAKPOINT", "PYTHONWARNINGS",
    "PERL5OPT", "PERL5LIB", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    "BASH_ENV", "ENV", "PATH", "SHELL", "IFS", "PS4", "GCONV_PATH",
})
STARTUP_ENV_PREFIXES = ("LD_", "DYLD_")


def _refuse_startup_env(spec: dict[str, Any]) -> None:
    names = [i["name"] for i in _public_inputs(spec) if i["location"] == "env"
             and (i["name"].upper() in STARTUP_ENV or i["name"].upper().startswith(STARTUP_ENV_PREFIXES))]
    if names:
        raise field_error("environmentVariables", f"{', '.join(sorted(set(names)))}: these variables change how the "
                          "runtime starts the server and are reserved to admins", "reserved_env")


async def _emit_submitted(session: AsyncSession, row: Server, approved_by: UUID | None = None) -> None:
    row.revision = (row.revision or 0) + 1  # orders the submissions for their consumers (row lock held)
    await add_event(session, bus_tables, ServerSubmitted(
        server_id=row.id, slug=row.slug, name=row.name, version=row.version, owner_id=row.owner_id,
        spec=row.spec, revision=row.revision, approved_by=approved_by))


emit_submitted = _emit_submitted


# ---- owner and admin actions ---------------------------------------------------------------------

async def get_server(session: AsyncSession, slug: str, *, lock: bool = False) -> Server:
    row = await repository.server_by_slug(session, slug, lock=lock)
    if row is None:
        raise NotFound(f"no server {slug!r}")
    return row


def _owns(row: Server, who: Identity) -> bool:
    return row.owner_id is not None and row.owner_id == who.user_id


async def _record(session: AsyncSession, who: Identity, action: str, row: Server, before: dict[str, Any],
                  after: dict[str, Any], reason: str | None) -> None:
    from wemcp.catalog.review import record

    await record(session, who, action, "server", row.slug, before=before, after=after, reason=reason)


def _can_manage(row: Server, who: Identity) -> bool:
    return who.at_least("admin") or (row.owner_id is not None and row.owner_id == who.user_id)


async def update_server(session: AsyncSession, slug: str, patch: ServerUpdate, who: Identity) -> Server:
    row = await get_server(session, slug, lock=True)
    if not _can_manage(row, who):
        raise Forbidden("only the owner or an admin can change this server")
    data = patch.model_dump(exclude_unset=True)
    if "featured" in data and not who.at_least("admin"):
        raise Forbidden("only an admin can feature a server")
    if "category" in data:
        await check_category(session, data["category"])
    for k, v in data.items():
        if v is None and k != "category":  # only the category can be cleared
            raise field_error(k, "cannot be null", "null_not_allowed")
    changed = sorted(k for k, v in data.items() if getattr(row, k) != v)
    if not changed:
        return row
    if not _owns(row, who):  # an admin editing someone else's (or an owner-less) server
        await _record(session, who, "server.update", row, {k: getattr(row, k) for k in changed},
                      {k: data[k] for k in changed}, None)
    for k in changed:
        setattr(row, k, data[k])
    row.updated_at = db.now()
    await session.flush()
    await session.refresh(row)
    # The catalog's own worker re-projects B from A (same transaction: no edit is lost, none is
    # projected before it commits).
    await add_event(session, bus_tables, ServerUpdated(server_id=row.id, slug=row.slug, changed=changed,
                                                       actor_id=who.user_id))
    return row


async def disable(session: AsyncSession, slug: str, who: Identity, reason: str | None, *,
                  withdraw: bool = False) -> tuple[Server, bool]:
    row = await get_server(session, slug, lock=True)
    if withdraw and not _can_manage(row, who):
        raise Forbidden("only the owner or an admin can withdraw this server")
    if row.status == "disabled":
        return row, False
    row.status_before_disable, row.status = row.status, "disabled"
    row.withdrawn = withdraw
    row.status_detail = reason
    row.decision_seq = (row.decision_seq or 0) + 1  # orders the decisions for their consumers (row lock held)
    row.updated_at = db.now()
    await session.flush()
    await add_event(session, bus_tables, ServerDisabled(server_id=row.id, slug=row.slug, reason=reason,
                                                        actor_id=who.user_id, decision_seq=row.decision_seq))
    if not withdraw or not _owns(row, who):
        await _record(session, who, "server.withdraw" if withdraw else "server.disable", row,
                      {"status": row.status_before_disable}, {"status": "disabled"}, reason)
    return row, True


async def enable(session: AsyncSession, slug: str, who: Identity) -> tuple[Server, bool]:
    row = await get_server(session, slug, lock=True)
    if row.status != "disabled":
        return row, False
    row.status = row.status_before_disable or "submitted"
    row.status_before_disable, row.withdrawn, row.status_detail = None, False, None
    row.decision_seq = (row.decision_seq or 0) + 1
    row.updated_at = db.now()
    await session.flush()
    await add_event(session, bus_tables, ServerEnabled(server_id=row.id, slug=row.slug, actor_id=who.user_id,
                                                       decision_seq=row.decision_seq))
    await _record(session, who, "server.enable", row, {"status": "disabled"}, {"status": row.status}, None)
    return row, True


# ---- reading -------------------------------------------------------------------------------------

def visible_to(row: Server, who: Identity | None) -> bool:
    if row.status == "published":
        return True
    return who is not None and _can_manage(row, who)


def _public_inputs(spec: ServerSpec | dict[str, Any]) -> list[dict[str, Any]]:
    """Every declared input of a spec as its JSON, with where it goes (``env`` or ``header``); a
    secret's default or value is never shown, even one that slipped into a spec."""
    spec = as_spec(spec)
    found: list[tuple[Input, str]] = [(e, "env") for p in spec.packages for e in p.environment_variables]
    found += [(h, "header") for r in spec.remotes for h in r.headers]
    if spec.openapi is not None:
        found += [(i, "env") for i in spec.openapi.inputs]
    if spec.archive is not None:
        found += [(e, "env") for e in spec.archive.environment_variables]
    out = []
    for item, location in found:
        shown = {**item.to_wire(), "location": location}
        if item.is_secret:
            shown.pop("default", None)
            shown.pop("value", None)
        out.append(shown)
    return out


def as_spec(spec: ServerSpec | dict[str, Any] | None) -> ServerSpec:
    """A stored spec (table A's JSON) as the shared model."""
    return spec if isinstance(spec, ServerSpec) else ServerSpec.model_validate(spec or {})


public_inputs = _public_inputs


def local_config(row: Server) -> dict[str, Any]:
    """How a user runs a ``stdio-local`` server on their own machine: a Claude-desktop ``mcpServers``
    entry with the exact version, the package's arguments and its variables (secrets as
    placeholders: the platform never holds their values)."""
    spec = as_spec(row.spec)
    pkg = spec.package
    ident, version = (pkg.identifier, pkg.version or row.version) if pkg is not None else ("", row.version)
    args: list[str] = []
    for a in pkg.package_arguments if pkg is not None else []:
        value = a.value if a.value is not None else a.default
        if a.type == "named" and a.name:
            args += [a.name] + ([str(value)] if value is not None else [])
        elif value is not None:
            args.append(str(value))
    if pkg is not None and pkg.registry_type == "pypi":
        entry: dict[str, Any] = {"command": "uvx", "args": [f"{ident}=={version}", *args]}
    else:
        entry = {"command": "npx", "args": ["-y", f"{ident}@{version}", *args]}
    env = {e["name"]: (f"<{e['name']}>" if e.get("isSecret") or e.get("default") is None else e["default"])
           for e in _public_inputs(spec) if e["location"] == "env"}
    if env:
        entry["env"] = env
    return {"mcpServers": {row.slug: entry}}


def connect_info(row: Server, settings: Settings) -> dict[str, Any]:
    spec = as_spec(row.spec)
    inputs = [{"name": i["name"], "isSecret": bool(i.get("isSecret")), "isRequired": bool(i.get("isRequired"))}
              for i in _public_inputs(spec)]
    if spec.hosting == "unhosted":  # crawled: the platform neither runs nor relays it
        remote = spec.remotes[0] if spec.remotes else None
        if not spec.packages and remote is not None:
            return {"runs": "unhosted", "url": remote.url, "transport": remote.type, "inputs": inputs,
                    "config": {"mcpServers": {row.slug: {"type": remote.type, "url": remote.url}}}}
        return {"runs": "unhosted", "url": None, "transport": "stdio", "inputs": inputs, "config": local_config(row)}
    if spec.hosting == "local":
        return {"runs": "local", "url": None, "transport": "stdio", "inputs": inputs, "config": local_config(row)}
    url = f"{settings.gateway_public_url.rstrip('/')}/mcp/{row.slug}"
    return {
        "runs": "hosted",
        "url": url,
        "transport": "streamable-http",
        "auth": "Authorization: Bearer <your WeMcp API key>",
        "inputs": inputs,
        "config": {"mcpServers": {row.slug: {"type": "streamable-http", "url": url,
                                             "headers": {"Authorization": "Bearer ${WEMCP_API_KEY}"}}}},
    }


def spec_for_display(spec: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in spec.items() if k != "openapi"}
    if spec.get("openapi"):
        shown["openapi"] = {k: v for k, v in spec["openapi"].items() if k != "document"}
    return shown


def detail(row: Server, settings: Settings, searchable: bool | None) -> dict[str, Any]:
    return {
        "id": str(row.id), "slug": row.slug, "name": row.name, "version": row.version, "title": row.title,
        "description": row.description, "readme": row.readme, "icon": row.icon, "owner_id": row.owner_id,
        "status": row.status, "status_detail": row.status_detail, "withdrawn": row.withdrawn,
        "review_reason": row.review_reason if row.status in ("pending_review", "rejected") else None,
        "source_kind": row.source_kind, "category": row.category, "tags": row.tags, "featured": row.featured,
        "tools": row.tools, "prompts": row.prompts, "resources": row.resources, "calls": row.calls,
        "stars": row.stars, "name_verification": name_rules.badge(row, settings.platform_namespace),
        "created_at": row.created_at, "updated_at": row.updated_at,
        "published_at": row.published_at, "deployed_at": row.deployed_at, "searchable": bool(searchable),
        "inputs": _public_inputs(row.spec), "spec": spec_for_display(row.spec),
        "connect": connect_info(row, settings), "hosting": hosting_of(row.spec),
        "health": None if row.health_status is None else {
            "status": row.health_status, "checked_at": row.health_checked_at, **(row.health or {})},
    }


async def is_searchable(session: AsyncSession, server_id: UUID) -> bool:
    return await repository.is_searchable(session, server_id)


# ---- categories ----------------------------------------------------------------------------------

async def category_tree(session: AsyncSession) -> list[dict[str, Any]]:
    cats = await repository.categories(session)
    counts = await repository.searchable_per_category(session)
    nodes = {c.slug: {"slug": c.slug, "name": c.name, "parent": c.parent_slug, "position": c.position,
                      "count": 0, "own_count": int(counts.get(c.slug, 0)), "children": []} for c in cats}
    roots: list[dict[str, Any]] = []
    for c in cats:
        node = nodes[c.slug]
        parent = nodes.get(c.parent_slug) if c.parent_slug else None
        (parent["children"] if parent else roots).append(node)

    def total(node: dict[str, Any]) -> int:
        node["count"] = node["own_count"] + sum(total(ch) for ch in node["children"])
        return node["count"]

    for r in roots:
        total(r)
    return roots


async def category_and_descendants(session: AsyncSession, slug: str) -> list[str]:
    rows = await repository.category_parents(session)
    children: dict[str | None, list[str]] = {}
    for s, p in rows:
        children.setdefault(p, []).append(s)
    out, todo = [], [slug]
    while todo:
        s = todo.pop()
        if s in out:
            continue
        out.append(s)
        todo += children.get(s, [])
    return out


async def put_category(session: AsyncSession, slug: str, name: str, parent: str | None, position: int) -> Category:
    if parent is not None:
        if parent in await category_and_descendants(session, slug):  # includes slug itself
            raise field_error("parent", "a category cannot be its own ancestor")
        await check_category(session, parent, "parent")
    cat = await session.get(Category, slug)
    if cat is None:
        cat = Category(slug=slug, name=name, parent_slug=parent, position=position)
        session.add(cat)
    else:
        cat.name, cat.parent_slug, cat.position = name, parent, position
    await session.flush()
    return cat


async def delete_category(session: AsyncSession, slug: str) -> None:
    cat = await session.get(Category, slug)
    if cat is None:
        raise NotFound(f"no category {slug!r}")
    if await repository.category_has_children(session, slug):
        raise Conflict("the category has children; move or delete them first")
    if await repository.category_in_use(session, slug):
        raise Conflict("servers use this category; move them first")
    await session.delete(cat)


# ---- feed, news --------------------------------------------------------------------------------

def today_bounds(zone: str, now: datetime | None = None) -> tuple[datetime, datetime, str]:
    tz = ZoneInfo(zone)
    local = (now or datetime.now(tz)).astimezone(tz)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1), start.date().isoformat()


async def add_news(session: AsyncSession, kind: str, title: str, body: str = "", *, server_slug: str | None = None,
                   published: bool = True, author_id: UUID | None = None) -> News:
    item = News(kind=kind, title=title[:200], body=body, server_slug=server_slug, published=published,
                author_id=author_id)
    session.add(item)
    await session.flush()
    return item


def bad_request_if(cond: bool, msg: str) -> None:
    if cond:
        raise BadRequest(msg)


# ---- registry feed (/v0.1/servers) ------------------------------------------------------------

async def registry_versions(session: AsyncSession, name: str) -> list[Server]:
    """Published rows of one registry name, newest first. A package's new version replaces its row
    (table A keeps one row per package), so older versions of the same package are not kept; rows
    of other packages under the same name are other versions."""
    return await repository.published_versions(session, name)


def as_server_json(row: Server, *, latest: bool = True) -> dict[str, Any]:
    spec = spec_for_display(row.spec)
    doc = {k: v for k, v in spec.items() if k in {"name", "title", "description", "version", "websiteUrl",
                                                  "repository", "packages", "remotes"}}
    doc.update(name=row.name, version=row.version, title=row.title, description=row.description,
               icons=[{"src": row.icon}])
    doc["remotes"] = [*doc.get("remotes", [])]
    return {"server": doc, "_meta": {"io.modelcontextprotocol.registry/official": {
        "status": "active", "publishedAt": row.published_at, "updatedAt": row.updated_at, "isLatest": latest},
        "com.wemcp/catalog": {"slug": row.slug, "status": row.status, "tools": len(row.tools or []),
                              "nameVerified": row.name_verification in name_rules.VERIFIED}}}


async def touch_counters(session: AsyncSession, server_id: UUID, calls: int = 0, stars: int = 0) -> None:
    await repository.add_counters(session, server_id, calls, stars)


__all__ = ["Unprocessable"]
