"""HTTP API of the catalog (behind the gateway: /api/v1/servers, /categories, /feed, /news, /v0.1)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from pydantic import ValidationError

from wemcp.catalog import repository, review, service
from wemcp.catalog import search as search_mod
from wemcp.catalog.archive import check_archive
from wemcp.catalog.deps import CatalogSettings, Names, Sessions, State
from wemcp.catalog.models import Archive, Category, Server
from wemcp.catalog.normalize import Normalized, field_error, normalize, normalize_archive, normalize_server_json
from wemcp.catalog.resolve import resolve_unpinned
from wemcp.catalog.schemas import (
    ArchiveManifest,
    CategoryIn,
    CategoryList,
    CategoryOut,
    DisableRequest,
    FeedPage,
    ImportRejected,
    ImportResult,
    MyServer,
    MyServersPage,
    NewsIn,
    NewsItem,
    NewsPage,
    NewsPosted,
    RegistryList,
    RegistryServer,
    SearchRequest,
    ServerDetail,
    ServerJson,
    ServerSubmit,
    ServerSummary,
    ServerUpdate,
    StatusChange,
    SubmitAccepted,
)
from wemcp.common.db import transaction
from wemcp.common.errors import BadRequest, NotFound, PayloadTooLarge, Unprocessable
from wemcp.common.events.spec import SHA256
from wemcp.common.identity import AdminUser, CurrentUser, OptionalUser, PlatformCaller
from wemcp.common.pagination import Page

router = APIRouter(prefix="/api/v1", tags=["catalog"])
registry_router = APIRouter(prefix="/v0.1", tags=["registry"])
internal_router = APIRouter(prefix="/internal", tags=["internal"], include_in_schema=False)


def _accepted(row: Server, duplicate: bool) -> SubmitAccepted:
    return SubmitAccepted(id=row.id, slug=row.slug, status=row.status, name=row.name, version=row.version,
                          duplicate=duplicate)


def _pydantic_422(exc: ValidationError, prefix: str) -> Unprocessable:
    errors = [{"field": ".".join([prefix, *map(str, e["loc"])]).strip("."), "in": "body", "message": e["msg"],
               "type": e["type"]} for e in exc.errors()]
    return Unprocessable("; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]), extra={"errors": errors})


# ---- submissions ---------------------------------------------------------------------------------

def with_network(n: Normalized, asked: bool) -> Normalized:
    """``"network": true`` into the spec the deployer gets: only servers the platform hosts
    (packages, archives) have a sandbox to open; a remote or OpenAPI server is reached by the
    platform itself."""
    if not asked:
        return n
    if not (n.spec.get("packages") or n.spec.get("archive")):
        raise field_error("network", "only hosted servers (packages, archives) ask for network")
    n.spec = {**n.spec, "network": True}
    return n


@router.post("/servers", status_code=202, response_model=SubmitAccepted)
async def submit_server(body: ServerSubmit, who: CurrentUser, state: State, sessions: Sessions,
                        names: Names) -> SubmitAccepted:
    """Submit a server: a server.json, a Claude-desktop ``mcpServers`` object, or an OpenAPI document
    (inline or by URL). Packages without a version are pinned to their latest release. Answers 202:
    deployment happens asynchronously."""
    settings = state.settings
    fetched = None
    if body.openapi_url:
        fetched = await service.fetch_openapi(body.openapi_url, settings)
    n = with_network(normalize(body, fetched), body.network)
    await resolve_unpinned(n, state.resolver)  # npx pkg, uvx pkg: the latest release, as an exact version
    async with transaction(sessions) as s:
        row, dup = await service.submit(s, n, who, limits=settings, names=names)
    return _accepted(row, dup)


@router.post("/servers/archive", status_code=202, response_model=SubmitAccepted)
async def submit_archive(who: CurrentUser, settings: CatalogSettings, sessions: Sessions, names: Names,
                         manifest: Annotated[str, Form(max_length=20_000)],
                         archive: Annotated[UploadFile, File()]) -> SubmitAccepted:
    """Submit a source archive (.tar.gz or .zip) with a small JSON manifest."""
    try:
        m = ArchiveManifest.model_validate_json(manifest)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequest("manifest is not valid JSON") from None
        raise _pydantic_422(exc, "manifest") from None
    data = await archive.read(settings.max_archive_bytes + 1)
    if len(data) > settings.max_archive_bytes:
        raise PayloadTooLarge(f"the archive is larger than {settings.max_archive_bytes} bytes")
    checked = check_archive(data, max_expanded=settings.max_archive_expanded_bytes,
                            max_entries=settings.max_archive_entries, runtime=m.runtime)
    n = with_network(normalize_archive(m, checked.sha256, checked.size), m.network)
    async with transaction(sessions) as s:
        await repository.keep_archive(s, Archive(sha256=checked.sha256, size=checked.size,
                                                 expanded_size=checked.expanded, entries=checked.entries,
                                                 format=checked.format, manifest=m.model_dump(), data=data,
                                                 owner_id=who.user_id))
        n.version = m.version
        row, dup = await service.submit(s, n, who, limits=settings, names=names)
    return _accepted(row, dup)


@router.post("/servers/import", status_code=202, response_model=ImportResult)
async def import_registry(who: AdminUser, sessions: Sessions, body: dict[str, Any]) -> ImportResult:
    """Import a registry feed page (``{"servers": [{"server": {...}}, ...]}`` as served by
    ``/v0.1/servers``) as submissions. Bad entries are reported, good ones accepted."""
    entries = body.get("servers")
    if not isinstance(entries, list) or not entries or len(entries) > 500:
        raise Unprocessable("servers: give a list of 1 to 500 entries")
    accepted: list[SubmitAccepted] = []
    rejected: list[ImportRejected] = []
    async with transaction(sessions) as s:
        for i, entry in enumerate(entries):
            doc = entry.get("server", entry) if isinstance(entry, dict) else entry
            try:
                n = normalize_server_json(ServerJson.model_validate(doc), kind="import")
            except (ValidationError, Unprocessable) as exc:
                rejected.append(ImportRejected(index=i, error=str(exc).splitlines()[0][:300]))
                continue
            row, dup = await service.submit(s, n, who, source_kind="import")
            accepted.append(_accepted(row, dup))
    return ImportResult(accepted=accepted, rejected=rejected)


# ---- search and detail ---------------------------------------------------------------------------

@router.post("/servers/search", response_model=Page[ServerSummary])
async def search_servers(body: SearchRequest, state: State, sessions: Sessions) -> Page[ServerSummary]:
    """Hybrid search over published, enabled servers; pagination, filters and sort in the body."""
    qvec = await state.queries.query(body.query) if body.query.strip() and body.mode in {"hybrid", "vector"} \
        else None
    stats = await state.terms.ready(sessions) if body.query.strip() else None
    items, total = await search_mod.run(state.search_sessions or sessions, body, state.settings, qvec=qvec,
                                        stats=stats, categories_of=service.category_and_descendants)
    return Page[ServerSummary].of([ServerSummary.model_validate(i) for i in items], total, body)


@router.get("/me/servers", response_model=MyServersPage,
            summary="My servers, newest first, with their status (signed in)")
async def my_servers(who: CurrentUser, sessions: Sessions, page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                     page_size: Annotated[int, Query(ge=1, le=100)] = 20) -> MyServersPage:
    """What the caller submitted: every status (waiting for review, rejected with the reason,
    deploying, published, failed with the reason, withdrawn), never another user's rows."""
    async with sessions() as s:
        rows, total = await repository.owned_servers(s, who.user_id, page, page_size)
    items = [MyServer(slug=r.slug, name=r.name, version=r.version, title=r.title, status=r.status,
                      status_detail=r.status_detail, review_reason=r.review_reason, withdrawn=r.withdrawn,
                      tools=len(r.tools or []), updated_at=r.updated_at.isoformat() if r.updated_at else None)
             for r in rows]
    return MyServersPage(items=items, total=total, page=page, page_size=page_size)


