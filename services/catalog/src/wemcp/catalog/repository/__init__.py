"""The catalog's SQL, split by subject (docs/architecture.md §5b): ``servers`` (table A, its lists,
submissions, categories, the archive store), ``names`` (handles, domain claims, names),
``review`` (the review queue, publishers), ``projection`` (table B), ``search`` (the search
statements), ``announcements`` (the news feed's projection) and ``db`` (the database's clock,
advisory locks). Every function takes the caller's session; transactions are the caller's.

What the HTTP handlers of ``api.py`` and ``names_api.py`` read is re-exported here."""

from __future__ import annotations

from wemcp.catalog.repository.db import advisory_lock, now
from wemcp.catalog.repository.names import claim_of, claims_of, count_claims, delete_claim, save_claim
from wemcp.catalog.repository.servers import (
    get_archive,
    keep_archive,
    news_visible,
    owned_servers,
    published_between,
    registry_filter,
    registry_page,
    server_by_slug,
    visible_news,
)

__all__ = [
    "advisory_lock",
    "claim_of",
    "claims_of",
    "count_claims",
    "delete_claim",
    "get_archive",
    "keep_archive",
    "news_visible",
    "now",
    "owned_servers",
    "published_between",
    "registry_filter",
    "registry_page",
    "save_claim",
    "server_by_slug",
    "visible_news",
]
