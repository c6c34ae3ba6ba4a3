"""Sources of the small stdio MCP servers (the official ``mcp`` SDK) that the tests, the benchmarks
and the fault suite host as users' servers are hosted: written to a file or packed into a source
archive, then run behind the deployer's bridge.

``stdio_server(name)`` is a server with one tool, ``echo`` (``ECHO``) unless another function's source
is given (``PING``)."""

from __future__ import annotations

ECHO = '''def echo(text: str) -> str:
    """Says the text back."""
    return text
'''
PING = '''def ping() -> str:
    """Answers pong."""
    return "pong"
'''


def stdio_server(name: str, tool: str = ECHO, *, first: str = "") -> str:
    """A server called ``name`` with the one tool ``tool`` (a function's source). ``first`` comes before
    the SDK is imported: a comment that makes each archive's digest its own, or a check that exits at
    start."""
    return (
        f"{first}from mcp.server.mcpserver import MCPServer\n\napp = MCPServer({name!r})\n\n\n"
        f'@app.tool()\n{tool}\n\nif __name__ == "__main__":\n    app.run()\n'
    )
