"""The deployer's strict view of the shared ``ServerSpec`` (``wemcp.common.events.spec``): the same
models, narrowed to what can be deployed, so a bad submission fails with a reason a user can act on
(``SpecError``) instead of failing somewhere in an install. The wire model accepts every spec the
catalog emits; this view adds the registries' naming rules (npm/PyPI names, an exact version), an
environment variable name a process can have, the closed sets (registry types, transports, runtimes,
``hosting``), a manifest command inside the archive, registry-only requirements, the archive's
content address and ``idleSeconds``' bounds. Each class here is a subclass of the shared one.

Shape: see ``wemcp.common.events.spec``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from wemcp.common.events import spec as wire
from wemcp.common.events.spec import ENV_NAME, PLACEHOLDER, SHA256, VERSION, package_name_problem
from wemcp.common.requirements import check_requirement


class SpecError(ValueError):
    """The spec cannot be deployed; the message says what to change."""


class EnvVar(wire.Input):
    is_required: bool = Field(default=False, alias="isRequired")
    is_secret: bool = Field(default=False, alias="isSecret")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ENV_NAME.match(v):
            raise ValueError(f"environment variable name {v!r} is not a valid identifier")
        return v


class Argument(wire.Argument):
    type: Literal["positional", "named"] = "positional"


class Transport(wire.Transport):
    type: Literal["stdio", "streamable-http", "sse"] = "stdio"


class Package(wire.Package):
    registry_type: Literal["npm", "pypi", "oci"] = Field(alias="registryType")
    transport: Transport = Transport()
    package_arguments: list[Argument] = Field(default_factory=list, alias="packageArguments")
    runtime_arguments: list[Argument] = Field(default_factory=list, alias="runtimeArguments")
    environment_variables: list[EnvVar] = Field(
        default_factory=list, alias="environmentVariables")

    @model_validator(mode="after")
    def _check(self) -> Package:
        problem = package_name_problem(self.registry_type, self.identifier)
        if problem is not None:
            raise ValueError(problem.replace("PyPI package name", "PyPI project name"))
        if self.version is not None and self.version != "latest" and not VERSION.match(self.version):
            raise ValueError(f"version {self.version!r} is not an exact version")
        return self


class Header(wire.Input):
    is_secret: bool = Field(default=False, alias="isSecret")
    is_required: bool = Field(default=False, alias="isRequired")


class Remote(wire.Remote):
    type: Literal["streamable-http", "sse"] = "streamable-http"
    headers: list[Header] = Field(default_factory=list)


class Manifest(wire.Manifest):
    @field_validator("command")
    @classmethod
    def _command(cls, v: str) -> str:
        if v not in ("python", "python3", "node") and not re.match(r"^[A-Za-z0-9._/-]+$", v):
            raise ValueError("manifest.command must be python, node or a relative path inside the archive")
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError("manifest.command must stay inside the archive")
        return v

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, v: list[str]) -> list[str]:
        # registry packages only: no options, paths, URLs or VCS references (see wemcp.common.requirements)
        return [check_requirement(r) for r in v]


class Archive(wire.Archive):
    """An uploaded source archive. Either the deployer's own ``manifest`` (command, args, env,
    requirements), or the catalog's shape (``runtime`` python|node + ``entrypoint`` + ``args``: the
    command is the runtime, its first argument the entrypoint; dependencies come from the archive's
    requirements.txt / package.json), which this view turns into the manifest."""

    manifest: Manifest | None = None
    runtime: Literal["python", "node"] | None = None
    environment_variables: list[EnvVar] = Field(
        default_factory=list, alias="environmentVariables")

    @model_validator(mode="before")
    @classmethod
    def _catalog_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("manifest") is None and data.get("runtime") and data.get("entrypoint"):
            entry = str(data["entrypoint"])
            if entry.startswith("/") or ".." in entry.split("/"):
                raise ValueError("archive.entrypoint must stay inside the archive")
            data = {**data, "manifest": {"command": data["runtime"], "args": [entry, *(data.get("args") or [])]}}
        return data

    @model_validator(mode="after")
    def _check(self) -> Archive:
        if not (self.sha256 or self.path):
            raise ValueError("archive needs sha256 or path")
        if self.manifest is None:
            raise ValueError("archive needs a manifest, or runtime and entrypoint")
        if self.sha256 and not SHA256.match(self.sha256):
            raise ValueError("archive.sha256 must be 64 lowercase hex digits")
        if self.path and (self.path.startswith("/") or ".." in self.path.split("/") or "\\" in self.path):
            raise ValueError("archive.path must be a file name inside the archive store")
        return self


class DeploySpec(wire.ServerSpec):
    packages: list[Package] = Field(default_factory=list)
    remotes: list[Remote] = Field(default_factory=list)
    archive: Archive | None = None
    # "hosted" (default): the platform runs the server and routes to it. "local": users run it on their
    # own machines; the deployer runs it once in the sandbox without secrets to list its tools, prompts
    # and resources, then stops it (server.deployed with no endpoints).
    hosting: Literal["hosted", "local"] = "hosted"
    # How long a hosted server may sit idle before its child is stopped (scale to zero); None: the
    # deployer's default (WEMCP_DEPLOYER_IDLE_SECONDS). The deployer clamps it to its maximum.
    idle_seconds: float | None = Field(default=None, alias="idleSeconds", ge=10, le=86400)

    @property
    def kind(self) -> str:
        """What will be deployed: the first package, else the archive, else the first remote (the wire's
        kind, where an OpenAPI source counts as a remote)."""
        kind = super().kind
        return "remote" if kind == "openapi" else kind

    @property
    def package(self) -> Package | None:
        return self.packages[0] if self.packages else None

    def env_vars(self) -> list[EnvVar]:
        if self.package:
            return list(self.package.environment_variables)
        return list(self.archive.environment_variables) if self.archive else []


def parse_spec(raw: wire.ServerSpec | dict[str, Any] | None) -> DeploySpec:
    """The deployable view of a spec (the event's ``ServerSpec``, or its JSON as stored), or
    ``SpecError`` saying what to change."""
    if isinstance(raw, wire.ServerSpec):
        raw = raw.to_wire()
    try:
        spec = DeploySpec.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise SpecError(f"the server spec is invalid at {where}: {first['msg'].removeprefix('Value error, ')}") \
            from None
    if not (spec.packages or spec.remotes or spec.archive):
        raise SpecError("the server spec has no packages, remotes or archive: nothing to deploy")
    if spec.hosting == "local" and spec.kind == "remote":
        raise SpecError("hosting \"local\" is for stdio packages and archives users run themselves; "
                        "a remote URL is never hosted: drop \"hosting\"")
    pkg = spec.package
    if pkg is not None:
        if pkg.registry_type == "oci":
            raise SpecError("OCI images are not hosted by the local backend yet; publish the server to npm or "
                            "PyPI, upload a source archive, or register a remote URL")
        if pkg.transport.type != "stdio":
            raise SpecError(f"package transport {pkg.transport.type!r} is not supported for hosting; "
                            "hosted packages must speak stdio (the platform bridges it to HTTP)")
    return spec


def fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{NAME}`` placeholders; unknown names stay as they are."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def package_argv(pkg: Package, values: dict[str, str]) -> list[str]:
    out: list[str] = []
    for arg in pkg.package_arguments:
        value = arg.value if arg.value is not None else arg.default
        if arg.type == "named":
            if not arg.name:
                continue
            if value is None:
                out.append(arg.name)
            else:
                out.extend([arg.name, fill(value, values)])
        elif value is not None:
            out.append(fill(value, values))
    return out


# What a required secret holds while the deployer starts a server to list its tools: many servers
# refuse to start without their key (they check it is set, not that it works) yet list their tools
# fine; the value is no secret and works nowhere. Callers' own values start their own children.
INTROSPECTION_PLACEHOLDER = "wemcp-introspection-placeholder"


def introspection_env(spec: DeploySpec) -> dict[str, str]:
    """Placeholders for the required secret variables that have no value (see above)."""
    return {v.name: INTROSPECTION_PLACEHOLDER for v in spec.env_vars()
            if v.is_secret and v.is_required and v.value is None and v.default is None}


def base_env(spec: DeploySpec) -> dict[str, str]:
    """Non-secret values and defaults declared by the spec (secrets come per credential set)."""
    env: dict[str, str] = {}
    for var in spec.env_vars():
        v = var.value if var.value is not None else var.default
        if v is not None and not var.is_secret:
            env[var.name] = v
    if spec.archive is not None and spec.archive.manifest is not None:
        env.update(spec.archive.manifest.env)
    return env
