"""Fixtures of the security tests: the agents service behind the real gateway (``platform``, and the
``mcp-server-time`` upstream under it), from :mod:`wemcp.testkit.agents`, which the agents tests share."""

from wemcp.testkit.agents import platform, time_exe, time_upstream

__all__ = ["platform", "time_exe", "time_upstream"]
