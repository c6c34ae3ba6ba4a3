"""Archive uploads (traversal, links, bombs), categories with counts, feed, news and the
registry-compatible feed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
import zipfile

import pytest
from sqlalchemy import func, select

from services.catalog.tests.catalog_helpers import as_admin, as_platform, as_user, publish, wait_for
from wemcp.catalog.models import Archive, Server
from wemcp.common.archive_client import ArchiveClient, ArchiveNotFound, ArchiveUnavailable
from wemcp.common.events.servers import ServerDeployed

MANIFEST = {"name": "io.wemcp.acme/notes", "version": "0.1.0", "runtime": "node", "entrypoint": "index.js",
            "description": "Notes"}


def tgz(entries: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo("link")
            info.type, info.linkname = tarfile.SYMTYPE, symlink
            tf.addfile(info)
    return buf.getvalue()


def bomb_zip(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.bin", "w", force_zip64=True) as fh:
            chunk = b"\0" * (1 << 20)
            for _ in range(size >> 20):
                fh.write(chunk)
    return buf.getvalue()


def bomb_tgz(size: int) -> bytes:
    """A tar.gz whose one member claims ``size`` bytes (the header alone: the checker must refuse
    it from the claim, before expanding anything)."""
    info = tarfile.TarInfo("zeros.bin")
    info.size = size
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096)


def tar_of_many_zeros(mib: int) -> bytes:
    """A real tar.gz holding ``mib`` MiB of zeros: tiny compressed, large expanded."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=9) as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = mib << 20
        tf.addfile(info, io.BytesIO(b"\0" * info.size))
    return raw.getvalue()


async def _upload(c, data: bytes, manifest=MANIFEST, name="src.tar.gz"):
    return await c.post("/api/v1/servers/archive", headers=as_user(),
                        data={"manifest": json.dumps(manifest) if isinstance(manifest, dict) else manifest},
                        files={"archive": (name, data, "application/octet-stream")})


async def test_archive_upload_and_every_unsafe_archive_refused(catalog):
    app, c = catalog
    bad = [
        (tgz([("../evil.js", b"x")]), "unsafe_path"),
        (tgz([("/etc/passwd", b"x")]), "unsafe_path"),
        (tgz([("a/../../b", b"x")]), "unsafe_path"),
        (tgz([("index.js", b"x")], symlink="/etc/shadow"), "unsafe_entry"),
        (bomb_zip(64 << 20), "archive_too_large"),   # 64 MiB of zeros in a ~64 KiB zip
        (bomb_tgz(1 << 32), "archive_too_large"),    # a member claiming 4 GiB
        (tar_of_many_zeros(60), "archive_too_large"),  # 60 MiB of real zeros, ~60 KiB gzipped
        (b"not an archive at all", "unsupported_format"),
    ]
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("../../escape.py", "x")
    bad.append((zbuf.getvalue(), "unsafe_path"))
    for data, kind in bad:
        assert len(data) < 5_000_000
        r = await _upload(c, data)
        assert r.status_code == 422, (kind, r.status_code, r.text)
        assert r.json()["errors"][0]["type"] == kind, r.text
    r = await _upload(c, tgz([("index.js", b"x")]), manifest={**MANIFEST, "entrypoint": "../x.js"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("manifest.entrypoint")
    r = await _upload(c, tgz([("index.js", b"x")]), manifest="{nope")
    assert r.status_code == 400
    r = await _upload(c, b"\x1f\x8b" + b"\0" * 6_000_000)
    assert r.status_code == 413
    async with app.state.runtime.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Server))).scalar_one() == 0
        assert (await s.execute(select(func.count()).select_from(Archive))).scalar_one() == 0

    good = tgz([("index.js", b"console.log('hi')"), ("package.json", b"{}")])
    r = await _upload(c, good)
    assert r.status_code == 202, r.text
    async with app.state.runtime.sessions() as s:
        row = (await s.execute(select(Server))).scalar_one()
    assert row.source_kind == "archive" and row.spec["archive"]["entrypoint"] == "index.js"
    r = await c.get(f"/internal/archives/{row.spec['archive']['sha256']}", headers=as_platform())
    assert r.status_code == 200 and r.content == good


