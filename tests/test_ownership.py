"""A media job belongs to the user who made it: another member can neither read nor cancel it
(and cannot tell it from a job that does not exist); an admin sees every job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sparklio.main import close_app
from sparklio.services.media.providers.base import MediaProvider, MediaProviderResponse, Progress
from tests.conftest import app_with_media

IMAGE = {"role": "vision_generator", "task": "image", "prompt": "A cup of tea",
         "width": 64, "height": 64}  # fmt: skip


class Endless(MediaProvider):
    """Works until cancelled, so a job stays live for as long as a test needs."""

    @property
    def vendor(self) -> str:
        return "endless"

    async def generate(
        self, prompt: str, role: str, task: str, options: dict[str, Any], progress: Progress
    ) -> MediaProviderResponse:
        progress(0.5, "halfway")
        await asyncio.Event().wait()
        raise AssertionError("never finishes")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = app_with_media(tmp_path, "endless", Endless)
    yield app
    await close_app(app)


async def client_of(app: FastAPI, email: str, role: str = "member") -> httpx.AsyncClient:
    """A client with a fresh user's own API key."""
    user = await app.state.services.auth.create_user(email, "a long enough password", role)
    key, _ = await app.state.services.auth.create_api_key(user.id, "test")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                             headers={"Authorization": f"Bearer {key}"})  # fmt: skip


async def test_another_member_gets_404_for_a_job_and_cannot_cancel_it(app: FastAPI) -> None:
    async with (
        await client_of(app, "ana@example.com") as ana,
        await client_of(app, "ben@example.com") as ben,
        await client_of(app, "boss@example.com", "admin") as admin,
    ):
        made = await ana.post("/api/v1/media/generate?wait=0.2", json=IMAGE)
        assert made.status_code == 202, made.text
        job = f"/api/v1/media/jobs/{made.json()['job_id']}"
        never = f"/api/v1/media/jobs/{'0' * 32}"
        read, cancel = await ben.get(job), await ben.delete(job)
        missing = await ben.get(never)
        own = await ana.get(job)
        seen_by_admin = await admin.get(job)
        cancelled_by_owner = await ana.delete(job)
    assert (read.status_code, cancel.status_code) == (404, 404)
    # the same answer as for a job that never existed, but for its id
    for refused in (read, cancel):
        assert refused.json()["error"] == {
            **missing.json()["error"],
            "message": missing.json()["error"]["message"].replace("0" * 32, made.json()["job_id"]),
        }
    assert own.status_code == 200 and own.json()["status"] == "running"  # ben's cancel did not
    assert seen_by_admin.status_code == 200
    assert seen_by_admin.json()["request"]["prompt"] == "A cup of tea"
    assert cancelled_by_owner.json()["status"] == "cancelled"


async def test_a_finished_job_read_from_the_database_is_still_its_makers_alone(
    app: FastAPI,
) -> None:
    async with (
        await client_of(app, "ana@example.com") as ana,
        await client_of(app, "ben@example.com") as ben,
        await client_of(app, "boss@example.com", "admin") as admin,
    ):
        made = (await ana.post("/api/v1/media/generate?wait=0.2", json=IMAGE)).json()
        job = f"/api/v1/media/jobs/{made['job_id']}"
        assert (await admin.delete(job)).json()["status"] == "cancelled"  # an admin may
        assert app.state.services.media.jobs.active() == []  # from now on only its row has it
        statuses = [(await c.get(job)).status_code for c in (ana, ben, admin)]
        ben_cancel = await ben.delete(job)
    assert statuses == [200, 404, 200]
    assert ben_cancel.status_code == 404
