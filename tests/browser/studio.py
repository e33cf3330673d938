"""What the studio's browser tests stand on: a real `sparklio serve` (mock mode, its own
SQLite in a temp SPARKLIO_HOME, the test users of `sparklio create-test-users` and one more
member), and Debian's Chromium driven by Playwright for Python.

Chromium comes from Debian (`make unit` runs scripts/install_chromium.sh when
/usr/bin/chromium is missing); Playwright's own browser downloads are never used. When
either is missing the tests skip saying what to install, except under CI=true, where a
skipped browser test would hide a studio nobody checked: there they fail.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.fakes.base import FakeServer
from tests.gateway_process import ROOT, Server, sparklio_env

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
#: screenshots of each page, kept as the tests' artifacts (gitignored)
ARTIFACTS = ROOT / "test-artifacts" / "studio"
#: the launch flags of the contract (issue 15): no sandbox as root, nothing fetched from
#: the network behind the test's back
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OTHER_MEMBER = ("other@sparklio.local", "other-member-password-1")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed: pip install -e '.[dev]' (make unit does)"
    if not CHROMIUM.is_file():
        return (
            f"{CHROMIUM} is missing: apt-get install --no-install-recommends chromium "
            "(make unit does, as root)"
        )
    return None


def require_browser() -> None:
    """Skip (fail under CI=true) when the browser tests cannot run."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and the studio's browser tests cannot run: {reason}")
    pytest.skip(reason)


@dataclass
class User:
    email: str
    password: str
    role: str
    api_key: str | None = None


@dataclass
class Studio:
    """The running server and who can log in to it."""

    server: Server
    admin: User
    member: User
    other: User

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


def _create_member(home: Path, email: str, password: str) -> None:
    from sparklio.db.engine import database_url, make_engine, sessions
    from sparklio.services.auth import AuthService

    settings = make_settings(sparklio_home=home, database_url=None)

    async def create() -> None:
        engine = make_engine(database_url(settings))
        try:
            await AuthService(settings, sessions(engine)).create_user(email, password)
        finally:
            await engine.dispose()

    # on a thread of its own: Playwright's sync API runs an event loop on this one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()


def start_studio(home: Path, **settings: str) -> Studio:
    """Test users in a fresh SPARKLIO_HOME, then `sparklio serve` on it (mock mode unless
    `settings` say otherwise)."""
    home.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "sparklio.cli", "create-test-users"],
        env=sparklio_env(home),
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    records: list[dict[str, Any]] = json.loads((home / "test-users.json").read_text())
    users = {r["role"]: User(r["email"], r["password"], r["role"], r["api_key"]) for r in records}
    _create_member(home, *OTHER_MEMBER)
    server = Server(home, **settings)
    return Studio(server, users["admin"], users["member"], User(*OTHER_MEMBER, "member"))


class InThread:
    """A fake upstream (an async server) on its own event loop in a thread, for the browser
    tests, which are synchronous: `call` runs a function on that loop (asyncio objects such
    as an Event are not thread-safe, so the test sets them through it)."""

    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake", daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(fake.__aenter__(), self.loop).result(30)

    def call(self, function: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(function)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.__aexit__(None, None, None), self.loop).result(
            30
        )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
