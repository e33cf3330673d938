"""While PostgreSQL is down, every request that needs it is a 503 with Retry-After that names
the database, never a 500; the same requests work again once it is back."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sparklio.api.errors import DATABASE_RETRY_AFTER
from sparklio.db.engine import migrate
from sparklio.main import close_app, create_app
from tests.conftest import make_settings
from tests.pg import PostgresCluster, postgres

__all__ = ["postgres"]  # a fixture, used by name

IMAGE = {"role": "vision_generator", "task": "image", "prompt": "A cup of tea",
         "width": 64, "height": 64}  # fmt: skip


def outage_of(response: httpx.Response) -> str:
    """The message of a database-outage answer; fails the test on anything else."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER)
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["error"]["type"] == "database_unavailable"
    message: str = body["error"]["message"]
    assert "database is unavailable" in message and "Retry" in message
    return message


@pytest.mark.timeout(60)  # stops and starts a PostgreSQL cluster
async def test_requests_that_need_the_database_are_a_503_while_it_is_down(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.create_database()
    migrate(url)
    app = create_app(make_settings(database_url=url, sparklio_home=tmp_path / "home"))
    try:
        [admin, member] = await app.state.services.auth.ensure_test_users()
        headers = {"Authorization": f"Bearer {admin.api_key}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gw", headers=headers) as http:  # fmt: skip
            done = await http.post("/api/v1/media/generate?wait=10", json=IMAGE)
            assert done.status_code == 200, done.text  # finished: only the database has it now
            job = f"/api/v1/media/jobs/{done.json()['job_id']}"
            postgres.stop()
            try:
                during = {
                    "list keys": await http.get("/api/v1/auth/api-keys"),
                    "submit": await http.post("/api/v1/media/generate", json=IMAGE),
                    "read a job": await http.get(job),
                    "cancel a job": await http.delete(job),
                    "usage": await http.get("/api/v1/usage"),
                    "log in": await http.post(
                        "/api/v1/auth/login",
                        json={"email": member.email, "password": member.password},
                    ),
                }
            finally:
                postgres.start()
            after = {
                "list keys": await http.get("/api/v1/auth/api-keys"),
                "read a job": await http.get(job),
                "usage": await http.get("/api/v1/usage"),
            }
    finally:
        await close_app(app)
    for what, response in during.items():
        assert outage_of(response), what
    assert {what: r.status_code for what, r in after.items()} == dict.fromkeys(after, 200)
