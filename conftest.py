"""Root conftest: every test gets the real-infrastructure fixtures (see wemcp.devstack.testing), and
`make test`'s two pytest-xdist workers get whole units of work (the scheduler below): each test
module is one unit, so its module-scoped fixtures are set up once, and each platform suite —
tests/e2e, tests/security, tests/faults, each on its own stack of real processes started once per
worker that runs it — is one unit, scheduled first because they are the longest."""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = ["wemcp.devstack.testing"]

PLATFORM_SUITES = ("e2e", "security", "faults")  # the order they start in: longest first


def unit_of(nodeid: str) -> tuple[int, str]:
    """(rank, unit) of a test id: a platform suite's folder, else the test's module."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in PLATFORM_SUITES:
        return PLATFORM_SUITES.index(parts[1]), f"tests/{parts[1]}"
    return len(PLATFORM_SUITES), path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {id(item): unit_of(item.nodeid)[0] for item in items}
    items.sort(key=lambda item: rank[id(item)])  # stable: the order within a unit is kept


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # xdist's own loadgroup cannot group on pytest 9 (it renames test ids, which pytest 9 no longer
    # allows), so the units are given to its scope scheduler directly
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)[1]

    return Units(config, log)
