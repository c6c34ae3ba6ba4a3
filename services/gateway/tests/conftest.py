"""Registers the gateway test fixtures (defined in gateway_testkit.py)."""


from services.gateway.tests.gateway_testkit import both_upstream, legacy_upstream, stack  # noqa: F401
