"""Fixtures of the deployer tests (helpers live in deployer_testkit)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))  # deployer_testkit (pytest runs in importlib mode)
from deployer_testkit import Harness, deployer_settings

from wemcp.common.service import running
from wemcp.deployer.main import SPEC


@pytest_asyncio.fixture
async def deployer(settings_for: Any, infra: Any, tmp_path: Path, clean_db: None, clean_bus: None,
                   request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    overrides = getattr(request, "param", {}) or {}
    (tmp_path / "archives").mkdir()
    async with running(SPEC, deployer_settings(settings_for, tmp_path, **overrides)) as app:
        h = Harness(app, infra)
        try:
            yield h
        finally:
            await h.client.aclose()