async def test_archives_by_content_address_through_the_typed_client(catalog, tmp_path):
    """The deployer's way to the bytes (wemcp.common.archive_client) against the real catalog: with the
    service credential it gets exactly the uploaded archive; without it, or with a user's assertion,
    the internal route refuses; an address the catalog does not hold is a clear not-found."""
    _app, c = catalog
    data = tgz([("index.js", b"console.log('by address')"), ("package.json", b"{}")])
    sha = hashlib.sha256(data).hexdigest()
    r = await _upload(c, data, {**MANIFEST, "name": "io.wemcp.acme/by-address"})
    assert r.status_code == 202, r.text

    store = tmp_path / "store"
    fetched = await ArchiveClient("http://catalog", credential=as_platform, client=c).fetch(sha, store)
    assert fetched == store / f"{sha}.tar.gz" and fetched.read_bytes() == data
    with pytest.raises(ArchiveNotFound, match="upload it again"):
        await ArchiveClient("http://catalog", credential=as_platform, client=c).fetch("ab" * 32, store)

    # none, bare identity headers: 401 (the trust middleware); a user's assertion: 403 (not the platform)
    for headers, status in (({}, 401), ({"x-wemcp-user-id": str(uuid.uuid4()), "x-wemcp-user-role": "admin"}, 401),
                            (as_user(), 403), (as_admin(), 403)):
        r = await c.get(f"/internal/archives/{sha}", headers=headers)
        assert r.status_code == status and r.content != data, (headers, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
    with pytest.raises(ArchiveUnavailable, match="answered 403"):
        await ArchiveClient("http://catalog", credential=as_user, client=c).fetch(sha, tmp_path / "other")
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


async def _publish_one(c, infra, pkg: str, title: str, category: str | None = None) -> str:
    body = {"mcpServers": {"x": {"command": "uvx", "args": [f"{pkg}==1.0"]}}, "title": title,
            "description": f"{title} server"}
    if category:
        body["category"] = category
    acc = (await c.post("/api/v1/servers", json=body, headers=as_user())).json()
    await publish(infra.nats_url, ServerDeployed(server_id=uuid.UUID(acc["id"]), slug=acc["slug"]))
    return acc["slug"]


async def test_categories_feed_news_and_registry(catalog, infra):
    _app, c = catalog
    for slug, name, parent in [("dev", "Developer tools", None), ("db", "Databases", "dev"),
                               ("maps", "地图", None)]:
        r = await c.put(f"/api/v1/categories/{slug}", json={"slug": slug, "name": name, "parent": parent},
                        headers=as_admin())
        assert r.status_code == 200, r.text
    assert (await c.put("/api/v1/categories/x", json={"slug": "x", "name": "X"}, headers=as_user())).status_code == 403
    r = await c.put("/api/v1/categories/dev", json={"slug": "dev", "name": "D", "parent": "db"}, headers=as_admin())
    assert r.status_code == 422  # a cycle
    a = await _publish_one(c, infra, "pg-tool", "Postgres tool", "db")
    b = await _publish_one(c, infra, "gh-tool", "GitHub tool", "dev")
    m = await _publish_one(c, infra, "map-tool", "Map tool", "maps")
    await wait_for(lambda: _total(c, {}, 3))

    tree = (await c.get("/api/v1/categories")).json()["items"]
    dev = next(n for n in tree if n["slug"] == "dev")
    assert dev["count"] == 2 and dev["children"][0]["slug"] == "db" and dev["children"][0]["count"] == 1
    # category filter includes sub-categories
    r = await c.post("/api/v1/servers/search", json={"category": "dev", "sort": "name"})
    assert [i["slug"] for i in r.json()["items"]] == [b, a]  # "GitHub tool" < "Postgres tool"
    # pagination in the body
    r = await c.post("/api/v1/servers/search", json={"page": 2, "page_size": 2, "sort": "name"})
    body = r.json()
    assert body["total"] == 3 and body["page"] == 2 and len(body["items"]) == 1
    r = await c.post("/api/v1/servers/search", json={"page_size": 1000})
    assert r.status_code == 422
    r = await c.post("/api/v1/servers/search", json={"sort": "random"})
    assert r.status_code == 422

    feed = (await c.get("/api/v1/feed")).json()
    assert feed["timezone"] == "Asia/Shanghai" and feed["total"] == 3
    news = (await c.get("/api/v1/news")).json()
    assert news["total"] == 3 and all(n["kind"] == "server_published" for n in news["items"])
    r = await c.post("/api/v1/news", json={"title": "WeMcp 上线", "body": "hello"}, headers=as_admin())
    assert r.status_code == 201
    news = (await c.get("/api/v1/news", params={"kind": "announcement"})).json()
    assert [n["title"] for n in news["items"]] == ["WeMcp 上线"]

    page1 = (await c.get("/v0.1/servers", params={"limit": 2})).json()
    assert page1["metadata"]["count"] == 2 and "nextCursor" in page1["metadata"]
    page2 = (await c.get("/v0.1/servers", params={"limit": 2, "cursor": page1["metadata"]["nextCursor"]})).json()
    names = [s["server"]["name"] for s in page1["servers"] + page2["servers"]]
    assert len(names) == 3 and names == sorted(names) and "nextCursor" not in page2["metadata"]
    assert page1["servers"][0]["server"]["packages"][0]["registryType"] == "pypi"
    found = (await c.get("/v0.1/servers", params={"search": "map-tool"})).json()
    assert [s["_meta"]["com.wemcp/catalog"]["slug"] for s in found["servers"]] == [m]
    later = (await c.get("/v0.1/servers", params={"updated_since": "2999-01-01T00:00:00Z"})).json()
    assert later["servers"] == []
    assert (await c.get("/v0.1/servers", params={"cursor": "garbage!"})).status_code == 400

    # importing that feed into another catalog is accepted as submissions (here: duplicates)
    r = await c.post("/api/v1/servers/import", json={"servers": page1["servers"] + [{"server": {"name": "bad"}}]},
                     headers=as_admin())
    assert r.status_code == 202 and len(r.json()["accepted"]) == 2 and len(r.json()["rejected"]) == 1


async def _total(c, body, n):
    return (await c.post("/api/v1/servers/search", json=body)).json()["total"] == n