@router.get("/servers/{slug}", response_model=ServerDetail)
async def get_server(slug: str, who: OptionalUser, settings: CatalogSettings, sessions: Sessions,
                     ) -> dict[str, Any]:
    async with sessions() as s:
        row = await repository.server_by_slug(s, slug)
        if row is None or not service.visible_to(row, who):
            raise NotFound(f"no server {slug!r}")
        searchable = await service.is_searchable(s, row.id)
    return service.detail(row, settings, searchable)


@router.patch("/servers/{slug}", response_model=ServerDetail)
async def update_server(slug: str, body: ServerUpdate, who: CurrentUser, settings: CatalogSettings,
                        sessions: Sessions) -> dict[str, Any]:
    async with transaction(sessions) as s:
        row = await service.update_server(s, slug, body, who)
        searchable = await service.is_searchable(s, row.id)
    return service.detail(row, settings, searchable)


@router.post("/servers/{slug}/withdraw", response_model=StatusChange)
async def withdraw_server(slug: str, who: CurrentUser, sessions: Sessions) -> StatusChange:
    async with transaction(sessions) as s:
        row, changed = await service.disable(s, slug, who, "withdrawn by its owner", withdraw=True)
    return StatusChange(slug=row.slug, status=row.status, changed=changed)


@router.post("/servers/{slug}/disable", response_model=StatusChange)
async def disable_server(slug: str, who: AdminUser, sessions: Sessions,
                         body: DisableRequest | None = None) -> StatusChange:
    async with transaction(sessions) as s:
        row, changed = await service.disable(s, slug, who, body.reason if body else None)
    return StatusChange(slug=row.slug, status=row.status, changed=changed)


