"""``ServerSpec``: the normalised source spec that crosses services in ``server.submitted``.

The catalog builds it from every accepted source (a server.json, an ``mcpServers`` entry, an
OpenAPI document, an uploaded archive; ``wemcp.catalog.normalize``); the deployer deploys it, the
gateway folds its declared inputs into the route table, goods reads its title. Its JSON is a subset
of the official registry's ``server.json`` (camelCase names as there), plus WeMcp's own keys::

    {"name", "version", "title", "description", "websiteUrl", "repository",
     "packages": [{"registryType": "npm"|"pypi"|"oci", "identifier", "version", "runtimeHint",
                   "transport": {"type": "stdio"|"streamable-http"|"sse", "url"},
                   "packageArguments": [{"type": "positional"|"named", "name", "value", "default"}],
                   "runtimeArguments": [...],
                   "environmentVariables": [{"name", "description", "isRequired", "isSecret", "default",
                                             "value", "format", "choices"}]}],
     "remotes": [{"type": "streamable-http"|"sse", "url", "headers": [...inputs...]}],
     "archive": {"sha256": "<hex>" | "path": "<name inside the deployer's archive store>", "size",
                 "runtime": "python"|"node", "entrypoint", "args": [...]       (the catalog's shape)
                 | "manifest": {"command", "args", "env", "requirements"},   (the deployer's own)
                 "environmentVariables": [...]},
     "openapi": {"baseUrl", "operations", "inputs": [...], "document": {...}},
     "network": false, "hosting": "local"|"unhosted" (absent: hosted), "idleSeconds": 600,
     "resolved": [{"registryType", "identifier", "requested", "version", "at"}]}

**The model is the wire format.** It checks structure and types only, never the registries' naming
rules, so every spec the catalog ever emitted (events 30 days back in ``SERVERS``) parses, and keys
it does not know are kept (``extra="allow"``). ``to_wire()`` writes back exactly the keys that were
read or set, so an event re-serialised by a consumer is byte-for-byte the JSON it received. What a
deployment needs on top (an exact version, a valid npm/PyPI name, an environment variable name a
process can have, a manifest command inside the archive ...) is the deployer's stricter view
(``wemcp.deployer.spec``: subclasses of these models that fail with a reason a user can act on).

The naming rules exist here once: ``NPM_NAME``, ``PYPI_NAME``, ``VERSION``, ``ENV_NAME``,
``INPUT_NAME``, ``PLACEHOLDER``, ``SHA256``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# An npm package name, optionally scoped (``@scope/name``): lowercase, as the registry requires.
NPM_NAME = re.compile(r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
# A PyPI project name (PEP 508), optionally with extras (``name[extra1,extra2]``).
PYPI_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9,._-]+\])?$")
# An exact version (no ranges, no spaces), as npm, PyPI and image tags write them; ``latest`` matches
# too: callers that need an exact one refuse the moving tags themselves.
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$")
# An environment variable a process can be given.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# A declared input's name as submissions may write it: an environment variable or an HTTP header
# (``X-Api-Key``), hence dots and dashes.
INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# ``{NAME}`` in a URL, header value or argument: filled per call from the caller's inputs.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# An archive's content address.
SHA256 = re.compile(r"^[0-9a-f]{64}$")

REGISTRY_LABELS = {"npm": "npm", "pypi": "PyPI", "oci": "OCI"}


def package_name_problem(registry: str, identifier: str) -> str | None:
    """Why ``identifier`` is not a valid name on ``registry`` (npm | pypi), None when it is (or the
    registry has no rule here)."""
    rule = {"npm": NPM_NAME, "pypi": PYPI_NAME}.get(registry)
    if rule is None or (len(identifier) <= 214 and rule.match(identifier)):
        return None
    return f"{identifier!r} is not a valid {REGISTRY_LABELS[registry]} package name"


class SpecModel(BaseModel):
    """Base of the spec's parts: camelCase on the wire, snake_case in Python, unknown keys kept."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON form: the keys that were read or set, with their wire names."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Input(SpecModel):
    """A declared input: a package's or archive's environment variable, a remote's header, an OpenAPI
    security scheme's credential. ``is_secret`` / ``is_required`` are None when the spec does not
    say (readers apply their own default: a remote header is secret unless it says not)."""

    name: str
    description: str | None = None
    is_required: bool | None = Field(default=None, alias="isRequired")
    is_secret: bool | None = Field(default=None, alias="isSecret")
    default: str | None = None
    value: str | None = None
    format: str | None = None
    choices: list[str] | None = None


class Argument(SpecModel):
    type: str = "positional"  # positional | named
    name: str | None = None
    value: str | None = None
    default: str | None = None
    value_hint: str | None = Field(default=None, alias="valueHint")


