"""Root conftest: every test gets the real-infrastructure fixtures (see wemcp.devstack.testing)."""

pytest_plugins = ["wemcp.devstack.testing"]
