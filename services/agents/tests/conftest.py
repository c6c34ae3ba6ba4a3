"""Fixtures of the agents tests: the whole path on loopback (``platform``, and the ``mcp-server-time``
upstream under it), from :mod:`wemcp.testkit.agents`, which the security tests share."""

from wemcp.testkit.agents import platform, time_exe, time_upstream

__all__ = ["platform", "time_exe", "time_upstream"]
