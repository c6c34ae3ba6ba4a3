"""What the console's browser tests share (Playwright driving Debian's chromium, `make browser-tools`):
the browser, a page that records console errors and failed requests, the per-page check (no errors,
no serious or critical axe-core violations, no sideways scrolling, a screenshot under
$WEMCP_TEST_OUTPUT/console, default .data/test-output/console), the operator's one-time sign-in link
and a page signed in with it.
The `browser` fixture is in tests/e2e/conftest.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.e2e_kit import auth_env
from wemcp.devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
OUT = Path(os.environ.get("WEMCP_TEST_OUTPUT", ROOT / ".data" / "test-output")) / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Page:
    """One browser page that records console errors and uncaught exceptions."""

    def __init__(self, page: Any) -> None:
        self.page, self.errors = page, []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    async def check(self, name: str) -> None:
        """No errors so far, no serious/critical axe violations, no sideways scrolling; a screenshot."""
        await self.page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
        assert not self.errors, self.errors
        await self.page.evaluate(AXE.read_text())
        found = await self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', '))")
        assert found == [], f"{name}: {found}"
        width = await self.page.evaluate("document.documentElement.scrollWidth")
        viewport = self.page.viewport_size["width"]
        assert width <= viewport, f"{name}: {width}px wide in a {viewport}px window"


async def open_page(browser: Any, width: int, height: int = 900) -> Page:
    OUT.mkdir(parents=True, exist_ok=True)
    context = await browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    return Page(await context.new_page())


async def signed_in(browser: Any, stack: Stack, gateway_url: str, login: str, width: int = 1440) -> Page:
    """A page signed in as ``login`` with the one-time link (on the account page it leads to)."""
    p = await open_page(browser, width)
    await p.page.goto(await asyncio.to_thread(signin_link, stack, gateway_url, login))
    await p.page.wait_for_url("**/account")
    return p


def signin_link(stack: Stack, gateway_url: str, login: str) -> str:
    """The operator command, as `make admin` runs it: a one-time link, valid ten minutes."""
    out = subprocess.run([sys.executable, "-m", "wemcp.auth.admin", "signin-link", "--login", login],
                         env={**auth_env(stack), "WEMCP_AUTH_PUBLIC_URL": gateway_url},
                         capture_output=True, text=True, timeout=60, check=True)
    link = out.stdout.strip().splitlines()[-1]
    assert link.startswith(f"{gateway_url}/signin#token="), out.stdout + out.stderr
    return link
