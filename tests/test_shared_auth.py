"""Two gateway processes on one PostgreSQL and one Redis share revocations and login limits.

Real parts only: two `sparklio serve` processes, the local Redis (127.0.0.1:6379, each test
under its own key prefix) and a private PostgreSQL cluster. A Redis that never answers is a
real socket that accepts and stays silent; a lost pub/sub message is a proxy that swallows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncEngine

from sparklio.db.engine import make_engine, migrate, sessions
from sparklio.services.auth import ADDRESS_FAILURES, LOGIN_FAILURES, AuthService, TestCredentials
from sparklio.services.auth_shared import SharedAuth
from tests.conftest import make_settings
from tests.gateway_process import MARGIN, Server
from tests.pg import PostgresCluster, postgres

__all__ = ["postgres"]  # a fixture, used by name
# each starts `sparklio serve` processes: 25 s each on a busy 2-core machine
pytestmark = pytest.mark.timeout(180)

REDIS = "redis://127.0.0.1:6379/0"
SECRET = "s" * 48


def _redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs Redis at {REDIS} ({exc})")
    return client


def _forget(client: redis.Redis, prefix: str) -> None:
    """Delete this test's keys, and only them."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


async def _test_users(url: str) -> list[TestCredentials]:
    engine = make_engine(url)
    try:
        return await AuthService(
            make_settings(jwt_secret=SECRET), sessions(engine)
        ).ensure_test_users()
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def servers(
    postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server, TestCredentials]]:
    """Processes A and B on one database and one Redis, and the admin (with a key)."""
    client = _redis_or_skip()
    prefix = f"test:{uuid.uuid4().hex}:auth:"
    url = postgres.create_database()
    migrate(url)
    admin = next(c for c in asyncio.run(_test_users(url)) if c.role == "admin")
    env = {
        "DATABASE_URL": url, "REDIS_URL": REDIS, "REDIS_AUTH_PREFIX": prefix,
        "JWT_SECRET": SECRET,
        # each test logs in "from" its own address (the test itself is 127.0.0.1)
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
    }  # fmt: skip
    base = tmp_path_factory.mktemp("shared-auth")
    a = Server(base / "a", **env)
    try:
        b = Server(base / "b", **env)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b, admin
    finally:
        a.stop()
        b.stop()
        _forget(client, prefix)
        client.close()


def _url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_revoked_through_one_process_is_refused_by_the_other_at_once(
    servers: tuple[Server, Server, TestCredentials],
) -> None:
    a, b, admin = servers
    with httpx.Client(timeout=10) as http:
        made = http.post(
            _url(a, "/api/v1/auth/api-keys"), json={"name": "ci"}, headers=_bearer(admin.api_key)
        )
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        # both processes now hold the key in their credential cache (10 s without Redis)
        for server in (a, b, a, b):
            me = http.get(_url(server, "/api/v1/auth/me"), headers=_bearer(key))
            assert me.status_code == 200, me.text

        revoke = http.delete(
            _url(a, f"/api/v1/auth/api-keys/{key_id}"), headers=_bearer(admin.api_key)
        )
        assert revoke.status_code == 200, revoke.text
        returned = time.perf_counter()
        on_b = http.get(_url(b, "/api/v1/auth/me"), headers=_bearer(key))
        latency = time.perf_counter() - returned
        on_a = http.get(_url(a, "/api/v1/auth/me"), headers=_bearer(key))
        # the admin's own key is untouched on both
        still = [
            http.get(_url(s, "/api/v1/auth/me"), headers=_bearer(admin.api_key)).status_code
            for s in (a, b)
        ]
    assert on_b.status_code == 403, on_b.text
    assert "was revoked" in on_b.json()["error"]["message"]
    assert on_a.status_code == 403, on_a.text
    assert still == [200, 200]
    print(f"bench: revoked on A, refused on B {latency * 1000:.1f} ms after the revoke returned")


