"""WeMcp catalog service: the MCP server wide table, its search projection, categories, feed and news."""
