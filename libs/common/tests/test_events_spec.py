"""Unit tests of ``ServerSpec`` (wemcp.common.events.spec): the spec of every source the catalog
accepts parses and writes back to the JSON it read; events serialised by the code before the model
(``spec`` as a plain dict) parse and re-serialise unchanged; malformed specs are refused; the
naming rules that live here once."""

from __future__ import annotations

import copy
import json
from typing import Any, ClassVar
from uuid import UUID

import pytest
from pydantic import Field, ValidationError

from wemcp.common.events import ALL_EVENTS, ServerSpec, ServerSubmitted
from wemcp.common.events.base import Event
from wemcp.common.events.spec import (
    ENV_NAME,
    INPUT_NAME,
    NPM_NAME,
    PLACEHOLDER,
    PYPI_NAME,
    SHA256,
    VERSION,
    Archive,
    Manifest,
    package_name_problem,
)

# As the catalog normalises each source (wemcp.catalog.normalize), one spec per source.
MCP_SERVERS_PACKAGE: dict[str, Any] = {
    "packages": [{"registryType": "npm", "identifier": "@modelcontextprotocol/server-github", "version": "2025.4.8",
                  "runtimeHint": "npx", "transport": {"type": "stdio"},
                  "packageArguments": [{"type": "positional", "value": "--token={GITHUB_TOKEN}"}],
                  "environmentVariables": [{"name": "GITHUB_PERSONAL_ACCESS_TOKEN", "isRequired": True,
                                            "isSecret": True},
                                           {"name": "LOG_LEVEL", "isRequired": False, "isSecret": False,
                                            "default": "info"}]}],
    "remotes": [], "name": "io.github.alice/github", "version": "2025.4.8", "title": "github", "description": "",
    "resolved": [{"registryType": "npm", "identifier": "@modelcontextprotocol/server-github",
                  "requested": "latest", "version": "2025.4.8", "at": "2026-12-01T10:00:00+00:00"}],
}
MCP_SERVERS_REMOTE: dict[str, Any] = {
    "packages": [],
    "remotes": [{"type": "streamable-http", "url": "https://api.example.com/{TENANT}/mcp",
                 "headers": [{"name": "Authorization", "isRequired": True, "isSecret": True},
                             {"name": "X-Tenant", "isRequired": True, "isSecret": False, "value": "{TENANT}"}]}],
    "name": "com.example.api/weather", "version": "1.0.0", "title": "weather", "description": "Forecasts",
    "network": True,
}
SERVER_JSON: dict[str, Any] = {
    "name": "io.github.bob/time", "title": "Time", "description": "Clocks", "version": "0.6.2",
    "websiteUrl": "https://example.com/time", "repository": {"url": "https://github.com/bob/time", "source": "github"},
    "packages": [{"registryType": "pypi", "identifier": "mcp-server-time", "version": "0.6.2",
                  "transport": {"type": "stdio"},
                  "runtimeArguments": [{"type": "named", "name": "--python", "value": "3.12"}],
                  "packageArguments": [{"type": "named", "name": "--local-timezone", "valueHint": "tz",
                                        "default": "UTC"}]}],
    "hosting": "local", "idleSeconds": 600,
}
OPENAPI: dict[str, Any] = {
    "name": "com.example.petstore/petstore", "version": "1.0.0", "title": "Petstore", "description": "",
    "packages": [], "remotes": [],
    "openapi": {"baseUrl": "https://petstore.example.com/v1", "operations": 2,
                "inputs": [{"name": "PETSTORE_API_KEY", "isSecret": True, "isRequired": True,
                            "description": "API key sent in header X-Api-Key"}],
                "document": {"openapi": "3.0.0", "info": {"title": "Petstore", "version": "1.0.0"},
                             "paths": {"/pets": {"get": {"operationId": "list"}, "post": {"operationId": "add"}}}}},
}
ARCHIVE: dict[str, Any] = {
    "name": "io.github.carol/tiny", "version": "1.0.0", "title": "tiny", "description": "", "packages": [],
    "remotes": [],
    "archive": {"sha256": "ab" * 32, "size": 2048, "runtime": "python", "entrypoint": "server.py",
                "args": ["--stdio"], "environmentVariables": [{"name": "API_KEY", "isRequired": True,
                                                               "isSecret": True}]},
}
CRAWLED: dict[str, Any] = {**SERVER_JSON, "hosting": "unhosted", "crawled_from": "registry"}
SOURCES = {"mcpServers package": MCP_SERVERS_PACKAGE, "mcpServers remote": MCP_SERVERS_REMOTE,
           "server.json": SERVER_JSON, "openapi": OPENAPI, "archive": ARCHIVE, "crawled": CRAWLED}


