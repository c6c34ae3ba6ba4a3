"""HTTP API of the catalog (behind the gateway: /api/v1/servers, /categories, /feed, /news, /v0.1)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from pydantic import ValidationError
from sqlalchemy import String, cast, func, or_, select

from wemcp.catalog import names, review, service
from wemcp.catalog import search as search_mod
from wemcp.catalog.archive import check_archive
from wemcp.catalog.models import Archive, Category, News, SearchDoc, Server
from wemcp.catalog.normalize import Normalized, field_error, normalize, normalize_archive, normalize_server_json
from wemcp.catalog.resolve import resolve_unpinned
from wemcp.catalog.schemas import (
    ArchiveManifest,
    CategoryIn,
    DisableRequest,
    NewsIn,
    SearchRequest,
    ServerJson,
    ServerSubmit,
    ServerSummary,
    ServerUpdate,
    SubmitAccepted,
)
from wemcp.catalog.state import from_request
from wemcp.common.db import transaction
from wemcp.common.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from wemcp.common.events.spec import SHA256
from wemcp.common.identity import AdminUser, CurrentUser, OptionalUser, identity_of
from wemcp.common.pagination import Page

router = APIRouter(prefix="/api/v1", tags=["catalog"])
registry_router = APIRouter(prefix="/v0.1", tags=["registry"])
internal_router = APIRouter(prefix="/internal", tags=["internal"], include_in_schema=False)


def _sessions(request: Request) -> Any:
    return request.app.state.runtime.sessions


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
async def submit_server(body: ServerSubmit, request: Request, who: CurrentUser) -> SubmitAccepted:
    """Submit a server: a server.json, a Claude-desktop ``mcpServers`` object, or an OpenAPI document
    (inline or by URL). Packages without a version are pinned to their latest release. Answers 202:
    deployment happens asynchronously."""
    state = from_request(request)
    settings = state.settings
    fetched = None
    if body.openapi_url:
        fetched = await service.fetch_openapi(body.openapi_url, settings)
    n = with_network(normalize(body, fetched), body.network)
    await resolve_unpinned(n, state.resolver)  # npx pkg, uvx pkg: the latest release, as an exact version
    async with transaction(_sessions(request)) as s:
        row, dup = await service.submit(s, n, who, limits=settings, names=names.context_of(request))
    return _accepted(row, dup)


@router.post("/servers/archive", status_code=202, response_model=SubmitAccepted)
async def submit_archive(request: Request, who: CurrentUser,
                         manifest: Annotated[str, Form(max_length=20_000)],
                         archive: Annotated[UploadFile, File()]) -> SubmitAccepted:
    """Submit a source archive (.tar.gz or .zip) with a small JSON manifest."""
    settings = from_request(request).settings
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
    async with transaction(_sessions(request)) as s:
        if await s.get(Archive, checked.sha256) is None:
            s.add(Archive(sha256=checked.sha256, size=checked.size, expanded_size=checked.expanded,
                          entries=checked.entries, format=checked.format, manifest=m.model_dump(),
                          data=data, owner_id=who.user_id))
        n.version = m.version
        row, dup = await service.submit(s, n, who, limits=settings, names=names.context_of(request))
    return _accepted(row, dup)


@router.post("/servers/import", status_code=202)
async def import_registry(request: Request, who: AdminUser, body: dict[str, Any]) -> dict[str, Any]:
    """Import a registry feed page (``{"servers": [{"server": {...}}, ...]}`` as served by
    ``/v0.1/servers``) as submissions. Bad entries are reported, good ones accepted."""
    entries = body.get("servers")
    if not isinstance(entries, list) or not entries or len(entries) > 500:
        raise Unprocessable("servers: give a list of 1 to 500 entries")
    accepted, rejected = [], []
    async with transaction(_sessions(request)) as s:
        for i, entry in enumerate(entries):
            doc = entry.get("server", entry) if isinstance(entry, dict) else entry
            try:
                n = normalize_server_json(ServerJson.model_validate(doc), kind="import")
            except (ValidationError, Unprocessable) as exc:
                rejected.append({"index": i, "error": str(exc).splitlines()[0][:300]})
                continue
            row, dup = await service.submit(s, n, who, source_kind="import")
            accepted.append(_accepted(row, dup).model_dump(mode="json"))
    return {"accepted": accepted, "rejected": rejected}


# ---- search and detail ---------------------------------------------------------------------------

@router.post("/servers/search", response_model=Page[ServerSummary])
async def search_servers(body: SearchRequest, request: Request) -> Page[ServerSummary]:
    """Hybrid search over published, enabled servers; pagination, filters and sort in the body."""
    state = from_request(request)
    qvec = await state.queries.query(body.query) if body.query.strip() and body.mode in {"hybrid", "vector"} \
        else None
    stats = await state.terms.ready(_sessions(request)) if body.query.strip() else None
    async with _sessions(request)() as s, s.begin():
        cats = None
        if body.category:
            cats = await service.category_and_descendants(s, body.category)
        items, total = await search_mod.search(s, body, state.settings, qvec=qvec, categories=cats, stats=stats)
    return Page[ServerSummary].of([ServerSummary.model_validate(i) for i in items], total, body)


@router.get("/me/servers", summary="My servers, newest first, with their status (signed in)")
async def my_servers(request: Request, who: CurrentUser, page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                     page_size: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """What the caller submitted: every status (waiting for review, rejected with the reason,
    deploying, published, failed with the reason, withdrawn), never another user's rows."""
    where = Server.owner_id == who.user_id
    async with _sessions(request)() as s:
        total = (await s.execute(select(func.count()).select_from(Server).where(where))).scalar_one()
        rows = (await s.execute(select(Server).where(where).order_by(Server.updated_at.desc(), Server.id)
                                .limit(page_size).offset((page - 1) * page_size))).scalars().all()
    items = [{"slug": r.slug, "name": r.name, "version": r.version, "title": r.title, "status": r.status,
              "status_detail": r.status_detail, "review_reason": r.review_reason, "withdrawn": r.withdrawn,
              "tools": len(r.tools or []), "updated_at": r.updated_at.isoformat() if r.updated_at else None}
             for r in rows]
    return {"items": items, "total": total, "page": page, "page_size": page_size}


