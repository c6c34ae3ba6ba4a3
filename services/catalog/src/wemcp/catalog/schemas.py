"""HTTP shapes. Every field of a submission is bounded, so a bad one is a 422 naming that field."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from fastapi.encoders import jsonable_encoder
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
    model_validator,
)

from wemcp.common.events.spec import INPUT_NAME, VERSION
from wemcp.common.pagination import PageRequest

NAME_RE = r"^[a-zA-Z0-9][a-zA-Z0-9.-]{0,100}/[a-zA-Z0-9][a-zA-Z0-9._-]{0,100}$"
SLUG_RE = r"^[a-z0-9][a-z0-9-]{0,63}$"
Tag = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=32,
                                       pattern=r"^[\w\u3400-\u9fff][\w\u3400-\u9fff .+#-]*$")]
Version = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                           pattern=VERSION.pattern),
                    AfterValidator(lambda v: _not_latest(v))]
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=8, max_length=500,
                                       pattern=r"^https?://[^\s]+$")]
EnvName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=INPUT_NAME.pattern)]
Short = Annotated[str, StringConstraints(max_length=500)]
M = TypeVar("M", bound=BaseModel)


def _needs_one(model: M, fields: tuple[str, ...], message: str) -> M:
    """``model`` when one of ``fields`` is given (not empty), else a validation error saying ``message``."""
    if not any(getattr(model, f) for f in fields):
        raise ValueError(message)
    return model


def _not_latest(v: str | None) -> str | None:
    if v is not None and v.lower() in {"latest", "*", "next"}:
        raise ValueError("pin an exact version, not a moving tag like 'latest'")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


# ---- server.json (the subset WeMcp keeps) -------------------------------------------------------

class InputSpec(_Strict):
    name: EnvName
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    isRequired: bool = False
    isSecret: bool = False
    default: Short | None = None
    format: Literal["string", "number", "boolean", "filepath"] | None = None
    choices: list[Short] | None = Field(default=None, max_length=50)
    value: Short | None = None

    @model_validator(mode="after")
    def _no_secret_values(self) -> InputSpec:
        # A secret's value is never stored: the platform fills it per call from the vault.
        if self.isSecret:
            self.default = None
            self.value = None
        return self


class Argument(_Strict):
    type: Literal["positional", "named"] = "positional"
    name: Annotated[str, StringConstraints(max_length=100)] | None = None
    value: Short | None = None
    valueHint: Annotated[str, StringConstraints(max_length=100)] | None = None
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    isRequired: bool = False
    isSecret: bool = False
    default: Short | None = None


class Transport(_Strict):
    type: Literal["stdio", "streamable-http", "sse"] = "stdio"
    url: Url | None = None


class PackageSpec(_Strict):
    registryType: Literal["npm", "pypi", "oci"]
    identifier: Annotated[str, StringConstraints(min_length=1, max_length=214,
                                                 pattern=r"^[@a-zA-Z0-9][a-zA-Z0-9@/._:-]*$")]
    version: Version | None = None
    runtimeHint: Literal["npx", "uvx", "docker", "node", "python", "pipx"] | None = None
    transport: Transport = Field(default_factory=Transport)
    packageArguments: list[Argument] = Field(default_factory=list, max_length=50)
    environmentVariables: list[InputSpec] = Field(default_factory=list, max_length=50)


class RemoteSpec(_Strict):
    type: Literal["streamable-http", "sse"]
    url: Url
    headers: list[InputSpec] = Field(default_factory=list, max_length=30)


class ServerJson(_Strict):
    name: Annotated[str, StringConstraints(pattern=NAME_RE, max_length=200)]
    title: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    version: Version | None = None
    websiteUrl: Url | None = None
    repository: dict[str, Annotated[str, StringConstraints(max_length=500)]] | None = None
    packages: list[PackageSpec] = Field(default_factory=list, max_length=10)
    remotes: list[RemoteSpec] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _something_to_run(self) -> ServerJson:
        return _needs_one(self, ("packages", "remotes"),
                          "a server.json needs at least one entry in packages or remotes")


# ---- Claude desktop ----------------------------------------------------------------------------

class McpServerEntry(_Strict):
    command: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    args: list[Short] = Field(default_factory=list, max_length=100)
    env: dict[EnvName, Short] = Field(default_factory=dict, max_length=50)
    type: Literal["stdio", "http", "streamable-http", "sse"] | None = None
    url: Url | None = None
    headers: dict[Annotated[str, StringConstraints(min_length=1, max_length=100)], Short] = Field(
        default_factory=dict, max_length=30)

    @model_validator(mode="after")
    def _command_or_url(self) -> McpServerEntry:
        return _needs_one(self, ("command", "url"), "give either a command (npx, uvx, docker) or a url")


# ---- the submission ----------------------------------------------------------------------------

class ServerSubmit(_Strict):
    """``POST /api/v1/servers``. Exactly one source: ``server_json``, ``mcp_servers``, ``openapi``
    or ``openapi_url``. A bare server.json, a bare ``{"mcpServers": ...}`` object or a bare OpenAPI
    document is recognised too."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    server_json: ServerJson | None = None
    mcp_servers: dict[Annotated[str, StringConstraints(min_length=1, max_length=100)], McpServerEntry] | None = \
        Field(default=None, min_length=1, max_length=1)
    openapi: dict[str, Any] | None = None
    openapi_url: Url | None = None
    base_url: Url | None = None

    name: Annotated[str, StringConstraints(pattern=NAME_RE, max_length=200)] | None = None
    version: Version | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    readme: Annotated[str, StringConstraints(max_length=100_000)] | None = None
    icon: Url | None = None
    category: Annotated[str, StringConstraints(pattern=SLUG_RE)] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=10)
    # "stdio-local": the server runs on its users' machines; the platform lists its tools and shows
    # the config to run it, and hosts nothing
    transport: Literal["hosted", "stdio-local"] | None = None
    # a hosted server that calls APIs: it reaches the internet through the platform's egress proxy
    # only (public addresses; the hosts it reaches are listed on its page). Off by default.
    network: bool = False

    @model_validator(mode="before")
    @classmethod
    def _recognise_bare_documents(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        sources = {"server_json", "mcp_servers", "openapi", "openapi_url"}
        if sources & data.keys() and not (isinstance(data.get("openapi"), str)):
            return data
        if "mcpServers" in data:
            rest = {k: v for k, v in data.items() if k != "mcpServers"}
            return {**rest, "mcp_servers": data["mcpServers"]}
        if isinstance(data.get("openapi"), str) or "swagger" in data:
            return {"openapi": data}
        if "packages" in data or "remotes" in data or "$schema" in data:
            rest = {k: data[k] for k in ("transport",) if k in data}  # the envelope's, not server.json's
            return {**rest, "server_json": {k: v for k, v in data.items() if k not in rest}}
        return data

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ServerSubmit:
        given = [n for n in ("server_json", "mcp_servers", "openapi", "openapi_url") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one source: server_json, mcp_servers (or a bare mcpServers "
                             "object), openapi (or a bare OpenAPI document) or openapi_url"
                             + (f"; got {', '.join(given)}" if given else ""))
        return self


class ArchiveManifest(_Strict):
    """The small manifest that comes with an uploaded source archive."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Annotated[str, StringConstraints(pattern=NAME_RE, max_length=200)]
    version: Version
    title: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    runtime: Literal["node", "python"]
    entrypoint: Annotated[str, StringConstraints(min_length=1, max_length=200,
                                                 pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")]
    args: list[Short] = Field(default_factory=list, max_length=50)
    environmentVariables: list[InputSpec] = Field(default_factory=list, max_length=50)
    category: Annotated[str, StringConstraints(pattern=SLUG_RE)] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=10)
    network: bool = False  # as ServerSubmit.network

    @field_validator("entrypoint")
    @classmethod
    def _inside(cls, v: str) -> str:
        if ".." in v.split("/"):
            raise ValueError("the entrypoint must stay inside the archive")
        return v


class SubmitAccepted(BaseModel):
    id: UUID
    slug: str
    status: str
    name: str
    version: str
    duplicate: bool = False


class ImportRejected(BaseModel):
    index: int  # the entry's position in ``servers``
    error: str


class ImportResult(BaseModel):
    accepted: list[SubmitAccepted]
    rejected: list[ImportRejected]


class ServerUpdate(_Strict):
    """``PATCH /api/v1/servers/{slug}``: owners edit presentation; admins also category/featured."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    readme: Annotated[str, StringConstraints(max_length=100_000)] | None = None
    icon: Url | None = None
    tags: list[Tag] | None = Field(default=None, max_length=10)
    category: Annotated[str, StringConstraints(pattern=SLUG_RE)] | None = None
    featured: bool | None = None


class DisableRequest(_Strict):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


# ---- search ------------------------------------------------------------------------------------

class SearchRequest(PageRequest):
    query: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    category: Annotated[str, StringConstraints(pattern=SLUG_RE)] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=10)
    sort: Literal["relevance", "newest", "popular", "name"] = "relevance"
    # only servers whose last health probe was up (or that are idle after one that was)
    healthy: bool = False
    # Which retrievers take part; the product uses hybrid, the others exist to measure it.
    mode: Literal["hybrid", "text", "fulltext", "trigram", "vector"] = "hybrid"


class ServerSummary(BaseModel):
    id: UUID
    slug: str
    name: str
    title: str
    description: str
    icon: str
    category: str | None
    tags: list[str]
    tools: list[str]
    calls: int
    stars: int
    featured: bool
    published_at: datetime | None
    score: float | None = None
    hosting: str = "hosted"  # hosted | local (its users run it) | unhosted (crawled: listed only)
    health: str | None = None  # up | degraded | down | idle (None: not probed)


class CategoryIn(_Strict):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    slug: Annotated[str, StringConstraints(pattern=SLUG_RE)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    parent: Annotated[str, StringConstraints(pattern=SLUG_RE)] | None = None
    position: int = Field(default=0, ge=0, le=10_000)


class NewsIn(_Strict):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    body: Annotated[str, StringConstraints(max_length=20_000)] = ""
    published: bool = True


class StatusChange(BaseModel):
    """A server's status after withdraw, disable or enable; ``changed`` is false when it was already so."""
    slug: str
    status: str
    changed: bool


class ServerStatusRow(BaseModel):
    """A server in a list of servers by status (the owner's, the admins')."""
    model_config = ConfigDict(extra="forbid")
    slug: str
    name: str
    version: str
    title: str
    status: str
    status_detail: str | None


class MyServer(ServerStatusRow):
    review_reason: str | None
    withdrawn: bool
    tools: int  # how many
    updated_at: str | None  # ISO 8601


class MyServersPage(BaseModel):
    items: list[MyServer]
    total: int
    page: int
    page_size: int


class FeedPage(BaseModel):
    date: str  # the day shown, in ``timezone``
    timezone: str
    items: list[ServerSummary]
    total: int
    page: int
    page_size: int


class NewsItem(BaseModel):
    """One news item; ``translations`` only when the item has them (left out otherwise)."""
    id: str
    kind: str
    title: str
    body: str
    server_slug: str | None
    published_at: str  # ISO 8601
    pinned: bool
    expires_at: str | None
    translations: dict[str, Any] | None = None


class NewsPage(BaseModel):
    items: list[NewsItem]
    total: int
    page: int
    page_size: int


class NewsPosted(BaseModel):
    id: str
    kind: str
    title: str
    published: bool


# ---- answers built as dicts by the use cases ------------------------------------------------------
# These describe the JSON the routes answered before they declared a model, key for key
# (``extra="forbid"``: a key a use case adds but the model does not list fails the request). Times
# that were datetimes stay as FastAPI's encoder wrote them (``isoformat()``, ``+00:00``; pydantic would
# write ``Z``), and free-form JSON (a spec, tools, a config) is passed through that encoder.

def _isoformat(v: datetime) -> str:
    return v.isoformat()


Time = Annotated[datetime, PlainSerializer(_isoformat, return_type=str, when_used="json")]
Json = Annotated[Any, PlainSerializer(jsonable_encoder, when_used="json")]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NameBadge(_Out):
    """The detail's ``name_verification``: ``verified`` is the badge (``names.badge``)."""
    verified: bool
    method: str | None
    namespace: str
    namespace_kind: str
    verified_at: str | None


class ServerDetail(_Out):
    """``GET``/``PATCH /api/v1/servers/{slug}`` (``service.detail``)."""
    id: str
    slug: str
    name: str
    version: str
    title: str
    description: str
    readme: str
    icon: str
    owner_id: UUID | None
    status: str
    status_detail: str | None
    withdrawn: bool
    review_reason: str | None
    source_kind: str
    category: str | None
    tags: list[str]
    featured: bool
    tools: Json
    prompts: Json
    resources: Json
    calls: int
    stars: int
    name_verification: NameBadge
    created_at: Time
    updated_at: Time
    published_at: Time | None
    deployed_at: Time | None
    searchable: bool
    inputs: Json
    spec: Json
    connect: Json
    hosting: str
    health: Json


class CategoryNode(_Out):
    slug: str
    name: str
    parent: str | None
    position: int
    count: int  # servers in it and its descendants
    own_count: int
    children: list[CategoryNode]


class CategoryList(_Out):
    items: list[CategoryNode]


class AdminCategoryList(CategoryList):
    servers_per_category: dict[str, int]  # every status, not only the searchable ones


class CategoryOut(_Out):
    slug: str
    name: str
    parent: str | None
    position: int


# ---- the registry-compatible feed (/v0.1/servers) --------------------------------------------------

class RegistryOfficial(_Out):
    status: str
    publishedAt: Time | None
    updatedAt: Time
    isLatest: bool


class RegistryCatalogMeta(_Out):
    slug: str
    status: str
    tools: int
    nameVerified: bool


class RegistryMeta(_Out):
    official: RegistryOfficial = Field(alias="io.modelcontextprotocol.registry/official")
    catalog: RegistryCatalogMeta = Field(alias="com.wemcp/catalog")


class RegistryServer(_Out):
    """One server as the official registry serves it (``service.as_server_json``)."""
    server: Json  # server.json
    meta: RegistryMeta = Field(alias="_meta")


class RegistryMetadata(_Out):
    count: int
    nextCursor: str | None = None  # left out on the last page (the route excludes unset fields)


class RegistryList(_Out):
    servers: list[RegistryServer]
    metadata: RegistryMetadata


# ---- names (names_api.py) ------------------------------------------------------------------------

class DomainProof(_Out):
    value: str
    dns: str
    http: str


class DomainClaimRead(_Out):
    domain: str
    namespace: str
    verified: bool
    method: str | None
    verified_at: str | None
    created_at: str | None
    covers: list[str]
    proof: DomainProof


class DomainClaimList(_Out):
    items: list[DomainClaimRead]


class GitHubNamespace(_Out):
    login: str
    namespace: str


class MyNamespaces(_Out):
    handle: str | None
    platform_namespace: str
    github: list[GitHubNamespace] | None  # None: auth could not be asked
    domains: list[DomainClaimRead]


class NameClaimed(_Out):
    name: str | None
    slugs: list[str]
    method: str
    verified: bool


class NameTransferred(_Out):
    name: str
    owner_id: str
    slugs: list[str]


# ---- the review queue and the admin area (review.py) -------------------------------------------------

class ReviewRow(ServerStatusRow):
    owner_id: str | None
    source_kind: str
    updated_at: str
    requested_at: str | None


class ReviewQueue(_Out):
    items: list[ReviewRow]
    total: int
    next_cursor: str | None


class AdminServerPage(_Out):
    counts: dict[str, int]
    total: int
    items: list[ReviewRow]
    next_cursor: str | None


class ReviewDetail(_Out):
    """What an admin decides on (``review.review_detail``)."""
    slug: str
    name: str
    version: str
    title: str
    description: str
    owner_id: str | None
    source_kind: str
    status: str
    package_key: str
    requested_at: str | None
    reviewed_by: str | None
    reviewed_at: str | None
    review_reason: str | None
    packages: Json
    remotes: Json
    archive: Json
    network: bool
    inputs: Json
    spec: Json


class PublisherRead(_Out):
    user_id: str
    trusted: bool
    note: str | None
    set_by: str | None
    updated_at: str


class PublisherList(_Out):
    items: list[PublisherRead]
    total: int


def slugify(text: str, max_len: int = 60) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (s[:max_len].strip("-")) or "server"
