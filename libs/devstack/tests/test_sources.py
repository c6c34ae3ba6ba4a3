"""The hosted servers' sources are Python that names the server, decorates the one tool and runs
over stdio, with ``first`` ahead of everything."""

from __future__ import annotations

import ast

from wemcp.devstack.sources import PING, stdio_server


def test_a_source_has_its_name_its_one_tool_and_what_comes_first() -> None:
    src = stdio_server("keyed", PING, first="import sys\n\n")
    tree = ast.parse(src)
    assert src.startswith("import sys\n")
    [tool] = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert tool.name == "ping" and ast.unparse(tool.decorator_list[0]) == "app.tool()"
    assert "app = MCPServer('keyed')" in src and src.rstrip().endswith("app.run()")


def test_the_default_tool_echoes() -> None:
    namespace: dict[str, object] = {"__name__": "server"}  # imported, not run: no stdio loop
    exec(compile(stdio_server("echo"), "server.py", "exec"), namespace)
    echo = namespace["echo"]
    assert callable(echo) and echo("hi") == "hi"