class Transport(SpecModel):
    type: str = "stdio"  # stdio | streamable-http | sse
    url: str | None = None


class Package(SpecModel):
    registry_type: str = Field(alias="registryType")  # npm | pypi | oci
    identifier: str
    version: str | None = None
    runtime_hint: str | None = Field(default=None, alias="runtimeHint")
    transport: Transport = Transport()
    package_arguments: list[Argument] = Field(default_factory=list, alias="packageArguments")
    runtime_arguments: list[Argument] = Field(default_factory=list, alias="runtimeArguments")
    environment_variables: list[Input] = Field(default_factory=list, alias="environmentVariables")

    @property
    def key(self) -> str:
        """The catalog's package key, ``<registryType>:<identifier>``."""
        return f"{self.registry_type}:{self.identifier}"


class Remote(SpecModel):
    type: str = "streamable-http"  # streamable-http | sse
    url: str
    headers: list[Input] = Field(default_factory=list)


class Manifest(SpecModel):
    """How to run an archive: the command (python, node or a file inside it) and its arguments."""

    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    requirements: list[str] = Field(default_factory=list)


class Archive(SpecModel):
    """An uploaded source archive, addressed by its ``sha256`` (or, for the deployer's own tests and
    operators, a ``path`` in its archive store). Either the deployer's ``manifest`` or the catalog's
    ``runtime`` + ``entrypoint`` + ``args`` (see ``run_manifest``)."""

    sha256: str | None = None
    path: str | None = None
    size: int | None = None
    manifest: Manifest | None = None
    runtime: str | None = None  # python | node
    entrypoint: str | None = None
    args: list[str] = Field(default_factory=list)
    environment_variables: list[Input] = Field(default_factory=list, alias="environmentVariables")

    @property
    def run_manifest(self) -> Manifest | None:
        """The manifest to run: the given one, else the catalog's shape (the command is the runtime,
        its first argument the entrypoint; dependencies come from the archive's requirements.txt or
        package.json)."""
        if self.manifest is not None:
            return self.manifest
        if self.runtime and self.entrypoint:
            return Manifest(command=self.runtime, args=[self.entrypoint, *self.args])
        return None


class OpenApiSource(SpecModel):
    """An OpenAPI 3 document adapted to MCP tools by the gateway (nothing is deployed)."""

    base_url: str = Field(alias="baseUrl")
    operations: int | None = None
    inputs: list[Input] = Field(default_factory=list)
    document: dict[str, Any] = Field(default_factory=dict)


class Resolved(SpecModel):
    """A package submitted without a version, pinned at submission to the registry's latest."""

    registry_type: str = Field(alias="registryType")
    identifier: str
    requested: str = "latest"
    version: str
    at: str | None = None


class ServerSpec(SpecModel):
    name: str | None = None
    version: str | None = None
    title: str | None = None
    description: str | None = None
    website_url: str | None = Field(default=None, alias="websiteUrl")
    repository: dict[str, Any] | None = None
    packages: list[Package] = Field(default_factory=list)
    remotes: list[Remote] = Field(default_factory=list)
    archive: Archive | None = None
    openapi: OpenApiSource | None = None
    # a hosted server that may reach the internet through the platform's egress proxy
    network: bool = False
    # absent or "hosted": the platform runs it; "local": users run it, the deployer lists its tools
    # once; "unhosted": a crawled listing, never deployed
    hosting: str | None = None
    # how long a hosted server may sit idle before it is stopped (the deployer bounds it)
    idle_seconds: float | None = Field(default=None, alias="idleSeconds")
    resolved: list[Resolved] | None = None

    @property
    def package(self) -> Package | None:
        return self.packages[0] if self.packages else None

    @property
    def kind(self) -> str:
        """What it is: the first package's registry, else ``archive``, ``openapi`` or ``remote``."""
        if self.packages:
            return self.packages[0].registry_type
        if self.archive is not None:
            return "archive"
        if self.openapi is not None:
            return "openapi"
        return "remote"

    @property
    def package_key(self) -> str:
        """The catalog's package key: what makes two submissions the same server."""
        if self.packages:
            return self.packages[0].key
        if self.remotes:
            return f"remote:{self.remotes[0].url}"
        if self.openapi is not None:
            return f"openapi:{self.openapi.base_url}"
        return f"archive:{self.archive.sha256 if self.archive else ''}"

    def env_vars(self) -> list[Input]:
        """The environment variables the server is started with: its first package's, else its archive's."""
        if self.package is not None:
            return list(self.package.environment_variables)
        return list(self.archive.environment_variables) if self.archive is not None else []