@router.post("/servers/{slug}/enable", response_model=StatusChange)
async def enable_server(slug: str, who: AdminUser, sessions: Sessions) -> StatusChange:
    async with transaction(sessions) as s:
        row, changed = await service.enable(s, slug, who)
    return StatusChange(slug=row.slug, status=row.status, changed=changed)


# ---- categories ----------------------------------------------------------------------------------

@router.get("/categories", response_model=CategoryList)
async def list_categories(sessions: Sessions) -> dict[str, Any]:
    async with sessions() as s:
        return {"items": await service.category_tree(s)}


@router.put("/categories/{slug}", response_model=CategoryOut)
async def put_category(slug: str, body: CategoryIn, sessions: Sessions, who: AdminUser) -> dict[str, Any]:
    return await review.put_category(slug, body, sessions, who)


@router.delete("/categories/{slug}", status_code=204)
async def delete_category(slug: str, sessions: Sessions, who: AdminUser) -> Response:
    return await review.delete_category(slug, sessions, who)


# ---- feed and news ------------------------------------------------------------------------------

@router.get("/feed", response_model=FeedPage)
async def feed(settings: CatalogSettings, sessions: Sessions, page: Annotated[int, Query(ge=1, le=10_000)] = 1,
               page_size: Annotated[int, Query(ge=1, le=100)] = 20) -> FeedPage:
    """Servers first published today (midnight to midnight in the configured zone)."""
    start, end, day = service.today_bounds(settings.feed_timezone)
    async with sessions() as s:
        rows, total = await repository.published_between(s, start, end, page, page_size)
    return FeedPage(date=day, timezone=settings.feed_timezone, items=[_summary(r) for r in rows], total=total,
                    page=page, page_size=page_size)


def _summary(r: Server) -> ServerSummary:
    return ServerSummary(id=r.id, slug=r.slug, name=r.name, title=r.title, description=r.description,
                         icon=r.icon, category=r.category, tags=r.tags, tools=[t.get("name", "") for t in r.tools],
                         calls=r.calls, stars=r.stars, featured=r.featured, published_at=r.published_at)


@router.get("/news", response_model=NewsPage, response_model_exclude_unset=True)
async def news(sessions: Sessions, page: Annotated[int, Query(ge=1, le=10_000)] = 1,
               page_size: Annotated[int, Query(ge=1, le=100)] = 20,
               kind: Annotated[str | None, Query(pattern="^(announcement|server_published)$")] = None,
               ) -> NewsPage:
    """Published announcements and notable catalog events (first publication of a server), pinned
    first, then newest first. Announcements come from goods (scheduled ones appear at their
    ``publish_at``, expired ones disappear); admin-posted items are kept as they were."""
    async with sessions() as s:
        rows, total = await repository.visible_news(s, kind, page, page_size)
    items = [NewsItem(id=str(n.id), kind=n.kind, title=n.title, body=n.body, server_slug=n.server_slug,
                      published_at=n.published_at.isoformat(), pinned=n.pinned,
                      expires_at=n.expires_at.isoformat() if n.expires_at else None,
                      **({"translations": n.translations} if n.translations else {})) for n in rows]
    return NewsPage(items=items, total=total, page=page, page_size=page_size)