@router.get("/servers/{slug}")
async def get_server(slug: str, request: Request, who: OptionalUser) -> dict[str, Any]:
    async with _sessions(request)() as s:
        row = (await s.execute(select(Server).where(Server.slug == slug))).scalar_one_or_none()
        if row is None or not service.visible_to(row, who):
            raise NotFound(f"no server {slug!r}")
        searchable = await service.is_searchable(s, row.id)
    return service.detail(row, from_request(request).settings, searchable)


@router.patch("/servers/{slug}")
async def update_server(slug: str, body: ServerUpdate, request: Request, who: CurrentUser) -> dict[str, Any]:
    async with transaction(_sessions(request)) as s:
        row = await service.update_server(s, slug, body, who)
        searchable = await service.is_searchable(s, row.id)
    return service.detail(row, from_request(request).settings, searchable)


@router.post("/servers/{slug}/withdraw")
async def withdraw_server(slug: str, request: Request, who: CurrentUser) -> dict[str, Any]:
    async with transaction(_sessions(request)) as s:
        row, changed = await service.disable(s, slug, who, "withdrawn by its owner", withdraw=True)
    return {"slug": row.slug, "status": row.status, "changed": changed}


@router.post("/servers/{slug}/disable")
async def disable_server(slug: str, request: Request, who: AdminUser,
                         body: DisableRequest | None = None) -> dict[str, Any]:
    async with transaction(_sessions(request)) as s:
        row, changed = await service.disable(s, slug, who, body.reason if body else None)
    return {"slug": row.slug, "status": row.status, "changed": changed}