class _ServerSubmittedBefore(Event):
    """``server.submitted`` as the code before ServerSpec declared it (``spec`` a plain dict)."""

    subject: ClassVar[str] = "server.submitted"
    stream: ClassVar[str] = "SERVERS"

    server_id: UUID
    slug: str
    name: str
    version: str | None = None
    owner_id: UUID | None = None
    spec: dict[str, Any] = Field(description="the normalised source spec (a subset of server.json)")
    revision: int | None = Field(default=None, ge=1)
    approved_by: UUID | None = None


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_each_source_parses_and_writes_back_the_json_it_read(source):
    raw = copy.deepcopy(SOURCES[source])
    spec = ServerSpec.model_validate(raw)
    assert spec.to_wire() == SOURCES[source]
    assert ServerSpec.model_validate(spec.to_wire()) == spec
    assert raw == SOURCES[source]  # parsing does not touch its input


def test_typed_reads_of_each_source():
    pkg = ServerSpec.model_validate(MCP_SERVERS_PACKAGE)
    assert (pkg.kind, pkg.package_key) == ("npm", "npm:@modelcontextprotocol/server-github")
    assert [(v.name, v.is_secret, v.default) for v in pkg.env_vars()] == [
        ("GITHUB_PERSONAL_ACCESS_TOKEN", True, None), ("LOG_LEVEL", False, "info")]
    assert pkg.package is not None and pkg.package.package_arguments[0].value == "--token={GITHUB_TOKEN}"
    assert pkg.resolved is not None and pkg.resolved[0].requested == "latest"

    remote = ServerSpec.model_validate(MCP_SERVERS_REMOTE)
    assert (remote.kind, remote.package_key, remote.network) == ("remote", "remote:" + remote.remotes[0].url, True)
    assert [(h.name, h.is_secret, h.value) for h in remote.remotes[0].headers] == [
        ("Authorization", True, None), ("X-Tenant", False, "{TENANT}")]

    sj = ServerSpec.model_validate(SERVER_JSON)
    assert (sj.kind, sj.hosting, sj.idle_seconds, sj.website_url) == ("pypi", "local", 600, "https://example.com/time")
    assert sj.packages[0].runtime_arguments[0].name == "--python"
    assert sj.packages[0].package_arguments[0].value_hint == "tz"
    assert sj.packages[0].environment_variables == []

    api = ServerSpec.model_validate(OPENAPI)
    assert api.openapi is not None and (api.kind, api.package_key) == ("openapi", "openapi:https://petstore.example.com/v1")
    assert api.openapi.inputs[0].is_secret is True and "/pets" in api.openapi.document["paths"]

    arc = ServerSpec.model_validate(ARCHIVE)
    assert arc.archive is not None and (arc.kind, arc.package_key) == ("archive", "archive:" + "ab" * 32)
    assert arc.archive.run_manifest == Manifest(command="python", args=["server.py", "--stdio"])
    assert [v.name for v in arc.env_vars()] == ["API_KEY"]
    # run_manifest is derived: the wire keeps the catalog's shape
    assert "manifest" not in arc.to_wire()["archive"]

    crawled = ServerSpec.model_validate(CRAWLED)
    assert crawled.hosting == "unhosted" and crawled.model_extra == {"crawled_from": "registry"}


def test_the_deployers_own_archive_manifest_is_read_as_given():
    a = Archive.model_validate({"path": "tiny.tar.gz", "manifest": {"command": "node", "args": ["index.js"],
                                                                   "env": {"A": "1"}, "requirements": ["x==1"]}})
    assert a.run_manifest is a.manifest and a.run_manifest is not None and a.run_manifest.env == {"A": "1"}
    assert Archive.model_validate({"sha256": "ab" * 32}).run_manifest is None  # nothing to run: the deployer says so


def test_what_a_spec_does_not_say_stays_unsaid():
    """Readers apply their own defaults (a remote header is secret unless it says not), so an absent
    flag is None, not False, and is not written back."""
    spec = ServerSpec.model_validate({"remotes": [{"url": "https://x.example/mcp", "headers": [{"name": "X-Key"}]}]})
    header = spec.remotes[0].headers[0]
    assert (header.is_secret, header.is_required) == (None, None)
    assert spec.to_wire() == {"remotes": [{"url": "https://x.example/mcp", "headers": [{"name": "X-Key"}]}]}
    assert spec.remotes[0].type == "streamable-http" and spec.hosting is None and spec.network is False
    assert ServerSpec().to_wire() == {} and ServerSpec().kind == "remote"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_an_event_serialised_by_the_old_code_parses_and_reserialises_to_the_same_json(source):
    old = _ServerSubmittedBefore(server_id=UUID(int=7), slug="s-1", name="Server", version="1.0.0",
                                 owner_id=UUID(int=8), spec=SOURCES[source], revision=3)
    wire = old.model_dump_json()
    new = ServerSubmitted.model_validate_json(wire)
    assert isinstance(new.spec, ServerSpec)
    assert json.loads(new.model_dump_json()) == json.loads(wire)
    # and the other way: what the new code publishes, a consumer still on the old code reads unchanged
    assert _ServerSubmittedBefore.model_validate_json(new.model_dump_json()) == old
    assert json.loads(new.model_dump_json())["spec"] == SOURCES[source]


