"""WeMcp test support, for the tests and the benchmarks only: a dev-group dependency of the workspace
(root ``pyproject.toml``) that the images never install (the Dockerfile syncs with ``--no-dev
--no-install-package wemcp-testkit``). Production code must not import it.

- :mod:`wemcp.testkit.auth`: a real OAuth 2.0 authorization server on loopback, sign-in helpers.
- :mod:`wemcp.testkit.cloudsign`: the clouds' request signatures, to verify what the SDKs send.
- :mod:`wemcp.testkit.quota_remote`: quota decisions over NATS request/reply (benchmark comparison).
- :mod:`wemcp.testkit.upstream`: real MCP servers on loopback (both eras, interactive tools), and one
  over stdio behind the deployer's bridge.
- :mod:`wemcp.testkit.registries`: the official MCP registry, npm search and PyPI on loopback.
- :mod:`wemcp.testkit.names`: GitHub's users/orgs API, a DNS server, ``/.well-known`` on loopback.
- :mod:`wemcp.testkit.model`: a scripted OpenAI-compatible chat model on loopback.
- :mod:`wemcp.testkit.agents`: the agents service behind the real gateway with its test doubles (the
  ``platform`` fixture: the agents tests and the security tests import it into their conftest).
- :mod:`wemcp.testkit.catalog`: the catalog's callers (signed assertions), publishing an event (and
  a server's route, as the catalog and the deployer announce it), a catalog row for a search corpus
  document, a corpus listed and projected with cached vectors.
- :mod:`wemcp.testkit.hosted`: the deployer's bridge in the restricted sandbox, a server hosted on it,
  and the sources of small stdio servers the deployer's and the gateway's tests host.
- :mod:`wemcp.testkit.sse`: a stream of JSON server-sent events as dicts (the platform's parser).

What lives here is shared by the tests and the benchmarks (``bench/`` imports nothing from a test
folder), and fixtures more than one test folder uses (a test never imports another folder's
conftest); helpers only one service's tests use stay in its ``tests`` package.
"""