@router.post("/servers/{slug}/enable")
async def enable_server(slug: str, request: Request, who: AdminUser) -> dict[str, Any]:
    async with transaction(_sessions(request)) as s:
        row, changed = await service.enable(s, slug, who)
    return {"slug": row.slug, "status": row.status, "changed": changed}


# ---- categories ----------------------------------------------------------------------------------

@router.get("/categories")
async def list_categories(request: Request) -> dict[str, Any]:
    async with _sessions(request)() as s:
        return {"items": await service.category_tree(s)}


@router.put("/categories/{slug}")
async def put_category(slug: str, body: CategoryIn, request: Request, who: AdminUser) -> dict[str, Any]:
    return await review.put_category(slug, body, request, who)


@router.delete("/categories/{slug}", status_code=204)
async def delete_category(slug: str, request: Request, who: AdminUser) -> Response:
    return await review.delete_category(slug, request, who)


# ---- feed and news ------------------------------------------------------------------------------

@router.get("/feed")
async def feed(request: Request, page: Annotated[int, Query(ge=1, le=10_000)] = 1,
               page_size: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """Servers first published today (midnight to midnight in the configured zone)."""
    settings = from_request(request).settings
    start, end, day = service.today_bounds(settings.feed_timezone)
    where = (SearchDoc.enabled, SearchDoc.published_at >= start, SearchDoc.published_at < end)
    async with _sessions(request)() as s:
        total = (await s.execute(select(func.count()).select_from(SearchDoc).where(*where))).scalar_one()
        rows = (await s.execute(select(Server).join(SearchDoc, SearchDoc.server_id == Server.id).where(*where)
                                .order_by(SearchDoc.published_at.desc(), Server.id)
                                .limit(page_size).offset((page - 1) * page_size))).scalars().all()
    items = [_summary(r) for r in rows]
    return {"date": day, "timezone": settings.feed_timezone, "items": items, "total": total, "page": page,
            "page_size": page_size}


def _summary(r: Server) -> dict[str, Any]:
    return ServerSummary(id=r.id, slug=r.slug, name=r.name, title=r.title, description=r.description,
                         icon=r.icon, category=r.category, tags=r.tags, tools=[t.get("name", "") for t in r.tools],
                         calls=r.calls, stars=r.stars, featured=r.featured,
                         published_at=r.published_at).model_dump(mode="json")


def news_visible() -> list[Any]:
    """What the news feed shows: published, due, not expired."""
    return [News.published, News.published_at <= func.now(),
            or_(News.expires_at.is_(None), News.expires_at > func.now())]


@router.get("/news")
async def news(request: Request, page: Annotated[int, Query(ge=1, le=10_000)] = 1,
               page_size: Annotated[int, Query(ge=1, le=100)] = 20,
               kind: Annotated[str | None, Query(pattern="^(announcement|server_published)$")] = None,
               ) -> dict[str, Any]:
    """Published announcements and notable catalog events (first publication of a server), pinned
    first, then newest first. Announcements come from goods (scheduled ones appear at their
    ``publish_at``, expired ones disappear); admin-posted items are kept as they were."""
    where = news_visible()
    if kind:
        where.append(News.kind == kind)
    async with _sessions(request)() as s:
        total = (await s.execute(select(func.count()).select_from(News).where(*where))).scalar_one()
        rows = (await s.execute(select(News).where(*where)
                                .order_by(News.pinned.desc(), News.published_at.desc(), News.id)
                                .limit(page_size).offset((page - 1) * page_size))).scalars().all()
    items = [{"id": str(n.id), "kind": n.kind, "title": n.title, "body": n.body, "server_slug": n.server_slug,
              "published_at": n.published_at.isoformat(), "pinned": n.pinned,
              "expires_at": n.expires_at.isoformat() if n.expires_at else None,
              **({"translations": n.translations} if n.translations else {})} for n in rows]
    return {"items": items, "total": total, "page": page, "page_size": page_size}


@router.post("/news", status_code=201)
async def post_news(body: NewsIn, request: Request, who: AdminUser) -> dict[str, Any]:
    async with transaction(_sessions(request)) as s:
        n = await service.add_news(s, "announcement", body.title, body.body, published=body.published,
                                   author_id=who.user_id)
        await review.record(s, who, "news.post", "news", str(n.id),
                            after={"title": n.title, "published": n.published})
    return {"id": str(n.id), "kind": n.kind, "title": n.title, "published": n.published}


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


@registry_router.get("/servers")
async def registry_servers(request: Request,
                           cursor: Annotated[str | None, Query(max_length=500)] = None,
                           limit: Annotated[int, Query(ge=1, le=100)] = 30,
                           search: Annotated[str | None, Query(max_length=200)] = None,
                           updated_since: datetime | None = None,
                           version: Annotated[str | None, Query(max_length=20)] = None) -> dict[str, Any]:
    """Published servers as ``server.json`` (the official registry's API shape), name order."""
    cond = service.registry_filter(search, updated_since)
    q = select(Server).where(cond)
    if cursor:
        name, sid = _decode_cursor(cursor)
        q = q.where((Server.name > name) | ((Server.name == name) & (cast(Server.id, String) > sid)))
    async with _sessions(request)() as s:
        rows = (await s.execute(q.order_by(Server.name, cast(Server.id, String))
                                .limit(limit + 1))).scalars().all()
    more = len(rows) > limit
    rows = rows[:limit]
    meta: dict[str, Any] = {"count": len(rows)}
    if more:
        meta["nextCursor"] = _encode_cursor(rows[-1].name, rows[-1].id)
    return {"servers": [service.as_server_json(r) for r in rows], "metadata": meta}


@registry_router.get("/servers/{name:path}/versions")
async def registry_server_versions(name: str, request: Request) -> dict[str, Any]:
    """Every published version of one server (``name`` URL-encoded, ``io.github.user%2Fweather``,
    as the official registry does; an unencoded slash works too), newest first."""
    async with _sessions(request)() as s:
        rows = await service.registry_versions(s, name)
    if not rows:
        raise NotFound(f"no published server named {name!r}")
    return {"servers": [service.as_server_json(r, latest=i == 0) for i, r in enumerate(rows)],
            "metadata": {"count": len(rows)}}


@registry_router.get("/servers/{name:path}/versions/{version}")
async def registry_server_version(name: str, version: str, request: Request) -> dict[str, Any]:
    """One version of a server as ``server.json``; ``latest`` names the newest."""
    async with _sessions(request)() as s:
        rows = await service.registry_versions(s, name)
    for i, r in enumerate(rows):
        if version == r.version or (version == "latest" and i == 0):
            return service.as_server_json(r, latest=i == 0)
    raise NotFound(f"no published version {version!r} of {name!r}")


# ---- internal (deployer) -------------------------------------------------------------------------

def _platform(request: Request) -> None:
    """The trust middleware already refused /internal without a valid assertion; a user's assertion
    (what the gateway would send, were a path to reach here through it) is not the platform calling."""
    if identity_of(request) is not None:
        raise Forbidden("internal routes answer the platform's services, not users")


Platform = Annotated[None, Depends(_platform)]


@internal_router.get("/archives/{sha256}")
async def get_archive(sha256: str, request: Request, _: Platform) -> Response:
    """An uploaded archive's bytes by content address, for the deployer (``wemcp.common.archive_client``,
    which checks them against the address)."""
    if not SHA256.match(sha256):
        raise NotFound("no such archive")
    async with _sessions(request)() as s:
        a = await s.get(Archive, sha256)
    if a is None:
        raise NotFound("no such archive")
    return Response(a.data, media_type="application/gzip" if a.format == "tar.gz" else "application/zip",
                    headers={"X-Archive-Manifest": json.dumps(a.manifest, ensure_ascii=True)[:4000]})


__all__ = ["Category"]
