"""WeMcp crawler service: discovery crawls, health probes and request logs.

Every page or server it fetches is chosen by others (registries, submitters), so every fetch goes
through the platform's egress policy: ``settings.egress.client()`` (``wemcp.common.netpolicy``),
never a bare HTTP client."""
