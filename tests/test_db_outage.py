"""The gateway through a database outage, against a private PostgreSQL cluster (tests/pg.py)
that the tests stop and start: the gateway starts while it is down, `/health` tells, calls are
served and their records survive a kill -9, media jobs finish and are written once it is back.
Nothing is mocked; the kill tests run `sparklio serve` in a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from sparklio.core.config import Settings
from sparklio.db.engine import make_engine, migrate, sessions
from sparklio.db.models import LLMCall, MediaJobRow
from sparklio.main import close_app, create_app
from sparklio.services.auth import AuthService
from sparklio.services.media.jobs import MediaJob
from sparklio.services.media.providers.base import MediaProviderResponse, Progress
from sparklio.services.media.providers.mock import MockImageProvider
from sparklio.services.media.providers.registry import MediaRegistry
from tests.conftest import client_for, make_settings
from tests.pg import PostgresCluster, postgres
from tests.servers import free_port

__all__ = ["postgres"]  # a fixture, used by name

# stopping and starting PostgreSQL takes seconds on a busy machine: more than the default 30
pytestmark = pytest.mark.timeout(180)

CALL = {"role": "copywriter", "task": "channel_copy", "mode": "text",
        "payload": {"product": "Dawon green tea"}}  # fmt: skip
IMAGE = {"role": "vision_generator", "task": "image", "prompt": "tea", "width": 64, "height": 64}
ROOT = Path(__file__).resolve().parent.parent
PROBE = 0.2  # DB_PROBE_INTERVAL for these tests: the monitor notices within ~1 s


async def until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = 60.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `seconds`
    (generous: a busy machine must not fail it)."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def settings_for(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    return make_settings(sparklio_home=tmp_path / "home", database_url=url,
                         db_probe_interval=PROBE, **overrides)  # fmt: skip


@asynccontextmanager
async def running(app: FastAPI, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (start and shutdown), and a client on it."""
    async with app.router.lifespan_context(app):
        if token is None:
            token = await app.state.services.auth.local_token()
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw",
                                     headers=headers) as http:  # fmt: skip
            yield http


