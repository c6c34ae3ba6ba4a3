"""What the catalog's normaliser builds from each source is a shared ServerSpec (the model of
``server.submitted``'s spec) that writes back to the same JSON, and the package key is the model's."""

from __future__ import annotations

import pytest

from wemcp.catalog.normalize import normalize, normalize_archive
from wemcp.catalog.schemas import ArchiveManifest, ServerSubmit
from wemcp.common.events import ServerSpec, ServerSubmitted

SOURCES = {
    "mcpServers package": {"mcpServers": {"github": {"command": "npx", "args": ["-y", "@scope/server-gh@1.2.3"],
                                                     "env": {"GITHUB_TOKEN": "<token>", "LOG_LEVEL": "info"}}}},
    "mcpServers remote": {"mcpServers": {"weather": {"url": "https://api.example.com/mcp",
                                                     "headers": {"Authorization": "Bearer x", "X-Tenant": "{TENANT}"}}},
                          "name": "com.example.api/weather"},
    "server.json": {"server_json": {"name": "io.github.bob/time", "version": "0.6.2", "description": "Clocks",
                                    "websiteUrl": "https://example.com/time",
                                    "packages": [{"registryType": "pypi", "identifier": "mcp-server-time",
                                                  "version": "0.6.2", "transport": {"type": "stdio"}}]}},
    "openapi": {"openapi": {"openapi": "3.0.0", "info": {"title": "Pets", "version": "1.0.0"},
                            "servers": [{"url": "https://pets.example.com"}],
                            "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "header",
                                                                       "name": "X-Api-Key"}}},
                            "paths": {"/pets": {"get": {"operationId": "list"}}}}},
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_each_source_normalises_to_a_shared_spec(source):
    n = normalize(ServerSubmit.model_validate(SOURCES[source]))
    spec = ServerSpec.model_validate(n.spec)
    assert spec.to_wire() == n.spec
    assert spec.package_key == n.package_key
    event = ServerSubmitted.model_validate_json(ServerSubmitted(
        server_id="00000000-0000-0000-0000-000000000001", slug="s", name=n.name, spec=n.spec).model_dump_json())
    assert event.spec == spec


def test_secrets_in_a_pasted_config_become_declared_inputs_without_values():
    n = normalize(ServerSubmit.model_validate(SOURCES["mcpServers remote"]))
    headers = ServerSpec.model_validate(n.spec).remotes[0].headers
    assert [(h.name, h.is_secret, h.value) for h in headers] == [("Authorization", True, None),
                                                                ("X-Tenant", False, "{TENANT}")]


def test_an_archive_normalises_to_a_shared_spec():
    manifest = ArchiveManifest.model_validate({"name": "io.github.carol/tiny", "version": "1.0.0", "runtime": "python",
                                               "entrypoint": "server.py", "environmentVariables": [
                                                   {"name": "API_KEY", "isSecret": True, "isRequired": True}]})
    n = normalize_archive(manifest, "ab" * 32, 2048)
    spec = ServerSpec.model_validate(n.spec)
    assert spec.to_wire() == n.spec and spec.kind == "archive"
    assert spec.archive is not None and spec.archive.run_manifest is not None
    assert spec.archive.run_manifest.args == ["server.py"] and spec.env_vars()[0].is_secret is True
