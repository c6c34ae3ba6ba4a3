"""The deployer's strict view of the shared ServerSpec (wemcp.deployer.spec): built on the shared
models, fed by the event's typed spec, refusing with a reason a user can act on what the wire model
lets through."""

from __future__ import annotations

from uuid import UUID

import pytest

from wemcp.common.events import ServerSpec, ServerSubmitted
from wemcp.common.events import spec as wire
from wemcp.deployer.spec import Archive, DeploySpec, EnvVar, Package, Remote, SpecError, parse_spec

SHA = "ab" * 32


def test_the_strict_view_is_the_shared_model():
    assert issubclass(DeploySpec, wire.ServerSpec) and issubclass(Package, wire.Package)
    assert issubclass(Archive, wire.Archive) and issubclass(EnvVar, wire.Input) and issubclass(Remote, wire.Remote)


def test_parse_spec_takes_the_events_typed_spec_and_the_stored_json_alike():
    raw = {"name": "io.github.x/tiny", "packages": [], "remotes": [],
           "archive": {"sha256": SHA, "runtime": "python", "entrypoint": "server.py", "args": ["-v"],
                       "environmentVariables": [{"name": "API_KEY", "isSecret": True, "isRequired": True}]}}
    event = ServerSubmitted(server_id=UUID(int=1), slug="tiny", name="Tiny", spec=raw)
    from_event, from_row = parse_spec(event.spec), parse_spec(event.spec.to_wire())
    assert from_event == from_row and from_event.kind == "archive"
    assert from_event.archive is not None and from_event.archive.manifest is not None
    assert (from_event.archive.manifest.command, from_event.archive.manifest.args) == ("python", ["server.py", "-v"])
    # the event's own spec is untouched by the deployer's view (it stores and re-publishes the wire form)
    assert event.spec.to_wire() == raw and isinstance(event.spec, ServerSpec)


@pytest.mark.parametrize(("spec", "reason"), [
    # accepted by the shared model (the catalog's looser rules, or no rule), refused for a deployment
    ({"packages": [{"registryType": "npm", "identifier": "Left-Pad", "version": "1.0.0"}]},
     "packages.0: 'Left-Pad' is not a valid npm package name"),
    ({"packages": [{"registryType": "pypi", "identifier": "a b", "version": "1"}]},
     "packages.0: 'a b' is not a valid PyPI project name"),
    ({"packages": [{"registryType": "npm", "identifier": "x", "version": "^1.0"}]},
     "version '^1.0' is not an exact version"),
    ({"packages": [{"registryType": "npm", "identifier": "x", "version": "1",
                    "environmentVariables": [{"name": "X-Api-Key"}]}]},
     "environment variable name 'X-Api-Key' is not a valid identifier"),
    ({"packages": [{"registryType": "mcpb", "identifier": "x", "version": "1"}]}, "packages.0.registryType"),
    ({"archive": {"sha256": "AB" * 32, "runtime": "python", "entrypoint": "s.py"}},
     "archive.sha256 must be 64 lowercase hex digits"),
    ({"archive": {"sha256": SHA, "runtime": "python", "entrypoint": "../s.py"}},
     "archive.entrypoint must stay inside the archive"),
    ({"archive": {"sha256": SHA}}, "archive needs a manifest, or runtime and entrypoint"),
    ({"archive": {"sha256": SHA, "runtime": "ruby", "entrypoint": "s.rb"}}, "archive.runtime"),
    ({"archive": {"sha256": SHA, "manifest": {"command": "/bin/sh"}}}, "manifest.command must"),
    ({"remotes": [{"url": "https://x.example/mcp"}], "hosting": "local"}, "hosting \"local\" is for stdio"),
    ({"remotes": [{"url": "https://x.example/mcp"}], "hosting": "unhosted"}, "hosting"),
    ({"remotes": [{"url": "https://x.example/mcp"}], "idleSeconds": 5}, "idleSeconds"),
    ({"name": "io.github.x/y"}, "nothing to deploy"),
])
def test_what_the_wire_lets_through_the_deployer_refuses_with_a_reason(spec, reason):
    ServerSpec.model_validate(spec)  # the event itself parses: the consumer answers with deploy_failed
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert reason in str(err.value), str(err.value)
