"""WeMcp's conformance test server: the tools, prompts and resources the official MCP conformance
suite (npm ``@modelcontextprotocol/conformance``, ``server`` mode) calls, written with the official
``mcp`` SDK (``MCPServer``).

    python tests/conformance/server.py              # stdio (how the platform hosts it)
    python tests/conformance/server.py --port 8123  # Streamable HTTP at /mcp, on loopback (the
                                                    # repository's .venv: the event store is wemcp.testkit's)

What each item returns is what the suite's scenario descriptions ask for (``conformance list
--server``; their text is in the package).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import warnings
from typing import Any

import mcp_types as types
from mcp import MCPDeprecationWarning
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.mcpserver.tools import Tool

# a 1x1 red PNG and a 1-sample silent WAV, generated here rather than pasted
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082")).decode()
WAV = base64.b64encode(b"RIFF" + (38).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
                       + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
                       + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
                       + b"data" + (2).to_bytes(4, "little") + b"\x00\x00").decode()

app = MCPServer("wemcp-conformance", instructions="The MCP conformance suite's test server (WeMcp).")
subscriptions: set[str] = set()


def text(t: str) -> types.TextContent:
    return types.TextContent(type="text", text=t)


# -- tools -----------------------------------------------------------------------------------------------
@app.tool(description="Returns a simple text response.")
def test_simple_text() -> list[Any]:
    return [text("This is a simple text response for testing.")]


@app.tool(description="Returns an image.")
def test_image_content() -> list[Any]:
    return [types.ImageContent(type="image", data=PNG, mimeType="image/png")]


@app.tool(description="Returns audio.")
def test_audio_content() -> list[Any]:
    return [types.AudioContent(type="audio", data=WAV, mimeType="audio/wav")]


@app.tool(description="Returns an embedded resource.")
def test_embedded_resource() -> list[Any]:
    return [types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
        uri="test://embedded-resource", mimeType="text/plain", text="This is an embedded resource content."))]


@app.tool(description="Returns text, an image and a resource.")
def test_multiple_content_types() -> list[Any]:
    return [text("Multiple content types test:"),
            types.ImageContent(type="image", data=PNG, mimeType="image/png"),
            types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
                uri="test://mixed-content-resource", mimeType="application/json",
                text=json.dumps({"test": "data", "value": 123})))]


@app.tool(description="Logs three messages while it runs.")
async def test_tool_with_logging(ctx: Context) -> str:
    with warnings.catch_warnings():  # logging is deprecated in 2026-07-28; the suite is 2025-era
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await ctx.info("Tool execution started")
        await asyncio.sleep(0.05)
        await ctx.info("Tool processing data")
        await asyncio.sleep(0.05)
        await ctx.info("Tool execution completed")
    return "Logging test completed"


@app.tool(description="Always fails.")
def test_error_handling() -> str:
    raise RuntimeError("This tool intentionally returns an error for testing")


@app.tool(description="Reports progress 0, 50, 100 of 100.")
async def test_tool_with_progress(ctx: Context) -> str:
    for done in (0, 50, 100):
        await ctx.report_progress(done, 100)
        if done < 100:
            await asyncio.sleep(0.05)
    return "Progress test completed"


@app.tool(description="Ends the call's SSE stream before answering; the answer comes on the client's "
                      "reconnection with Last-Event-ID (SEP-1699 polling).")
async def test_reconnection(ctx: Context) -> str:
    await ctx.close_sse_stream()  # Streamable HTTP with an event store; nothing to close over stdio
    await asyncio.sleep(0.1)
    return "Reconnection test completed successfully"


@app.tool(description="Asks the client's model (sampling/createMessage).")
async def test_sampling(prompt: str, ctx: Context) -> str:
    reply = await ctx.session.create_message(  # on the call's own stream (related to this request)
        [types.SamplingMessage(role="user", content=text(prompt))], max_tokens=100,
        related_request_id=ctx.request_id)
    content = reply.content
    said = content.text if isinstance(content, types.TextContent) else str(content)
    return f"LLM response: {said}"


async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
    return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)  # type: ignore[arg-type]


@app.tool(description="Asks the user (elicitation/create).")
async def test_elicitation(message: str, ctx: Context) -> str:
    r = await elicit(ctx, message, {"type": "object", "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"}}, "required": ["username", "email"]})
    return f"User response: action={r.action}, content={json.dumps(r.content)}"


@app.tool(description="Elicitation with a default for every primitive type (SEP-1034).")
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    r = await elicit(ctx, "Defaults test", {"type": "object", "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "default": True}}})
    return f"Elicitation completed: action={r.action}, content={json.dumps(r.content)}"


@app.tool(description="Elicitation with the five enum variants (SEP-1330).")
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    options = ["option1", "option2", "option3"]
    r = await elicit(ctx, "Enums test", {"type": "object", "properties": {
        "untitledSingle": {"type": "string", "enum": options},
        "titledSingle": {"type": "string", "oneOf": [{"const": "value1", "title": "First Option"},
                                                     {"const": "value2", "title": "Second Option"},
                                                     {"const": "value3", "title": "Third Option"}]},
        "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                       "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": options}},
        "titledMulti": {"type": "array", "items": {"anyOf": [{"const": "value1", "title": "First Choice"},
                                                             {"const": "value2", "title": "Second Choice"},
                                                             {"const": "value3", "title": "Third Choice"}]}}}})
    return f"Elicitation completed: action={r.action}, content={json.dumps(r.content)}"


def json_schema_2020_12_tool(name: str = "", address: dict[str, Any] | None = None) -> str:
    return f"hello {name or 'nobody'}"


_schema_tool = Tool.from_function(json_schema_2020_12_tool, description="Tool with JSON Schema 2020-12 features")
_schema_tool.parameters = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
    "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"},
                                                            "city": {"type": "string"}}}},
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False}
app._tool_manager._tools[_schema_tool.name] = _schema_tool


# -- prompts ---------------------------------------------------------------------------------------------
@app.prompt(description="A simple prompt.")
def test_simple_prompt() -> str:
    return "This is a simple prompt for testing."


@app.prompt(description="A prompt with two arguments.")
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@app.prompt(description="A prompt embedding a resource.")
def test_prompt_with_embedded_resource(resourceUri: str) -> list[Any]:
    return [UserMessage(types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
                uri=resourceUri, mimeType="text/plain", text="Embedded resource content for testing."))),
            UserMessage("Please process the embedded resource above.")]


@app.prompt(description="A prompt with an image.")
def test_prompt_with_image() -> list[Any]:
    return [UserMessage(types.ImageContent(type="image", data=PNG, mimeType="image/png")),
            UserMessage("Please analyze the image above.")]


# -- resources -------------------------------------------------------------------------------------------
@app.resource("test://static-text", description="A static text resource.", mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@app.resource("test://static-binary", description="A static binary resource.", mime_type="image/png")
def static_binary() -> bytes:
    return base64.b64decode(PNG)


@app.resource("test://template/{id}/data", description="A templated resource.", mime_type="application/json")
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@app.resource("test://watched-resource", description="A resource to subscribe to.", mime_type="text/plain")
def watched() -> str:
    return "Watched resource content."


# -- the rest of the protocol: subscriptions, log level, completion ----------------------------------------
async def on_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscriptions.add(str(params.uri))
    return types.EmptyResult()


async def on_unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscriptions.discard(str(params.uri))
    return types.EmptyResult()


async def on_set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


@app.completion()
async def complete(ref: Any, argument: Any, context: Any) -> types.Completion:
    return types.Completion(values=[], total=0, hasMore=False)


low = app._lowlevel_server
low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_level)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0, help="serve Streamable HTTP on 127.0.0.1:PORT (else stdio)")
    args = parser.parse_args()
    if args.port:
        # the event store of the repository's test servers: this mode runs in its environment (hosted,
        # over stdio, the server has only the mcp SDK)
        from wemcp.testkit.upstream import Events

        app.run("streamable-http", host="127.0.0.1", port=args.port, json_response=False, event_store=Events(),
                retry_interval=500)
    else:
        app.run("stdio")
