"""Root conftest: every test gets the real-infrastructure fixtures (see wemcp.devstack.testing), and
`make test`'s two workers (pytest-xdist, ``--dist loadgroup``) get whole units of work: each test
module is one unit (its module-scoped fixtures are set up once), and each platform suite — tests/e2e,
tests/security, tests/faults, each on its own stack of real processes — is one unit, scheduled first
because they are the longest."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["wemcp.devstack.testing"]

ROOT = Path(__file__).resolve().parent
PLATFORM_SUITES = ("e2e", "security", "faults")  # the order they start in: longest first


def _unit(item: pytest.Item) -> tuple[int, str]:
    rel = item.path.resolve().relative_to(ROOT).parts
    if len(rel) > 2 and rel[0] == "tests" and rel[1] in PLATFORM_SUITES:
        return PLATFORM_SUITES.index(rel[1]), f"tests/{rel[1]}"
    return len(PLATFORM_SUITES), "/".join(rel)


@pytest.hookimpl(tryfirst=True)  # before xdist turns the marker into the test id's @group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    units = {id(item): _unit(item) for item in items}
    items.sort(key=lambda item: units[id(item)][0])  # stable: the order within a unit is kept
    for item in items:
        item.add_marker(pytest.mark.xdist_group(units[id(item)][1]))
