"""Registers the gateway test fixtures (defined in gateway_testkit.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gateway_testkit import both_upstream, legacy_upstream, stack  # noqa: F401