def test_failed_logins_through_both_processes_share_one_limit(
    servers: tuple[Server, Server, TestCredentials],
) -> None:
    a, b, admin = servers
    address = {"X-Forwarded-For": "198.51.100.7"}
    wrong = {"email": admin.email, "password": "not-the-password"}
    codes = []
    with httpx.Client(timeout=10) as http:
        for n in range(LOGIN_FAILURES + 1):
            server = (a, b)[n % 2]  # alternately, as a load balancer would
            codes.append(http.post(_url(server, "/api/v1/auth/login"), json=wrong, headers=address))
        # the right password is refused too now, on either process, from this address
        right = {"email": admin.email, "password": admin.password}
        locked = [
            http.post(_url(s, "/api/v1/auth/login"), json=right, headers=address) for s in (a, b)
        ]
        # while another address logs in as usual
        elsewhere = http.post(
            _url(b, "/api/v1/auth/login"), json=right, headers={"X-Forwarded-For": "198.51.100.8"}
        )
    assert [r.status_code for r in codes] == [401] * LOGIN_FAILURES + [429]
    assert int(codes[-1].headers["Retry-After"]) > 0
    assert [r.status_code for r in locked] == [429, 429]
    assert elsewhere.status_code == 200, elsewhere.text


# -- a Redis that does not answer ------------------------------------------------------------


@pytest.fixture
async def engine(postgres: PostgresCluster) -> AsyncIterator[AsyncEngine]:
    url = postgres.create_database()
    migrate(url)
    engine = make_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A Redis URL whose server accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()


async def test_a_silent_redis_degrades_auth_without_hanging_or_failing(
    engine: AsyncEngine, silent_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(jwt_secret=SECRET, redis_url=silent_redis)
    shared = SharedAuth(silent_redis, prefix="never:", timeout=0.1)
    auth = AuthService(settings, sessions(engine), shared=shared)
    try:
        [admin, _] = await auth.ensure_test_users()
        caplog.set_level(logging.WARNING, logger="sparklio.auth")
        started = time.monotonic()
        principal = await auth.authenticate(f"Bearer {admin.api_key}")
        again = await auth.authenticate(f"Bearer {admin.api_key}")
        elapsed = time.monotonic() - started
        # failed logins are still limited, in this process
        outcomes: list[Any] = []
        for _ in range(LOGIN_FAILURES + 1):
            try:
                await auth.login(admin.email, "not-the-password", "192.0.2.1")
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        # revoking still works here, and at once
        [key] = await auth.list_api_keys(admin_id := principal.user_id)
        await auth.revoke_api_key(admin_id, key.id)
        try:
            await auth.authenticate(f"Bearer {admin.api_key}")
            revoked = "accepted"
        except Exception as exc:
            revoked = type(exc).__name__
    finally:
        await auth.aclose()
    assert principal == again and principal.email == admin.email
    assert elapsed < 5  # one REDIS_TIMEOUT, then Redis is left alone; never a hang
    assert outcomes == ["UnauthorizedError"] * LOGIN_FAILURES + ["TooManyRequestsError"]
    assert revoked == "ForbiddenError"
    warnings = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warnings) == 1, warnings  # logged once, not per request
    assert "trusted for 1 s only" in warnings[0]


# -- two services in this process, one Redis: concurrent attempts ---------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    client = _redis_or_skip()
    name = f"test:{uuid.uuid4().hex}:auth:"
    yield name
    _forget(client, name)
    client.close()


