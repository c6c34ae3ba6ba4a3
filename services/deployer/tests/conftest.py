"""Fixtures of the deployer tests (helpers live in deployer_testkit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.deployer.tests.deployer_testkit import Harness, running_deployer


@pytest_asyncio.fixture
async def deployer(settings_for: Any, infra: Any, tmp_path: Path, clean_db: None, clean_bus: None,
                   request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with running_deployer(settings_for, infra, tmp_path, **(getattr(request, "param", {}) or {})) as h:
        yield h