async def health(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/health")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def stopped(postgres: PostgresCluster) -> None:
    await asyncio.to_thread(postgres.stop)


async def started(postgres: PostgresCluster) -> None:
    await asyncio.to_thread(postgres.start)


# -- /health -------------------------------------------------------------------------------


async def test_health_says_the_database_is_down_within_seconds_and_ok_once_back(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.create_database()
    migrate(url)
    app = create_app(settings_for(tmp_path, url))
    async with running(app) as http:

        async def database_is(status: str) -> dict[str, Any] | None:
            body = await health(http)
            return body if body["database"]["status"] == status else None

        body = await until(lambda: database_is("ok"), "the first probe")
        assert body["status"] == "ok" and body["database"]["migrations"] == "done"
        await stopped(postgres)
        try:
            down = await until(lambda: database_is("down"), "/health to say down")
            assert down["status"] == "degraded"
            assert down["database"]["error"]
            assert down["call_log"]["database"] == "unreachable"  # told by the monitor
        finally:
            await started(postgres)
        back = await until(lambda: database_is("ok"), "/health to say ok again")
        assert back["database"]["error"] is None
        await until(lambda: _call_log_ok(http), "the call log to find it back")


async def _call_log_ok(http: httpx.AsyncClient) -> bool:
    body = await health(http)
    return bool(body["status"] == "ok" and body["call_log"]["database"] == "ok")


async def test_health_never_waits_on_a_database_that_hangs(tmp_path: Path) -> None:
    """A database that takes connections and never answers (a hung server, a dropped
    network): `/health` answers from the monitor's last probe, at once, and says down."""
    held: list[asyncio.StreamWriter] = []

    async def black_hole(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, never answer

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{port}/sparklio"
    app = create_app(settings_for(tmp_path, url), migrate_db=False)
    try:
        async with running(
            app, app.state.services.auth.issue_token("u" * 32, "member").access_token
        ) as http:
            slowest = 0.0
            for _ in range(20):
                started_at = time.perf_counter()
                body = await health(http)
                slowest = max(slowest, time.perf_counter() - started_at)
                await asyncio.sleep(0.05)
            down = await until(lambda: _database_down(http), "/health to say down", seconds=30)
            assert "did not answer in time" in down["database"]["error"]
            # a probe takes 1-2 s to time out; /health must not wait for it
            assert slowest < 1.0, f"/health took {slowest:.3f} s"
            assert body["status"] in ("ok", "degraded")
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def _database_down(http: httpx.AsyncClient) -> dict[str, Any] | None:
    body = await health(http)
    return body if body["database"]["status"] == "down" else None


# -- starting while the database is down ---------------------------------------------------


async def test_the_gateway_starts_while_the_database_is_down_and_migrates_once_it_is_back(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.create_database()  # empty: the gateway must migrate it
    await stopped(postgres)
    try:
        app = create_app(settings_for(tmp_path, url))  # used to raise ConfigError here
        token = app.state.services.auth.issue_token("a" * 32, "member").access_token
        async with running(app, token) as http:
            body = await until(lambda: _database_down(http), "the first probe")
            assert body["database"]["migrations"] == "pending"
            response = await http.post("/api/v1/llm/generate", json=CALL,
                                       headers={"X-Request-ID": "while-down"})  # fmt: skip
            assert response.status_code == 200, response.text
            assert response.json()["provider"] == "mock"
            assert (await health(http))["call_log"]["spilled"] == 1

            await started(postgres)

            async def all_in() -> bool:
                body = await health(http)
                log = body["call_log"]
                return bool(body["database"]["migrations"] == "done" and log["written"] == 1
                            and log["spilled"] == 0)  # fmt: skip

            await until(all_in, "the migrations and the replay")
            assert (await health(http))["call_log"]["dropped"] == 0
    finally:
        if not (postgres.data / "postmaster.pid").exists():
            await started(postgres)
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(LLMCall.request_id))).scalars().all()
    finally:
        await engine.dispose()
    assert rows == ["while-down"]


# -- media jobs ----------------------------------------------------------------------------


class GatedImages(MockImageProvider):
    """The mock renderer, once the test opens the gate (set per test)."""

    started: asyncio.Event
    gate: asyncio.Event

    async def generate(
        self, prompt: str, role: str, task: str, options: dict[str, Any], progress: Progress
    ) -> MediaProviderResponse:
        GatedImages.started.set()
        await GatedImages.gate.wait()
        return await super().generate(prompt, role, task, options, progress)


async def test_a_media_job_that_rendered_during_the_outage_reports_succeeded(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    GatedImages.started, GatedImages.gate = asyncio.Event(), asyncio.Event()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n"
        "media:\n  modes:\n    mock:\n      default: [{provider: gated, model: g}]\n"
    )
    url = postgres.create_database()
    migrate(url)
    settings = settings_for(tmp_path, url, llm_routing_file=routes)
    registry = MediaRegistry()
    registry.register("gated", GatedImages)
    app = create_app(settings, media_registry=registry)
    async with running(app) as http:
        accepted = await http.post("/api/v1/media/generate", json=IMAGE)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        await asyncio.wait_for(GatedImages.started.wait(), 30)
        await stopped(postgres)
        try:
            await until(lambda: _database_down(http), "/health to say down")
            GatedImages.gate.set()  # the image renders while the database is down

            async def kept_in_memory() -> bool:
                return (await health(http))["database"]["media_jobs_unsaved"] == 1

            await until(kept_in_memory, "the finished job to wait for the database")
            job = (await http.get(f"/api/v1/media/jobs/{job_id}")).json()
            assert job["status"] == "succeeded", job
            [asset] = job["assets"]
            image = await http.get(asset["url"])
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            # a new job cannot be stored, and a job not in memory cannot be read: 503s
            refused = await http.post("/api/v1/media/generate", json=IMAGE)
            assert refused.status_code == 503 and "Retry-After" in refused.headers
            assert refused.json()["error"]["type"] == "database_unavailable"
            unknown = await http.get(f"/api/v1/media/jobs/{'0' * 32}")
            assert unknown.status_code == 503
            assert unknown.json()["error"]["type"] == "database_unavailable"
        finally:
            await started(postgres)

        async def written() -> bool:
            return (await health(http))["database"]["media_jobs_unsaved"] == 0

        await until(written, "the job to be written")
        again = (await http.get(f"/api/v1/media/jobs/{job_id}")).json()  # from its row now
        assert again["status"] == "succeeded" and again["assets"] == job["assets"]
    engine = make_engine(url)
    try:
        async with sessions(engine)() as session:
            row = await session.get(MediaJobRow, job_id)
    finally:
        await engine.dispose()
    assert row is not None and row.status == "succeeded"
    assert [a["id"] for a in row.data["assets"]] == [asset["id"]]


# -- a real server, killed -----------------------------------------------------------------


@contextmanager
def gateway_process(
    tmp_path: Path, url: str, name: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`sparklio serve` in a process of its own on a free port; its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "SPARKLIO_HOME": str(tmp_path / "home"),
        "DATABASE_URL": url,
        "GENERATOR_MODE": "mock",
        "DB_PROBE_INTERVAL": str(PROBE),
        "LOG_LEVEL": "warning",
        # this checkout's sparklio, wherever the virtualenv's points
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    log = (tmp_path / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sparklio.cli", "serve", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        log.close()


async def port_closed(port: int, within: float = 60.0) -> bool:
    """Whether nothing accepts connections on `port` any more, within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return True
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.2)
    return False


async def wait_up(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    async with httpx.AsyncClient(base_url=base) as http:

        async def up() -> bool:
            if process.poll() is not None:
                output = await asyncio.to_thread(log.read_text)
                raise AssertionError(f"the server exited: {output}")
            try:
                return (await http.get("/health")).status_code == 200
            except httpx.TransportError:
                return False

        await until(up, "the server to start", seconds=90)


async def member_token(settings: Settings) -> str:
    """A login token of a new member, signed with the secret the server will read."""
    engine = make_engine(settings.database_url or "")
    try:
        auth = AuthService(settings, sessions(engine))
        user = await auth.create_user("member@example.com", "a long password")
        return auth.issue_token(user.id, "member").access_token
    finally:
        await engine.dispose()


def spilled_request_ids(home: Path) -> list[str]:
    ids = []
    for path in (home / "calllog").glob("calls.jsonl*"):
        if path.name.endswith(".rejected"):
            continue
        ids += [orjson.loads(line)["request_id"] for line in path.read_bytes().splitlines()]
    return ids


async def stored_request_ids(url: str) -> tuple[int, set[str]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            count = (await connection.execute(select(func.count()).select_from(LLMCall))).one()[0]
            ids = set((await connection.execute(select(LLMCall.request_id))).scalars())
    finally:
        await engine.dispose()
    return count, ids


@pytest.mark.timeout(300)
async def test_a_kill_during_an_outage_loses_no_acknowledged_call_record(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    """Calls before, at and after the moment PostgreSQL stops, each one answered 200, then
    kill -9: every answered call's record is in the database or the spill file; after a
    restart with the database back, each is in the database exactly once."""
    url = postgres.create_database()
    migrate(url)
    settings = settings_for(tmp_path, url)
    token = await member_token(settings)
    acknowledged: list[str] = []
    home = tmp_path / "home"
    with gateway_process(tmp_path, url, "first") as (process, base):
        await wait_up(process, base, tmp_path / "first.log")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:

            async def call(request_id: str) -> None:
                response = await http.post("/api/v1/llm/generate", json=CALL,
                                           headers={"X-Request-ID": request_id})  # fmt: skip
                assert response.status_code == 200, response.text
                acknowledged.append(request_id)

            for i in range(50):
                await call(f"before-{i}")  # some written, some still in memory at the stop
            await stopped(postgres)
            try:
                i = 0
                while True:  # calls go on while the gateway finds out
                    await call(f"during-{i}")
                    i += 1
                    body = await health(http)
                    if (body["database"]["status"] == "down"
                            and body["call_log"]["database"] == "unreachable"):  # fmt: skip
                        break
                    assert i < 5000, "the gateway never noticed the outage"
                for j in range(100):
                    await call(f"after-{j}")
                process.send_signal(signal.SIGKILL)  # right after the last answer
                assert process.wait(30) == -signal.SIGKILL
                # its worker follows it down; the database must not be back before it is gone
                port = int(base.rsplit(":", 1)[1])
                assert await port_closed(port), "the killed gateway's worker still serves"
            finally:
                await started(postgres)

    spilled = spilled_request_ids(home)
    _, in_database = await stored_request_ids(url)
    lost = [r for r in acknowledged if r not in in_database and r not in spilled]
    print(f"\n{len(acknowledged)} calls answered: {len(in_database)} records in the database, "
          f"{len(spilled)} in the spill file, {len(lost)} lost")  # fmt: skip
    assert lost == []
    assert {f"after-{j}" for j in range(100)} <= set(spilled)  # on disk when answered

    with gateway_process(tmp_path, url, "second") as (process, base):
        await wait_up(process, base, tmp_path / "second.log")
        async with httpx.AsyncClient(base_url=base) as http:

            async def replayed() -> bool:
                log = (await health(http))["call_log"]
                return bool(log["spilled"] == 0 and log["database"] == "ok")

            await until(replayed, "the spilled records to be replayed")
            assert (await health(http))["call_log"]["dropped"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    count, in_database = await stored_request_ids(url)
    assert set(acknowledged) <= in_database
    assert count == len(in_database) == len(acknowledged)  # each exactly once


@pytest.mark.timeout(300)
async def test_serve_starts_while_the_database_is_down_and_serves_a_token(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    """`sparklio serve` with PostgreSQL stopped: it starts, answers a member's token in mock
    mode, and once PostgreSQL is back it migrates and writes the call's record."""
    url = postgres.create_database()
    migrate(url)
    token = await member_token(settings_for(tmp_path, url))
    await stopped(postgres)
    try:
        with gateway_process(tmp_path, url, "serve") as (process, base):
            await wait_up(process, base, tmp_path / "serve.log")
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
                body = await health(http)
                assert body["database"]["migrations"] == "pending"
                response = await http.post("/api/v1/llm/generate", json=CALL,
                                           headers={"X-Request-ID": "first-call"})  # fmt: skip
                assert response.status_code == 200, response.text
                await started(postgres)

                async def migrated_and_written() -> bool:
                    body = await health(http)
                    return bool(body["database"]["migrations"] == "done"
                                and body["call_log"]["written"] == 1)  # fmt: skip

                await until(migrated_and_written, "the migrations and the record")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    finally:
        if not (postgres.data / "postmaster.pid").exists():
            await started(postgres)
    count, ids = await stored_request_ids(url)
    assert (count, ids) == (1, {"first-call"})


# -- recovering jobs -----------------------------------------------------------------------


async def test_only_a_served_app_resumes_leftover_jobs(tmp_path: Path) -> None:
    """The database monitor runs in any app that serves `/health`, but only the server's
    lifespan resumes jobs: an in-process app sharing the database (`sparklio generate`
    while the server runs) must not take over the jobs the server is running."""
    settings = make_settings(sparklio_home=tmp_path / "home", db_probe_interval=PROBE)
    first = create_app(settings)
    job = MediaJob(job_id="2" * 32, status="running", started_at=1.0,
                   request={**IMAGE, "seed": 7})  # fmt: skip
    await first.state.services.media.jobs.save(job)  # as a running server has it
    await close_app(first)
    url = f"/api/v1/media/jobs/{job.job_id}"

    in_process = create_app(settings)
    async with await client_for(in_process) as http:

        async def database_ok() -> bool:
            return bool((await health(http))["database"]["status"] == "ok")

        await until(database_ok, "the in-process app's monitor to probe")
        await asyncio.sleep(3 * PROBE)  # a few more rounds of its monitor
        assert (await http.get(url)).json()["status"] == "running"
    await close_app(in_process)

    served = create_app(settings)
    async with running(served) as http:

        async def resumed() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(url)).json()
            return body if body["status"] not in ("queued", "running") else None

        body = await until(resumed, "the server to resume the job")
        image = await http.get(body["assets"][0]["url"])
    assert body["status"] == "succeeded", body
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
