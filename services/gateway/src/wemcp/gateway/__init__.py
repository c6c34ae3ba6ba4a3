"""WeMcp gateway: the only public port. Routes /api/v1 to the owning services, aggregates health and
the public OpenAPI document, and (later) serves the MCP router and the OpenAI-compatible API."""
