"""Nothing under SPARKLIO_HOME is readable by other users: folders 0700, files 0600."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from sparklio.core.config import Settings
from sparklio.main import close_app, create_app
from sparklio.services.calllog import SpillFile
from sparklio.services.media.assets import AssetStore
from tests.conftest import client_for


def modes(home: Path) -> dict[str, str]:
    """Every path under `home` (and `home` itself) with its permission bits, in octal."""
    paths = [home, *home.rglob("*")]
    return {str(p.relative_to(home.parent)): oct(p.stat().st_mode & 0o777) for p in paths}


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "green").save(out, "PNG")
    return out.getvalue()


async def test_a_working_gateway_leaves_only_private_files_in_its_home(
    settings: Settings,
) -> None:
    app = create_app(settings)
    try:
        async with await client_for(app) as http:  # the JWT secret, users, the database
            answer = await http.post(
                "/api/v1/llm/generate",
                json={"role": "copywriter", "task": "channel_copy", "payload": {"p": "tea"}},
            )
            assert answer.status_code == 200, answer.text
        await AssetStore(settings.home / "assets").save(png())
        spill = SpillFile(settings.home / "calllog" / "calls.jsonl")
        spill.append(b'{"id": "1"}\n', 1)  # what the call log writes while the db is down
        spill.reject([b'{"id": "2"}\n'])
        spill.close()
    finally:
        await close_app(app)
    found = modes(settings.home)
    assert {"home/assets", "home/calllog", "home/sparklio.db", "home/jwt_secret"} <= set(found)
    assert any(name.endswith(".png") for name in found)
    loose = {
        name: mode
        for name, mode in found.items()
        if mode != (oct(0o700) if (settings.home.parent / name).is_dir() else oct(0o600))
    }
    assert loose == {}


async def test_a_home_an_older_version_left_open_is_tightened_at_start(
    settings: Settings,
) -> None:
    home = settings.home
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)  # whatever the umask
    (home / "sparklio.db").touch()
    os.chmod(home / "sparklio.db", 0o644)
    app = create_app(settings)
    await close_app(app)
    assert oct(home.stat().st_mode & 0o777) == oct(0o700)
    assert oct((home / "sparklio.db").stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000], ids=["022", "002", "000"])
async def test_new_files_are_private_whatever_the_umask(settings: Settings, umask: int) -> None:
    old = os.umask(umask)
    try:
        asset = await AssetStore(settings.home / "assets").save(png())
    finally:
        os.umask(old)
    assert oct((settings.home / "assets").stat().st_mode & 0o777) == oct(0o700)
    stored = next((settings.home / "assets").glob(f"{asset.id}.*"))
    assert oct(stored.stat().st_mode & 0o777) == oct(0o600)