@router.post("/news", status_code=201, response_model=NewsPosted)
async def post_news(body: NewsIn, who: AdminUser, sessions: Sessions) -> NewsPosted:
    async with transaction(sessions) as s:
        n = await service.add_news(s, "announcement", body.title, body.body, published=body.published,
                                   author_id=who.user_id)
        await review.record(s, who, "news.post", "news", str(n.id),
                            after={"title": n.title, "published": n.published})
    return NewsPosted(id=str(n.id), kind=n.kind, title=n.title, published=n.published)


# ---- registry-compatible feed --------------------------------------------------------------------

def _encode_cursor(name: str, sid: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([name, str(sid)]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, sid = json.loads(raw)
        assert isinstance(name, str) and isinstance(sid, str)
        return name, sid
    except Exception:
        raise BadRequest("cursor: not a cursor this server issued") from None


@registry_router.get("/servers", response_model=RegistryList, response_model_exclude_unset=True)
async def registry_servers(sessions: Sessions,
                           cursor: Annotated[str | None, Query(max_length=500)] = None,
                           limit: Annotated[int, Query(ge=1, le=100)] = 30,
                           search: Annotated[str | None, Query(max_length=200)] = None,
                           updated_since: datetime | None = None,
                           version: Annotated[str | None, Query(max_length=20)] = None) -> dict[str, Any]:
    """Published servers as ``server.json`` (the official registry's API shape), name order."""
    after = _decode_cursor(cursor) if cursor else None
    async with sessions() as s:
        rows = await repository.registry_page(s, search, updated_since, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    meta: dict[str, Any] = {"count": len(rows)}
    if more:
        meta["nextCursor"] = _encode_cursor(rows[-1].name, rows[-1].id)
    return {"servers": [service.as_server_json(r) for r in rows], "metadata": meta}


@registry_router.get("/servers/{name:path}/versions", response_model=RegistryList,
                     response_model_exclude_unset=True)
async def registry_server_versions(name: str, sessions: Sessions) -> dict[str, Any]:
    """Every published version of one server (``name`` URL-encoded, ``io.github.user%2Fweather``,
    as the official registry does; an unencoded slash works too), newest first."""
    async with sessions() as s:
        rows = await service.registry_versions(s, name)
    if not rows:
        raise NotFound(f"no published server named {name!r}")
    return {"servers": [service.as_server_json(r, latest=i == 0) for i, r in enumerate(rows)],
            "metadata": {"count": len(rows)}}


@registry_router.get("/servers/{name:path}/versions/{version}", response_model=RegistryServer)
async def registry_server_version(name: str, version: str, sessions: Sessions) -> dict[str, Any]:
    """One version of a server as ``server.json``; ``latest`` names the newest."""
    async with sessions() as s:
        rows = await service.registry_versions(s, name)
    for i, r in enumerate(rows):
        if version == r.version or (version == "latest" and i == 0):
            return service.as_server_json(r, latest=i == 0)
    raise NotFound(f"no published version {version!r} of {name!r}")


# ---- internal (deployer) -------------------------------------------------------------------------

@internal_router.get("/archives/{sha256}")
async def get_archive(sha256: str, _: PlatformCaller, sessions: Sessions) -> Response:
    """An uploaded archive's bytes by content address, for the deployer (``wemcp.common.archive_client``,
    which checks them against the address)."""
    if not SHA256.match(sha256):
        raise NotFound("no such archive")
    async with sessions() as s:
        a = await repository.get_archive(s, sha256)
    if a is None:
        raise NotFound("no such archive")
    return Response(a.data, media_type="application/gzip" if a.format == "tar.gz" else "application/zip",
                    headers={"X-Archive-Manifest": json.dumps(a.manifest, ensure_ascii=True)[:4000]})


__all__ = ["Category"]
