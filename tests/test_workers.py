"""`sparklio worker`: campaigns queued by the server are shared by every process on its
PostgreSQL database, each run once, none lost, within the queue's per-process limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from sparklio.db.engine import migrate
from sparklio.services.auth import local_token_for
from sparklio.services.campaigns import executors as executors_module
from tests.conftest import make_settings
from tests.fakes.base import Held, Reply
from tests.fakes.campaign import ROUTES, MockOllama
from tests.gateway_process import Server, Worker
from tests.live import until
from tests.pg import PostgresCluster, postgres

__all__ = ["postgres"]

BRIEF = "Launch our oat latte in Seoul for office workers; instagram and naver search."
CAMPAIGNS = 20
PER_PROCESS = 2  # CAMPAIGN_WORKER_CONCURRENCY: what each process may run at once


def executors(url: str) -> dict[str, tuple[str, str]]:
    """Each campaign workflow's status and executor, from DBOS's own table."""
    engine = sa.create_engine(url.replace("+asyncpg", "+psycopg"))
    try:
        with engine.connect() as db:
            rows = db.execute(sa.text(
                "SELECT workflow_uuid, status, executor_id FROM dbos.workflow_status "
                "WHERE name = 'sparklio.campaign'"
            ))  # fmt: skip
            return {row[0]: (row[1], row[2]) for row in rows}
    finally:
        engine.dispose()


@pytest.mark.timeout(300)  # three processes start on a busy 2-core machine
async def test_two_workers_and_the_server_share_twenty_campaigns_none_twice_none_lost(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.create_database()
    await asyncio.to_thread(migrate, url)
    shared = {"DATABASE_URL": url, "CAMPAIGN_WORKER_CONCURRENCY": str(PER_PROCESS)}
    server = await asyncio.to_thread(Server, tmp_path / "server", **shared)
    workers: list[Worker] = []
    try:
        for name in ("a", "b"):  # two machines: each its own home, one database
            workers.append(await asyncio.to_thread(Worker, tmp_path / name, **shared))
        token = await local_token_for(
            make_settings(sparklio_home=tmp_path / "server", database_url=url)
        )
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as http:
            ids = []
            for _ in range(CAMPAIGNS):
                response = await http.post("/api/v1/campaigns", json={"brief": BRIEF})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])

            # follow each to its last event (the test's timeout is the backstop)
            for campaign_id in ids:  # each ran once: one start, each step finished once
                events = await http.get(f"/api/v1/campaigns/{campaign_id}/events", timeout=None)
                kinds = [line.removeprefix("event: ") for line in events.text.splitlines()
                         if line.startswith("event: ")]  # fmt: skip
                assert kinds.count("started") == 1 and kinds[-1] == "done", kinds
                steps = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()["steps"]
                assert steps and all(s["status"] == "succeeded" for s in steps)
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(server.stop)

    ran = await asyncio.to_thread(executors, url)
    assert set(ran) == set(ids)
    assert {status for status, _ in ran.values()} == {"SUCCESS"}
    by = {executor for _, executor in ran.values()}
    print({e: sum(1 for _, x in ran.values() if x == e) for e in by})
    # both workers took campaigns from the server's queue (the server may have too)
    assert {w.executor for w in workers} <= by, by
    assert all(":serve-" in e or ":worker-" in e for e in by)


def test_each_live_process_on_a_database_has_its_own_slot_and_a_freed_slot_is_taken_again(
    tmp_path: Path,
) -> None:
    db = "postgresql://db/sparklio"
    first = executors_module.claim("worker", db, tmp_path)
    second = executors_module.claim("worker", db, tmp_path)
    assert first.id.endswith(":worker-1") and second.id.endswith(":worker-2")
    first.release()  # the process in slot 1 is gone: the next one resumes its workflows
    third = executors_module.claim("worker", db, tmp_path)
    serve = executors_module.claim("serve", db, tmp_path)
    # a process on another database never holds up this one's slots
    elsewhere = executors_module.claim("worker", "sqlite:///other/workflows.sqlite", tmp_path)
    try:
        assert third.id == first.id
        assert serve.id.endswith(":serve-1")  # each role has its own slots
        assert elsewhere.id.endswith(":worker-1")
    finally:
        for held in (second, third, serve, elsewhere):
            held.release()


@pytest.mark.timeout(300)
async def test_a_worker_killed_mid_campaign_is_resumed_by_the_next_worker_without_repeats(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.create_database()
    await asyncio.to_thread(migrate, url)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    gate = asyncio.Event()
    async with MockOllama() as fake:
        fake.then(Reply(), Reply(), Held(Reply(), gate))  # the strategist waits on the model
        live = {"DATABASE_URL": url, "GENERATOR_MODE": "live", "LLM_ROUTING_FILE": str(routes),
                "OLLAMA_BASE_URL": fake.url}  # fmt: skip
        # the server only queues campaigns: the workers run them
        server = await asyncio.to_thread(
            Server, tmp_path / "server", CAMPAIGNS_IN_SERVER="false", **live
        )
        worker = await asyncio.to_thread(Worker, tmp_path / "a", **live)
        try:
            token = await local_token_for(
                make_settings(sparklio_home=tmp_path / "server", database_url=url)
            )
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{server.port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as http:
                response = await http.post("/api/v1/campaigns", json={"brief": BRIEF})
                campaign_id = response.json()["id"]
                await until(lambda: fake.calls == 3)
                killed = worker.executor
                await asyncio.to_thread(worker.kill)
                gate.set()
                held = fake.model_calls()[2].raw
                # the next worker on this host takes the dead one's slot, and its campaign
                worker = await asyncio.to_thread(Worker, tmp_path / "b", **live)
                assert worker.executor == killed
                events = await http.get(f"/api/v1/campaigns/{campaign_id}/events", timeout=None)
                assert events.text.rstrip().splitlines()[-1].startswith("data: ")
                campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
        finally:
            await asyncio.to_thread(worker.stop)
            await asyncio.to_thread(server.stop)
    assert campaign["status"] == "succeeded", campaign
    bodies = [r.raw for r in fake.model_calls()]
    # every call was made once but the one the kill cut off, asked again
    assert {b for b in bodies if bodies.count(b) > 1} == {held}
    assert bodies.count(held) == 2 and len(bodies) == len(set(bodies)) + 1


@pytest.mark.timeout(300)
async def test_a_server_on_a_fresh_postgresql_takes_campaigns_posted_all_at_once(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    # the first campaigns launch DBOS, whose tables are made then; their DDL must not wait
    # on the app's own transactions (which waited on it: the server hung for good)
    url = postgres.create_database()
    await asyncio.to_thread(migrate, url)
    server = await asyncio.to_thread(Server, tmp_path / "server", DATABASE_URL=url)
    try:
        token = await local_token_for(
            make_settings(sparklio_home=tmp_path / "server", database_url=url)
        )
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ) as http:
            posted = await asyncio.gather(
                *(http.post("/api/v1/campaigns", json={"brief": BRIEF}) for _ in range(CAMPAIGNS))
            )
            assert [r.status_code for r in posted] == [202] * CAMPAIGNS
            for response in posted:
                events = await http.get(response.json()["links"]["events"], timeout=None)
                assert events.text.rstrip().splitlines()[-2] == "event: done", events.text[-300:]
    finally:
        await asyncio.to_thread(server.stop)
