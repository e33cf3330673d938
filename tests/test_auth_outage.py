"""Authentication while the database is down (issue 10), against a real outage: the session's
private PostgreSQL cluster (tests/pg.py) is stopped under the running service, then started
again; and a database URL where nothing listens.

A key approved before the outage keeps working and its `last_used_at` write is skipped
(logged once); whatever needs the database answers 503 with Retry-After, naming it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sparklio.core.config import Settings
from sparklio.db.engine import make_engine, migrate, sessions
from sparklio.exceptions import DatabaseUnavailableError
from sparklio.services.auth import LOGIN_FAILURES, AuthService
from tests.pg import PostgresCluster, postgres
from tests.servers import free_port
from tests.test_auth import FAST_HASHER, bearer, connect, make_app, message, new_user

__all__ = ["postgres"]  # a fixture, used by name

KEYS = "/api/v1/auth/api-keys"
LOGIN = "/api/v1/auth/login"


@pytest.fixture
async def engine(postgres: PostgresCluster) -> AsyncIterator[AsyncEngine]:
    url = postgres.create_database()
    await asyncio.to_thread(migrate, url)
    engine = make_engine(url)
    yield engine
    await engine.dispose()


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["type"] == "database_unavailable"
    assert "database" in message(response).lower()


async def test_a_key_is_served_and_the_rest_is_a_503_while_the_database_is_down(
    postgres: PostgresCluster,
    engine: AsyncEngine,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # every call is due a last_used_at write, and a resolved key stays cached: so the calls
    # below take the path that gave a 500 "the first call per key each minute"
    service = AuthService(
        settings, sessions(engine), hasher=FAST_HASHER, cache_ttl=3600.0, touch_every=0.0
    )
    user, password = await new_user(service)
    key, _ = await service.create_api_key(user.id, "laptop")
    right = {"email": user.email, "password": password}
    async with connect(make_app(service)) as client:
        assert (await client.get("/protected", headers=bearer(key))).status_code == 200

        await asyncio.to_thread(postgres.stop)
        try:
            with caplog.at_level(logging.INFO, logger="sparklio.auth"):
                for _ in range(3):
                    response = await client.get("/protected", headers=bearer(key))
                    assert response.status_code == 200, response.text
                    assert response.json() == {"email": user.email, "via": "key"}
            skipped = [r for r in caplog.records if "could not record" in r.getMessage()]
            assert len(skipped) == 1  # once per outage, not once per call
            assert skipped[0].levelno == logging.WARNING

            assert_database_unavailable(await client.get(KEYS, headers=bearer(key)))
            created = await client.post(KEYS, json={"name": "ci"}, headers=bearer(key))
            assert_database_unavailable(created)
            for _ in range(LOGIN_FAILURES + 1):  # not counted as failed logins
                assert_database_unavailable(await client.post(LOGIN, json=right))
        finally:
            await asyncio.to_thread(postgres.start)

        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sparklio.auth"):
            assert (await client.get("/protected", headers=bearer(key))).status_code == 200
        assert any("again" in r.getMessage() for r in caplog.records)
        assert (await client.post(LOGIN, json=right)).status_code == 200
        listed = (await client.get(KEYS, headers=bearer(key))).json()["api_keys"]
        assert [k["name"] for k in listed] == ["laptop"]
        assert listed[0]["last_used_at"] is not None


async def test_credentials_approved_before_the_outage_outlive_the_cache(
    postgres: PostgresCluster,
    engine: AsyncEngine,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the cache's freshness gone (cache_ttl=0) every call asks the database; while it
    cannot, a key or token it approved before still works and an unknown one is a 503."""
    service = AuthService(settings, sessions(engine), hasher=FAST_HASHER, cache_ttl=0.0)
    user, password = await new_user(service)
    key, _ = await service.create_api_key(user.id, "laptop")
    other, _ = await service.create_api_key(user.id, "never used")
    async with connect(make_app(service)) as client:
        response = await client.post(LOGIN, json={"email": user.email, "password": password})
        token = response.json()["access_token"]
        for credential in (key, token):
            assert (await client.get("/protected", headers=bearer(credential))).status_code == 200

        await asyncio.to_thread(postgres.stop)
        try:
            with caplog.at_level(logging.WARNING, logger="sparklio.auth"):
                for credential, via in ((key, "key"), (token, "token"), (key, "key")):
                    response = await client.get("/protected", headers=bearer(credential))
                    assert response.status_code == 200, response.text
                    assert response.json() == {"email": user.email, "via": via}
            stale = [r for r in caplog.records if "approved before" in r.getMessage()]
            assert len(stale) == 1  # once per outage, not once per call
            assert_database_unavailable(await client.get("/protected", headers=bearer(other)))
            assert_database_unavailable(await client.get("/api/v1/auth/me", headers=bearer(other)))
        finally:
            await asyncio.to_thread(postgres.start)
        assert (await client.get("/protected", headers=bearer(other))).status_code == 200


async def test_a_database_that_never_answered_is_a_503_not_a_500(settings: Settings) -> None:
    """A DATABASE_URL where nothing listens: the connection is refused on every call."""
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    try:
        service = AuthService(settings, sessions(engine), hasher=FAST_HASHER)
        async with connect(make_app(service)) as client:
            login = await client.post(LOGIN, json={"email": "a@example.com", "password": "x"})
            assert_database_unavailable(login)
            key = "sk-spk-" + "x" * 43
            assert_database_unavailable(await client.get(KEYS, headers=bearer(key)))
        with pytest.raises(DatabaseUnavailableError, match="database is unavailable"):
            await service.create_user("new@example.com", "long-enough")
    finally:
        await engine.dispose()