def test_the_event_carries_the_typed_spec():
    assert ALL_EVENTS["server.submitted"] is ServerSubmitted
    ev = ServerSubmitted(server_id=UUID(int=1), slug="a", name="A", spec=ARCHIVE)
    assert isinstance(ev.spec, ServerSpec) and ev.spec.archive is not None and ev.spec.archive.size == 2048
    assert ev.model_dump()["spec"] == ARCHIVE  # python dumps carry the wire form too (the outbox writes JSON)
    with pytest.raises(ValidationError):
        ServerSubmitted(server_id=UUID(int=1), slug="a", name="A", spec={"packages": "npm:x"})


@pytest.mark.parametrize(("bad", "where"), [
    ({"packages": "npm:x"}, "packages"),
    ({"packages": [{"identifier": "x"}]}, "packages.0.registryType"),
    ({"packages": [{"registryType": "npm"}]}, "packages.0.identifier"),
    ({"packages": [{"registryType": "npm", "identifier": "x", "environmentVariables": [{"isSecret": True}]}]},
     "packages.0.environmentVariables.0.name"),
    ({"packages": [{"registryType": "npm", "identifier": "x", "environmentVariables": [
        {"name": "K", "isSecret": "perhaps"}]}]}, "packages.0.environmentVariables.0.isSecret"),
    ({"remotes": [{"type": "sse"}]}, "remotes.0.url"),
    ({"remotes": [{"url": "https://x.example", "headers": {"X-Key": "v"}}]}, "remotes.0.headers"),
    ({"openapi": {"document": {}}}, "openapi.baseUrl"),
    ({"archive": {"sha256": "ab" * 32, "args": "server.py"}}, "archive.args"),
    ({"archive": {"sha256": "ab" * 32, "manifest": {"args": []}}}, "archive.manifest.command"),
    ({"network": "sometimes"}, "network"),
    ({"idleSeconds": "soon"}, "idleSeconds"),
])
def test_malformed_specs_are_refused_naming_the_place(bad, where):
    with pytest.raises(ValidationError) as err:
        ServerSpec.model_validate(bad)
    assert ".".join(str(p) for p in err.value.errors()[0]["loc"]) == where, err.value.errors()


def test_a_spec_is_an_object():
    for bad in ([], "npm:x", 3):
        with pytest.raises(ValidationError):
            ServerSpec.model_validate(bad)


def test_specs_are_frozen():
    spec = ServerSpec.model_validate(ARCHIVE)
    with pytest.raises(ValidationError):
        spec.network = True  # type: ignore[misc]


@pytest.mark.parametrize(("rule", "good", "bad"), [
    (NPM_NAME, ["left-pad", "@scope/pkg.name", "a~b"], ["Left-Pad", "@scope", "../x", "-x", "@a/b/c", "a b"]),
    (PYPI_NAME, ["mcp-server-time", "Foo_Bar.baz", "pkg[cli,extra]", "a"], ["-x", "x-", "a b", "x[", "../x"]),
    (VERSION, ["1.2.3", "2025.4.8", "1.0.0-beta.1+b5", "v1", "latest"],
     ["", "^1.0", ">=1", "1 .0", "." + "1" * 10, "1" * 65]),
    (ENV_NAME, ["API_KEY", "_x", "a1"], ["1A", "X-Key", "A.B", "", "A" * 129]),
    (INPUT_NAME, ["API_KEY", "X-Api-Key", "x.y"], ["1A", "-x", "A B", ""]),
    (SHA256, ["ab" * 32], ["AB" * 32, "ab" * 31, "g" * 64]),
])
def test_naming_rules(rule, good, bad):
    assert all(rule.match(g) for g in good), [g for g in good if not rule.match(g)]
    assert not any(rule.match(b) for b in bad), [b for b in bad if rule.match(b)]


def test_placeholders_and_package_name_problems():
    assert PLACEHOLDER.findall("https://x/{TENANT}/{_id}?k={1BAD}") == ["TENANT", "_id"]
    assert package_name_problem("npm", "left-pad") is None and package_name_problem("pypi", "pkg[x]") is None
    assert package_name_problem("npm", "Left-Pad") == "'Left-Pad' is not a valid npm package name"
    assert package_name_problem("pypi", "a b") == "'a b' is not a valid PyPI package name"
    assert package_name_problem("npm", "a" * 215) is not None
    assert package_name_problem("oci", "ghcr.io/x/y:1") is None  # images have no rule here
