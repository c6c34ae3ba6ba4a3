"""Every accepted source becomes one spec: a subset of the official registry's ``server.json``
(``name``, ``version``, ``title``, ``description``, ``packages``, ``remotes``), plus ``openapi``
(an OpenAPI document to adapt) or ``archive`` (an uploaded source archive) when that is the source.

Secret values never survive normalisation: an env var or header that looks like a secret becomes a
declared input with ``isSecret: true`` and no value; the platform fills it per call."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from wemcp.catalog.schemas import (
    NAME_RE,
    ArchiveManifest,
    InputSpec,
    McpServerEntry,
    PackageSpec,
    RemoteSpec,
    ServerJson,
    ServerSubmit,
    slugify,
)
from wemcp.common.errors import Unprocessable
from wemcp.common.events.spec import PLACEHOLDER, VERSION, ServerSpec
from wemcp.common.netpolicy import reserved_header

SECRET_HINT = re.compile(r"(key|token|secret|passw|pwd|credential|auth|cookie|private)", re.I)
_DOCKER_VALUE_FLAGS = {"-e", "--env", "-v", "--volume", "-p", "--publish", "--name", "--network", "-w",
                       "--workdir", "--entrypoint", "-u", "--user", "--env-file", "--mount", "--platform"}
_NPX_VALUE_FLAGS = {"-p", "--package", "-c", "--call"}


@dataclass
class Normalized:
    name: str
    version: str
    title: str
    description: str
    package_key: str
    source_kind: str
    spec: dict[str, Any]
    category: str | None = None
    tags: list[str] = field(default_factory=list)
    readme: str = ""
    icon: str | None = None
    # packages that came without a version: (field to name in a 422, the package dict to pin);
    # ``wemcp.catalog.resolve.resolve_unpinned`` fills them in before the submission is stored
    unresolved: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # False when the name was derived (an mcpServers entry or OpenAPI document without `name`): the
    # naming rules (names.py) then list it in the submitter's own namespace
    name_given: bool = True


def field_error(field_path: str, message: str, type_: str = "value_error") -> Unprocessable:
    return Unprocessable(f"{field_path}: {message}",
                         extra={"errors": [{"field": field_path, "in": "body", "message": message, "type": type_}]})


def _looks_secret(name: str) -> bool:
    return bool(SECRET_HINT.search(name))


def _env_inputs(env: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for k, v in env.items():
        secret = _looks_secret(k)
        placeholder = bool(PLACEHOLDER.fullmatch(v.strip())) or v.strip().startswith("<") or not v.strip()
        item: dict[str, Any] = {"name": k, "isSecret": secret, "isRequired": secret or placeholder}
        if not secret and not placeholder:
            item["default"] = v
        out.append(InputSpec.model_validate(item).model_dump(exclude_none=True))
    return out


def _split_npm(spec: str) -> tuple[str, str | None]:
    at = spec.rfind("@")
    if at > 0:
        return spec[:at], spec[at + 1:] or None
    return spec, None


def _split_pypi(spec: str) -> tuple[str, str | None]:
    for sep in ("==", "@"):
        if sep in spec:
            ident, ver = spec.split(sep, 1)
            return ident, ver or None
    return re.split(r"[<>=!~\[]", spec, maxsplit=1)[0], None


def _split_oci(spec: str) -> tuple[str, str | None]:
    base, _, tag = spec.rpartition(":") if ":" in spec.split("/")[-1] else (spec, "", "")
    return (base, tag or None) if tag else (spec, None)


def _first_positional(args: list[str], value_flags: set[str]) -> int | None:
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            if a in value_flags:
                i += 1
            i += 1
            continue
        return i
    return None


def package_from_command(label: str, entry: McpServerEntry) -> dict[str, Any]:
    """``npx``, ``uvx``/``pipx run`` and ``docker run`` commands name a package we can host."""
    where = f"mcp_servers.{label}"
    cmd = (entry.command or "").strip().split("/")[-1]
    args = list(entry.args)
    if cmd in {"npx", "bunx", "pnpx"}:
        registry, hint, flags, splitter = "npm", "npx", _NPX_VALUE_FLAGS, _split_npm
    elif cmd in {"uvx", "pipx"}:
        if cmd == "pipx":
            if not args or args[0] != "run":
                raise field_error(f"{where}.args", "pipx needs `run <package>`")
            args = args[1:]
        registry, hint, flags, splitter = "pypi", "uvx", {"--from", "--with", "--python", "-p"}, _split_pypi
    elif cmd in {"docker", "podman"}:
        if not args or args[0] != "run":
            raise field_error(f"{where}.args", "docker needs `run [options] <image>`")
        args = args[1:]
        registry, hint, flags, splitter = "oci", "docker", _DOCKER_VALUE_FLAGS, _split_oci
    else:
        raise field_error(f"{where}.command",
                          f"unknown package registry for command {entry.command!r}: WeMcp hosts npm (npx), "
                          "PyPI (uvx, pipx run) and OCI (docker run) packages, or a remote url",
                          "unknown_registry")
    idx = _first_positional(args, flags)
    if idx is None:
        raise field_error(f"{where}.args", f"no package named after {cmd}")
    identifier, version = splitter(args[idx])
    if version is not None and version.lower() == "latest" and registry != "oci":
        version = None  # `npx pkg@latest`, `uvx pkg@latest`: resolved to the exact release at submission
    try:
        pkg = PackageSpec.model_validate({
            "registryType": registry, "identifier": identifier, "version": version, "runtimeHint": hint,
            "packageArguments": [{"type": "positional", "value": a} for a in args[idx + 1:]],
            "environmentVariables": _env_inputs(entry.env),
        })
    except Exception as exc:  # a pydantic error inside a derived structure: name the source field
        raise field_error(f"{where}.args", f"cannot read a package from {args[idx]!r}: {_first(exc)}") from None
    return pkg.model_dump(exclude_none=True)


def _first(exc: Exception) -> str:
    errs = getattr(exc, "errors", None)
    if callable(errs):
        e = errs()[0]
        return f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
    return str(exc).splitlines()[0]


def _name_for_package(registry: str, identifier: str) -> str:
    base = slugify(identifier.lstrip("@").replace("/", "-"), 100)
    return {"npm": "com.npmjs", "pypi": "org.pypi", "oci": "io.docker"}.get(registry, "io.wemcp") + "/" + base


def _name_for_url(url: str, title: str | None = None) -> str:
    host = (urlsplit(url).hostname or "remote").lower()
    rdns = ".".join(reversed([p for p in host.split(".") if p]))
    rdns = re.sub(r"[^a-z0-9.-]", "-", rdns)[:100] or "remote"
    tail = slugify(title or (urlsplit(url).path.strip("/").split("/")[0] or "mcp"), 100)
    return f"{rdns}/{tail}"


def _package_key(spec: dict[str, Any]) -> str:
    return ServerSpec.model_validate(spec).package_key


def normalize_server_json(doc: ServerJson, kind: str = "server.json", *, resolve: bool = False) -> Normalized:
    """``resolve``: packages without a version are left for the resolver (a user's submission);
    imports and the crawler keep needing an exact version somewhere in the document."""
    spec = doc.model_dump(exclude_none=True, include={"name", "title", "description", "version", "websiteUrl",
                                                       "repository", "packages", "remotes"})
    version = doc.version or next((p.version for p in doc.packages if p.version), None)
    unresolved = [(f"server_json.packages.{i}.version", p) for i, p in enumerate(spec.get("packages") or [])
                  if not p.get("version")] if resolve else []
    if not version and not unresolved:
        raise field_error("server_json.version", "a version is required (exact, e.g. 1.2.0)", "missing")
    spec["version"] = version or ""
    check_declared_headers(spec)
    return Normalized(name=doc.name, version=version or "", title=doc.title or doc.name.split("/")[-1],
                      description=doc.description, package_key=_package_key(spec), source_kind=kind, spec=spec,
                      unresolved=unresolved)


def normalize_mcp_servers(label: str, entry: McpServerEntry, sub: ServerSubmit) -> Normalized:
    spec: dict[str, Any] = {"packages": [], "remotes": []}
    unresolved: list[tuple[str, dict[str, Any]]] = []
    if entry.url:
        transport = "sse" if entry.type == "sse" or entry.url.rstrip("/").endswith("/sse") else "streamable-http"
        headers = [InputSpec.model_validate({
            "name": k, "isSecret": _looks_secret(k) or v.lower().startswith("bearer "),
            "isRequired": True, "value": v}).model_dump(exclude_none=True) for k, v in entry.headers.items()]
        spec["remotes"].append(RemoteSpec.model_validate({"type": transport, "url": entry.url,
                                                         "headers": headers}).model_dump(exclude_none=True))
        name = sub.name or _name_for_url(entry.url, label)
        version = sub.version or "1.0.0"
    else:
        pkg = package_from_command(label, entry)
        spec["packages"].append(pkg)
        version = pkg.get("version") or sub.version or ""
        if version:
            pkg["version"] = version
        elif pkg["registryType"] == "oci":
            raise field_error(f"mcp_servers.{label}.args", "pin the image tag (e.g. image:1.2.0) or give `version`",
                              "missing_version")
        else:  # resolved to the latest release before it is stored (wemcp.catalog.resolve)
            unresolved.append((f"mcp_servers.{label}.args", pkg))
        name = sub.name or _name_for_package(pkg["registryType"], pkg["identifier"])
    title = sub.title or label
    spec.update(name=name, version=version, title=title, description=sub.description or "")
    check_declared_headers(spec)
    return Normalized(name=name, version=version, title=title, description=sub.description or "",
                      package_key=_package_key(spec), source_kind="mcpServers", spec=spec, unresolved=unresolved)


def normalize_openapi(doc: dict[str, Any], sub: ServerSubmit, where: str = "openapi") -> Normalized:
    ver = doc.get("openapi")
    if "swagger" in doc or not isinstance(ver, str) or not ver.startswith("3."):
        raise field_error(f"{where}.openapi", "only OpenAPI 3.x documents are accepted")
    info = doc.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("title"), str) or not info["title"].strip():
        raise field_error(f"{where}.info.title", "the document needs info.title", "missing")
    paths = doc.get("paths")
    if not isinstance(paths, dict) or not paths:
        raise field_error(f"{where}.paths", "the document has no paths", "missing")
    if len(paths) > 500:
        raise field_error(f"{where}.paths", "more than 500 paths")
    ops = sum(1 for p in paths.values() if isinstance(p, dict)
              for m in p if m in {"get", "post", "put", "patch", "delete"})
    if ops == 0:
        raise field_error(f"{where}.paths", "no operations (get/post/put/patch/delete) found")
    base = sub.base_url
    if not base:
        servers = doc.get("servers")
        if isinstance(servers, list) and servers and isinstance(servers[0], dict):
            base = servers[0].get("url")
    if not isinstance(base, str) or not re.match(r"^https?://\S+$", base) or len(base) > 500:
        raise field_error("base_url", "a base URL is required (base_url, or servers[0].url in the document)",
                          "missing")
    title = sub.title or str(info["title"])[:100]
    version = sub.version or str(info.get("version") or "1.0.0")[:64]
    if not VERSION.match(version):
        raise field_error(f"{where}.info.version", "not a usable version string")
    inputs = []
    schemes = (doc.get("components") or {}).get("securitySchemes") or {}
    if isinstance(schemes, dict):
        for sname, s in list(schemes.items())[:10]:
            if not isinstance(s, dict):
                continue
            env = re.sub(r"[^A-Za-z0-9_]", "_", f"{slugify(title, 30)}_{sname}").upper()
            if s.get("type") == "apiKey":
                inputs.append({"name": env, "isSecret": True, "isRequired": True,
                               "description": f"API key sent in {s.get('in', 'header')} {s.get('name', '')}".strip()})
            elif s.get("type") in {"http", "oauth2"}:
                inputs.append({"name": env, "isSecret": True, "isRequired": True,
                               "description": f"{s.get('scheme', s.get('type'))} credential"})
    description = sub.description or str(info.get("description") or "")[:2000]
    name = sub.name or _name_for_url(base, title)
    spec: dict[str, Any] = {
        "name": name, "version": version, "title": title, "description": description, "packages": [],
        "remotes": [], "openapi": {"baseUrl": base, "operations": ops, "inputs": inputs, "document": doc}}
    check_declared_headers(spec)
    return Normalized(name=name, version=version, title=title, description=description,
                      package_key=_package_key(spec), source_kind="openapi", spec=spec)


def normalize_archive(manifest: ArchiveManifest, sha256: str, size: int) -> Normalized:
    spec = {"name": manifest.name, "version": manifest.version, "title": manifest.title or manifest.name.split("/")[-1],
            "description": manifest.description, "packages": [], "remotes": [],
            "archive": {"sha256": sha256, "size": size, "runtime": manifest.runtime,
                        "entrypoint": manifest.entrypoint, "args": manifest.args,
                        "environmentVariables": [e.model_dump(exclude_none=True)
                                                 for e in manifest.environmentVariables]}}
    return Normalized(name=manifest.name, version=manifest.version, title=spec["title"],
                      description=manifest.description, package_key=f"archive:{manifest.name}",
                      source_kind="archive", spec=spec, category=manifest.category, tags=list(manifest.tags))


def normalize(sub: ServerSubmit, fetched_openapi: dict[str, Any] | None = None) -> Normalized:
    if sub.server_json is not None:
        n = normalize_server_json(sub.server_json, resolve=True)
    elif sub.mcp_servers is not None:
        (label, entry), = sub.mcp_servers.items()
        n = normalize_mcp_servers(label, entry, sub)
    elif sub.openapi is not None:
        n = normalize_openapi(sub.openapi, sub)
    else:
        assert fetched_openapi is not None
        n = normalize_openapi(fetched_openapi, sub, where="openapi_url")
    # envelope fields override the document's
    if sub.name and sub.server_json is not None:
        n.name = n.spec["name"] = sub.name
    if sub.title:
        n.title = n.spec["title"] = sub.title
    if sub.description is not None:
        n.description = n.spec["description"] = sub.description
    if sub.version and sub.server_json is not None:
        n.version = n.spec["version"] = sub.version
    n.name_given = bool(sub.name) or sub.server_json is not None
    if not re.match(NAME_RE, n.name):
        raise field_error("name", f"derived name {n.name!r} is not registry style (namespace/name); give `name`")
    n.category, n.tags = sub.category, list(sub.tags)
    n.readme, n.icon = sub.readme or "", sub.icon
    if sub.transport == "stdio-local":
        run_locally(n)
    return n


def run_locally(n: Normalized) -> None:
    """``"transport": "stdio-local"``: users run the server on their own machines. The deployer
    still starts it once in the sandbox, without secrets, to list its tools (spec ``"hosting":
    "local"``); nothing is hosted or routed. Its listing is its own (package key ``local:...``), so a
    hosted listing of the same package is not replaced by it."""
    pkgs = n.spec.get("packages") or []
    if not pkgs or n.spec.get("openapi"):
        raise field_error("transport", "\"stdio-local\" is for packages users run themselves (npx, uvx); a remote "
                          "URL or an OpenAPI document is reached over the network, not run locally", "not_local")
    if pkgs[0]["registryType"] not in ("npm", "pypi"):
        raise field_error("transport", "\"stdio-local\" servers are npm or PyPI packages (the platform lists their "
                          "tools by running them once)", "not_local")
    n.spec["hosting"] = "local"
    n.package_key = f"local:{n.package_key}"


# OpenAPI itself says header parameters with these names are ignored: dropped quietly, not refused.
_OPENAPI_IGNORED = frozenset({"accept", "content-type", "authorization"})


def check_declared_headers(spec: dict[str, Any]) -> None:
    """Header names a submission asks the platform to send upstream — remote headers (server.json,
    ``mcpServers``), OpenAPI key schemes and header parameters — must not be reserved
    (``X-WeMcp-*``, hop-by-hop, ``Host`` ...: ``netpolicy.reserved_header``): 422 naming it. The
    gateway drops them again, for routes that reach it by other ways."""
    for i, remote in enumerate(spec.get("remotes") or []):
        for j, h in enumerate(remote.get("headers") or []):
            _refuse_reserved(str(h.get("name") or ""), f"remotes[{i}].headers[{j}].name")
    doc = (spec.get("openapi") or {}).get("document") or {}
    schemes = (doc.get("components") or {}).get("securitySchemes") if isinstance(doc, dict) else None
    if isinstance(schemes, dict):
        for sname, s in schemes.items():
            if isinstance(s, dict) and s.get("type") == "apiKey" and s.get("in", "header") == "header":
                _refuse_reserved(str(s.get("name") or ""), f"openapi.components.securitySchemes.{sname}.name")
    for path, item in (doc.get("paths") or {}).items() if isinstance(doc, dict) else ():
        if not isinstance(item, dict):
            continue
        ops = [item] + [op for m, op in item.items() if m in {"get", "post", "put", "patch", "delete"}]
        for op in ops:
            for p in (op.get("parameters") or []) if isinstance(op, dict) else []:
                if isinstance(p, dict) and p.get("in") == "header" and str(p.get("name", "")).lower() \
                        not in _OPENAPI_IGNORED:
                    _refuse_reserved(str(p.get("name") or ""), f"openapi.paths.{path}.parameters")


def _refuse_reserved(name: str, where: str) -> None:
    why = reserved_header(name)
    if why is not None:
        raise field_error(where, f"the header {name!r} cannot be declared: {why}", "reserved_header")
