"""WeMcp SDK: a thin layer over the ``openai`` client.

``WeMcp`` / ``AsyncWeMcp`` are ``openai.OpenAI`` / ``openai.AsyncOpenAI`` pointed at a WeMcp
platform's OpenAI-compatible API, with typed helpers for MCP tools and saved agents::

    from wemcp.sdk import WeMcp, mcp, mcp_calls

    client = WeMcp(api_key="wmk_...", base_url="https://wemcp.example.com")
    done = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=[mcp("time", allowed_tools=["get_current_time", "convert_time"])],
    )
    print(done.choices[0].message.content)
    for call in mcp_calls(done):
        print(call.round, call.server, call.tool, call.status)
"""

from wemcp.sdk._client import AsyncWeMcp, WeMcp
from wemcp.sdk._tools import McpCall, McpServerTool, McpTool, mcp, mcp_calls, mcp_server

__all__ = ["AsyncWeMcp", "McpCall", "McpServerTool", "McpTool", "WeMcp", "mcp", "mcp_calls", "mcp_server"]
__version__ = "0.1.0"