async def test_concurrent_wrong_logins_on_two_processes_pass_the_limit_only_once(
    engine: AsyncEngine, prefix: str
) -> None:
    settings = make_settings(jwt_secret=SECRET, redis_url=REDIS)
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    services = [
        AuthService(
            settings, sessions(engine), hasher=hasher, shared=SharedAuth(REDIS, prefix=prefix)
        )
        for _ in range(2)
    ]
    try:
        [admin, member] = await services[0].ensure_test_users()

        async def attempt(n: int, email: str, address: str) -> str:
            try:
                await services[n % 2].login(email, "not-the-password", address)
            except Exception as exc:
                return type(exc).__name__
            return "logged in"

        # one account from one address: 5 allowed in all, not 5 per process
        pair = await asyncio.gather(*(attempt(n, admin.email, "192.0.2.9") for n in range(12)))
        # one address, many accounts (one each): 20 allowed in all
        emails = [f"nobody{n}@example.com" for n in range(30)]
        address = await asyncio.gather(*(attempt(n, e, "192.0.2.10") for n, e in enumerate(emails)))
        # another address is not affected
        elsewhere = await services[1].login(member.email, member.password, "192.0.2.11")
    finally:
        for service in services:
            await service.aclose()
    assert sorted(pair) == sorted(
        ["UnauthorizedError"] * LOGIN_FAILURES + ["TooManyRequestsError"] * 7
    )
    assert address.count("UnauthorizedError") == ADDRESS_FAILURES
    assert address.count("TooManyRequestsError") == 30 - ADDRESS_FAILURES
    assert elsewhere.access_token


class LossyRedis:
    """A TCP proxy to the real Redis that, once `lose()` is called, swallows everything Redis
    sends on subscribed connections: a pub/sub message lost on its way, as on a flaky network."""

    def __init__(self) -> None:
        self.losing = False
        self.subscribed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *_: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()

    def lose(self) -> None:
        self.losing = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers += [writer, up_writer]
        state = {"subscriber": False}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if up and b"SUBSCRIBE" in data.upper():
                        state["subscriber"] = True
                    if not up and state["subscriber"]:
                        self.subscribed.set()
                        if self.losing:
                            continue
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


async def test_a_lost_revocation_message_does_not_keep_the_key_alive(
    engine: AsyncEngine, prefix: str
) -> None:
    settings = make_settings(jwt_secret=SECRET, redis_url=REDIS)
    proxy = LossyRedis()
    async with proxy as lossy_url:
        a = AuthService(settings, sessions(engine), shared=SharedAuth(REDIS, prefix=prefix))
        b = AuthService(settings, sessions(engine), shared=SharedAuth(lossy_url, prefix=prefix))
        try:
            [admin, _] = await a.ensure_test_users()
            header = f"Bearer {admin.api_key}"
            principal = await b.authenticate(header)  # cached in B for 10 s; B subscribes
            async with asyncio.timeout(MARGIN):  # a backstop: B subscribes at once
                await proxy.subscribed.wait()
            proxy.lose()  # from now on B hears no revocation
            assert principal.key_id is not None
            await a.revoke_api_key(principal.user_id, principal.key_id)
            try:
                await b.authenticate(header)
                outcome = "accepted"
            except Exception as exc:
                outcome = type(exc).__name__
        finally:
            await a.aclose()
            await b.aclose()
    assert outcome == "ForbiddenError"


async def test_a_user_deactivated_through_one_process_is_refused_by_the_other(
    engine: AsyncEngine, prefix: str
) -> None:
    settings = make_settings(jwt_secret=SECRET, redis_url=REDIS)
    a = AuthService(settings, sessions(engine), shared=SharedAuth(REDIS, prefix=prefix))
    b = AuthService(settings, sessions(engine), shared=SharedAuth(REDIS, prefix=prefix))
    try:
        [_, member] = await a.ensure_test_users()
        token = (await a.login(member.email, member.password, "192.0.2.20")).access_token
        credentials = [f"Bearer {member.api_key}", f"Bearer {token}"]
        before = [await b.authenticate(c) for c in credentials]  # both cached in B
        await a.set_active(before[0].user_id, False)
        after = []
        for credential in credentials:
            try:
                await b.authenticate(credential)
                after.append("accepted")
            except Exception as exc:
                after.append(type(exc).__name__)
    finally:
        await a.aclose()
        await b.aclose()
    assert [p.email for p in before] == [member.email, member.email]
    assert after == ["ForbiddenError", "ForbiddenError"]
