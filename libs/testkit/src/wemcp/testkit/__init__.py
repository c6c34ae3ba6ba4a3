"""WeMcp test support, for the tests and the benchmarks only: a dev-group dependency of the workspace
(root ``pyproject.toml``) that the images never install (the Dockerfile syncs with ``--no-dev
--no-install-package wemcp-testkit``). Production code must not import it.

- :mod:`wemcp.testkit.auth`: a real OAuth 2.0 authorization server on loopback, sign-in helpers.
- :mod:`wemcp.testkit.cloudsign`: the clouds' request signatures, to verify what the SDKs send.
- :mod:`wemcp.testkit.quota_remote`: quota decisions over NATS request/reply (benchmark comparison).
"""
