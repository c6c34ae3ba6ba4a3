# ruff: noqa: RUF001  (Chinese punctuation in Chinese text is intended)
"""WeMcp's demo server (development stacks): a small real MCP server that `make run` publishes
through the normal path (an archive submitted by the development platform account, deployed by the
deployer into the sandbox), so trying a tool and chatting with an agent work with nothing configured.

Tools: echo, add, current_time, greet (answers in Chinese or English)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server.mcpserver import MCPServer

app = MCPServer("wemcp-demo")


@app.tool()
def echo(text: str) -> str:
    """Says the text back, unchanged (demo)."""
    return text


@app.tool()
def add(a: float, b: float) -> str:
    """Adds two numbers and returns the sum (demo)."""
    total = a + b
    return str(int(total)) if total == int(total) else str(total)


@app.tool()
def current_time(timezone_name: str = "UTC") -> str:
    """The current date and time in an IANA time zone such as Asia/Shanghai (demo)."""
    try:
        zone = UTC if timezone_name.upper() == "UTC" else ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone_name!r}; try Asia/Shanghai or UTC"
    return datetime.now(zone).isoformat(timespec="seconds")


@app.tool()
def greet(name: str, lang: str = "zh") -> str:
    """Greets someone by name, in Chinese (lang=zh) or English (lang=en) (demo)."""
    if lang == "en":
        return f"Hello, {name}! This greeting comes from WeMcp's demo server."
    return f"你好，{name}！这句问候来自 WeMcp 的演示服务器。"


if __name__ == "__main__":
    app.run()
