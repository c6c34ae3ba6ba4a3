"""The route table reads ``server.submitted``'s spec through the shared ServerSpec: the declared
inputs of each source (routes.inputs_of), and a spec that does not parse leaves the route as it was."""

from __future__ import annotations

from wemcp.common.events import ServerSpec
from wemcp.gateway.routes import Input, RouteTable, inputs_of


def test_package_inputs_and_argument_placeholders():
    spec = ServerSpec.model_validate({"packages": [{
        "registryType": "npm", "identifier": "x", "version": "1",
        "packageArguments": [{"value": "--token={TOKEN}"}], "runtimeArguments": [{"value": "{REGION}"}],
        "environmentVariables": [{"name": "API_KEY", "isSecret": True, "isRequired": True},
                                 {"name": "LEVEL", "default": "info"}]}]})
    inputs, headers, hosted, openapi = inputs_of(spec)
    assert inputs == [Input("API_KEY", True, True), Input("LEVEL", False, False, "info"),
                      Input("TOKEN", True, True), Input("REGION", True, True)]
    assert (headers, hosted, openapi) == ([], True, None)


def test_remote_headers_default_to_secret_and_required_unless_they_say_not():
    spec = ServerSpec.model_validate({"remotes": [{"url": "https://api.example/{TENANT}/mcp", "headers": [
        {"name": "Authorization", "value": "Bearer {API_TOKEN}"},
        {"name": "X-Region", "value": "{REGION}", "isSecret": False, "isRequired": False},
        {"name": "X-Whole"},
        {"name": "X-WeMcp-User-Id", "value": "spoof"}]}]})
    inputs, headers, hosted, _ = inputs_of(spec)
    assert inputs == [Input("TENANT", True, True), Input("API_TOKEN", True, True), Input("REGION", False, False),
                      Input("X_WHOLE", True, False)]
    # the reserved header is never sent upstream
    assert headers == [("Authorization", "Bearer {API_TOKEN}"), ("X-Region", "{REGION}"), ("X-Whole", "{X_WHOLE}")]
    assert hosted is False


def test_archive_and_openapi():
    archive = ServerSpec.model_validate({"archive": {"sha256": "ab" * 32, "runtime": "python",
                                                     "entrypoint": "s.py", "environmentVariables": [
                                                         {"name": "KEY", "isSecret": True, "isRequired": True}]},
                                         "remotes": [{"url": "https://ignored.example/mcp"}]})
    inputs, headers, hosted, openapi = inputs_of(archive)
    assert (inputs, headers, hosted, openapi) == ([Input("KEY", True, True)], [], True, None)

    doc = {"openapi": "3.0.0", "paths": {"/p": {"get": {}}}}
    api = ServerSpec.model_validate({"openapi": {"baseUrl": "https://api.example", "document": doc,
                                                 "inputs": [{"name": "API_KEY", "isRequired": True}]}})
    inputs, _, hosted, openapi = inputs_of(api)
    assert inputs == [Input("API_KEY", True, True)] and hosted is False
    assert openapi == {"baseUrl": "https://api.example", "document": doc,
                       "inputs": [{"name": "API_KEY", "isRequired": True}]}


def test_an_unreadable_spec_leaves_the_route_as_it_was():
    table = RouteTable()
    good = {"slug": "s", "server_id": "00000000-0000-0000-0000-000000000001", "revision": 1,
            "spec": {"packages": [{"registryType": "npm", "identifier": "x",
                                   "environmentVariables": [{"name": "KEY", "isSecret": True, "isRequired": True}]}]}}
    route = table.apply("server.submitted", good)
    assert route is not None and route.needs == frozenset({"KEY"})
    bad = {**good, "revision": 2, "spec": {"packages": [{"registryType": "npm"}]}}  # no identifier
    assert table.apply("server.submitted", bad) is None
    after = table.get("s")
    assert after is not None and after.revision == 1 and after.inputs == [Input("KEY", True, True)]
