"""Campaigns over HTTP, run as durable workflows: start one, follow its events, read its
report; another user cannot see it; cancel; and a server killed mid-campaign finishes it on
restart without calling a finished step again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sparklio.main import close_app, create_app
from sparklio.services.auth import local_token_for
from tests.conftest import client_for, make_settings
from tests.fakes.base import Held, Reply
from tests.fakes.campaign import ROUTES, MockOllama
from tests.gateway_process import Server, kill_9
from tests.live import until

BRIEF = "Launch our oat latte in Seoul for office workers; instagram and naver search."
STEPS = ["brief", "brand", "strategist"]  # the first steps, in order


def parse_events(text: str) -> list[dict[str, Any]]:
    """The server-sent events of a stream: the id, event and data of each."""
    events = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
        events.append(fields)
    return events


async def events_of(
    http: httpx.AsyncClient, campaign_id: str, after: int | None = None
) -> list[dict[str, Any]]:
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    response = await http.get(f"/api/v1/campaigns/{campaign_id}/events", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_events(response.text)


async def start(http: httpx.AsyncClient, **body: Any) -> str:
    response = await http.post("/api/v1/campaigns", json={"brief": BRIEF, **body})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    campaign_id: str = response.json()["id"]
    return campaign_id


async def client_of(app: FastAPI, email: str) -> httpx.AsyncClient:
    """A client with a fresh member's own API key."""
    user = await app.state.services.auth.create_user(email, "a long enough password")
    key, _ = await app.state.services.auth.create_api_key(user.id, "test")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                             headers={"Authorization": f"Bearer {key}"})  # fmt: skip


async def test_a_campaign_over_http_runs_every_step_and_streams_its_events_in_order(
    http: httpx.AsyncClient,
) -> None:
    campaign_id = await start(http, channels=["instagram", "naver_search"])
    events = await events_of(http, campaign_id)

    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "done"
    finished = [e["data"]["step"] for e in events if e["event"] == "step_finished"]
    assert finished[:3] == STEPS
    assert {"copywriter:instagram", "copywriter:naver_search", "concepts", "images",
            "review"} <= set(finished)  # fmt: skip
    for step in finished:  # each step started once, before it finished
        marks = [e["event"] for e in events if e["data"]["step"] == step]
        assert marks == ["step_started", "step_finished"], step
    brand = next(
        e for e in events if e["event"] == "step_finished" and e["data"]["step"] == "brand"
    )
    assert brand["data"]["data"]["output"]["voice"]  # the step's output comes with it

    # reconnecting after an event resumes right after it
    again = await events_of(http, campaign_id, after=ids[4])
    assert [int(e["id"]) for e in again] == ids[5:]

    campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
    assert campaign["status"] == "succeeded"
    assert campaign["duration_s"] < 2  # the campaign's own time, from start to done
    steps = {s["step"]: s for s in campaign["steps"]}
    assert steps["brief"]["status"] == "succeeded"
    assert steps["brief"]["prompt_tokens"] > 0 and steps["brief"]["records"][0]["model"]
    assert campaign["result"]["status"] in ("approved", "needs_changes")

    md = await http.get(f"/api/v1/campaigns/{campaign_id}/report.md")
    assert md.status_code == 200 and campaign["result"]["brief"]["product"] in md.text
    html = await http.get(f"/api/v1/campaigns/{campaign_id}/report.html")
    assert html.headers["content-type"].startswith("text/html") and "<html" in html.text
    data = (await http.get(f"/api/v1/campaigns/{campaign_id}/report.json")).json()
    assert data == campaign["result"]

    listed = (await http.get("/api/v1/campaigns")).json()["campaigns"]
    assert [c["id"] for c in listed] == [campaign_id]


async def test_campaigns_are_listed_newest_first_and_paged(http: httpx.AsyncClient) -> None:
    first = await start(http)
    second = await start(http)
    listed = (await http.get("/api/v1/campaigns")).json()["campaigns"]
    assert [c["id"] for c in listed] == [second, first]
    page = (await http.get("/api/v1/campaigns", params={"limit": 1, "offset": 1})).json()
    assert [c["id"] for c in page["campaigns"]] == [first]
    for campaign_id in (first, second):
        assert (await events_of(http, campaign_id))[-1]["event"] == "done"


async def test_another_member_gets_404_on_a_campaign_its_events_and_report(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    campaign_id = await start(http)
    assert (await events_of(http, campaign_id))[-1]["event"] == "done"
    async with await client_of(app, "other@example.com") as other:
        base = f"/api/v1/campaigns/{campaign_id}"
        for path in (base, f"{base}/events", f"{base}/report.json", f"{base}/report.html"):
            response = await other.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["type"] == "not_found"
        assert (await other.post(f"{base}/cancel")).status_code == 404
        assert (await other.get("/api/v1/campaigns")).json()["campaigns"] == []
    # a campaign that does not exist looks the same
    assert (await http.get("/api/v1/campaigns/nope")).status_code == 404


async def test_an_admin_sees_a_members_campaign(app: FastAPI, http: httpx.AsyncClient) -> None:
    async with await client_of(app, "member@example.com") as member:
        campaign_id = await start(member)
        assert (await events_of(member, campaign_id))[-1]["event"] == "done"
    # `http` is the local admin
    response = await http.get(f"/api/v1/campaigns/{campaign_id}")
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert (await http.get(f"/api/v1/campaigns/{campaign_id}/report.md")).status_code == 200


async def test_bad_requests_name_the_field(http: httpx.AsyncClient) -> None:
    for body, field in (({}, "brief"), ({"brief": ""}, "brief"),
                        ({"brief": "x", "channels": ["fax"]}, "channels"),
                        ({"brief": "a\u0000b"}, "brief"), ({"brief": "\ud800"}, "brief"),
                        ({"brief": "x", "brand_guide": "a\u0000"}, "brand_guide"),
                        ({"brief": "x", "options": {"a": "\ud800"}}, "options")):  # fmt: skip
        response = await http.post("/api/v1/campaigns", content=json.dumps(body),
                                   headers={"Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 422, body
        assert field in response.text
    response = await http.get("/api/v1/campaigns/x/events", headers={"Last-Event-ID": "abc"})
    assert response.status_code in (404, 422)


async def test_a_cancelled_campaign_runs_no_further_step(tmp_path: Path) -> None:
    """Cancelled while its first step waits on the model: that step ends, no other starts."""
    gate = asyncio.Event()
    async with MockOllama() as fake:
        fake.then(Held(Reply(), gate))
        app = live_app(tmp_path, fake.url)
        try:
            async with await client_for(app) as http:
                campaign_id = await start(http)
                await until(lambda: fake.calls == 1)
                cancelled = await http.post(f"/api/v1/campaigns/{campaign_id}/cancel")
                assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
                assert (await events_of(http, campaign_id))[-1]["event"] == "cancelled"
                gate.set()
                # another campaign runs from start to end meanwhile: the cancelled one, had it
                # gone on, would have started its next step long before
                other = await start(http, brief="A second brief: tea for students.")
                assert (await events_of(http, other))[-1]["event"] == "done"
                campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
                assert campaign["status"] == "cancelled"
                assert [s["step"] for s in campaign["steps"]] == ["brief"]
                again = await http.post(f"/api/v1/campaigns/{campaign_id}/cancel")
                assert again.json()["status"] == "cancelled"  # a finished one stays as it is
        finally:
            await close_app(app)


def live_app(tmp_path: Path, ollama: str) -> FastAPI:
    """The app in live mode, its LLM calls going to the fake Ollama at `ollama`."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    return create_app(make_settings(sparklio_home=tmp_path / "home", generator_mode="live",
                                    llm_routing_file=routes, ollama_base_url=ollama))  # fmt: skip


@pytest.mark.timeout(240)  # two server starts on a busy 2-core machine
async def test_a_server_killed_mid_campaign_finishes_it_after_a_restart_without_repeating_a_step(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    home = tmp_path / "home"
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    async with MockOllama() as fake:
        # brief and brand are answered; the strategist's call is held until the kill
        fake.then(Reply(), Reply(), Held(Reply(), gate))
        env = {"GENERATOR_MODE": "live", "LLM_ROUTING_FILE": str(routes),
               "OLLAMA_BASE_URL": fake.url}  # fmt: skip
        server = await asyncio.to_thread(Server, home, **env)
        token = await local_token_for(make_settings(sparklio_home=home))
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                         headers=headers, timeout=20) as http:  # fmt: skip
                campaign_id = await start(http)
                await until(lambda: fake.calls == 3)  # the strategist waits on the model
                campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
                done = [s["step"] for s in campaign["steps"] if s["status"] == "succeeded"]
                assert done == ["brief", "brand"]
        finally:
            kill_9(server)
        gate.set()  # the held call's client is gone: nothing reads the answer
        held = fake.model_calls()[2].raw

        server = await asyncio.to_thread(Server, home, **env)  # the same home and database
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                         headers=headers, timeout=20) as http:  # fmt: skip
                events = await events_of(http, campaign_id)
                assert events[-1]["event"] == "done", events[-1]
                campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
        finally:
            await asyncio.to_thread(server.stop)
    assert campaign["status"] == "succeeded"
    # every answered call was made once; the only repeat is the call the kill cut off
    # every call was made once, but the one the kill cut off: the strategist's, asked again
    # with the same brief and brand (replayed from the record, not asked of the model again)
    bodies = [r.raw for r in fake.model_calls()]
    assert {b for b in bodies if bodies.count(b) > 1} == {held}
    assert bodies.count(held) == 2 and len(bodies) == len(set(bodies)) + 1
    assert len(bodies) >= 8  # brief, brand, strategist twice, copy, concepts, review...
    # the replayed steps kept their outputs: the strategist was asked the same question
    finished = [e["data"]["step"] for e in events if e["event"] == "step_finished"]
    assert finished.count("brief") == finished.count("brand") == 1
    assert finished.count("strategist") == 1


async def test_a_campaign_starts_from_a_brand_kit_and_holds_copy_to_its_words(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    kit = {"name": "Dawon house style", "voice": "Quiet, warm, never loud.",
           "words_to_avoid": ["cheap"], "claims_to_avoid": ["cures fatigue"]}  # fmt: skip
    made = await http.post("/api/v1/brand-kits", json=kit)
    assert made.status_code == 201, made.text
    kit_id = made.json()["id"]
    campaign_id = await start(http, brand_kit_id=kit_id, words_to_avoid=["miracle"])
    assert (await events_of(http, campaign_id))[-1]["event"] == "done"
    result = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()["result"]
    assert result["brand_kit"] == "Dawon house style"
    assert result["brand"]["voice"] == "Quiet, warm, never loud."  # the kit's, not a guess
    held = {(r["term"], r["source"]) for r in result["rules"]}
    assert {("cheap", "brand_kit"), ("miracle", "brief")} <= held
    copy = " ".join(c["headline"] + " " + c["body"] for c in result["copies"]).lower()
    assert "miracle" not in copy and "cheap" not in copy
    # another member's kit is not theirs to use
    async with await client_of(app, "other@example.com") as other:
        refused = await other.post("/api/v1/campaigns", json={"brief": BRIEF,
                                                             "brand_kit_id": kit_id})  # fmt: skip
    assert refused.status_code == 404, refused.text


async def paused(app: FastAPI, http: httpx.AsyncClient, campaign_id: str) -> list[Any]:
    """Wait until the campaign awaits review; its events so far (the stream goes on while it
    waits, so they are read from the store)."""
    while True:  # the test's timeout is the backstop
        campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
        assert campaign["status"] not in ("succeeded", "failed", "cancelled"), campaign
        if campaign["status"] == "awaiting_review":
            return list(await app.state.services.campaigns.store.events(campaign_id))
        await asyncio.sleep(0.01)


def started_after(events: list[Any], after: int) -> list[str]:
    return [e.step for e in events if e.id > after and e.type == "step_started"]


async def test_a_manual_campaign_pauses_for_review_after_the_strategy_and_the_copy(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    campaign_id = await start(http, channels=["instagram", "naver_search"],
                              options={"review": "manual"})  # fmt: skip
    base = f"/api/v1/campaigns/{campaign_id}"
    events = await paused(app, http, campaign_id)
    pause = events[-1]
    assert pause.type == "awaiting_review" and pause.data["gate"] == "strategy"
    assert pause.data["strategy"]["big_idea"]  # what the reviewer decides on
    assert started_after(events, 0) == STEPS  # nothing after the strategy yet

    # the strategy again, with a note: only the strategist runs, then the same gate
    changed = await http.post(f"{base}/review", json={"changes": [
        {"step": "strategy", "note": "Aim at night-shift workers too."}]})  # fmt: skip
    assert changed.status_code == 200, changed.text
    events = await paused(app, http, campaign_id)
    assert events[-1].data["gate"] == "strategy"
    assert started_after(events, pause.id) == ["strategist:1"]
    pause = events[-1]

    approved = await http.post(f"{base}/review", json={"approve": True})
    assert approved.status_code == 200, approved.text
    events = await paused(app, http, campaign_id)
    pause = events[-1]
    assert pause.data["gate"] == "copy"
    assert {c["channel"] for c in pause.data["copies"]} == {"instagram", "naver_search"}
    assert sorted(started_after(events, 0)[4:]) == ["copywriter:instagram",
                                                    "copywriter:naver_search"]  # fmt: skip

    # a change to one channel: only its copy is revised, then the copy gate again
    note = "Mention the oat milk is barista grade."
    changed = await http.post(f"{base}/review", json={"changes": [
        {"channel": "instagram", "note": note}]})  # fmt: skip
    assert changed.status_code == 200, changed.text
    events = await paused(app, http, campaign_id)
    assert events[-1].data["gate"] == "copy"
    assert started_after(events, pause.id) == ["revise:instagram:1"]
    review = next(e for e in events if e.id > pause.id and e.type == "review")
    assert review.data["changes"][0]["note"] == note

    assert (await http.post(f"{base}/review", json={"approve": True})).status_code == 200
    assert (await events_of(http, campaign_id))[-1]["event"] == "done"
    campaign = (await http.get(base)).json()
    assert campaign["status"] == "succeeded"
    steps = [s["step"] for s in campaign["steps"]]
    assert steps.count("copywriter:instagram") == steps.count("revise:instagram:1") == 1
    assert not any(s.startswith("revise:naver_search:") for s in steps)
    # not awaiting review any more: 409
    late = await http.post(f"{base}/review", json={"approve": True})
    assert late.status_code == 409 and late.json()["error"]["type"] == "conflict"


async def test_a_review_is_refused_when_the_campaign_does_not_await_one(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    automatic = await start(http)  # options.review defaults to "auto": no pause
    assert (await events_of(http, automatic))[-1]["event"] == "done"
    refused = await http.post(f"/api/v1/campaigns/{automatic}/review", json={"approve": True})
    assert refused.status_code == 409, refused.text

    manual = await start(http, channels=["instagram"], options={"review": "manual"})
    await paused(app, http, manual)
    base = f"/api/v1/campaigns/{manual}"
    for body, field in (({}, "approve"), ({"approve": "maybe"}, "approve"),
                        ({"changes": [{"channel": "instagram"}]}, "note"),
                        ({"changes": [{"channel": "instagram", "note": "x"}]}, "changes.0.step"),
                        ({"approve": True, "extra": 1}, "extra")):  # fmt: skip
        response = await http.post(f"{base}/review", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.text, (body, response.text)
    bad = await http.post("/api/v1/campaigns", json={"brief": BRIEF,
                                                     "options": {"review": "later"}})  # fmt: skip
    assert bad.status_code == 422 and "options.review" in bad.text

    async with await client_of(app, "other@example.com") as other:
        response = await other.post(f"{base}/review", json={"approve": True})
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"
    assert (await http.get(base)).json()["status"] == "awaiting_review"  # untouched
    assert (await http.post(f"{base}/review", json={"approve": True})).status_code == 200
    await paused(app, http, manual)  # the copy gate
    assert (await http.post(f"{base}/review", json={"approve": True})).status_code == 200
    assert (await events_of(http, manual))[-1]["event"] == "done"


async def test_a_paused_campaign_waits_on_across_a_restart_and_can_be_cancelled(
    tmp_path: Path,
) -> None:
    settings = make_settings(sparklio_home=tmp_path / "home")
    app = create_app(settings)
    try:
        async with await client_for(app) as http:
            campaign_id = await start(http, channels=["instagram"], options={"review": "manual"})
            await paused(app, http, campaign_id)
            assert (await http.post(f"/api/v1/campaigns/{campaign_id}/review",
                                    json={"approve": True})).status_code == 200  # fmt: skip
            before = await paused(app, http, campaign_id)  # at the copy gate
            assert before[-1].data["gate"] == "copy"
    finally:
        await close_app(app)

    app = create_app(settings)  # the same home: its database and DBOS's
    try:
        await app.state.services.campaigns.recover()  # what the server does once it starts
        async with await client_for(app) as http:
            base = f"/api/v1/campaigns/{campaign_id}"
            events = await paused(app, http, campaign_id)
            assert [e.id for e in events] == [e.id for e in before]  # no step ran again
            assert (await http.post(f"{base}/review", json={"approve": True})).status_code == 200
            assert (await events_of(http, campaign_id))[-1]["event"] == "done"
            store = app.state.services.campaigns.store
            started = started_after(list(await store.events(campaign_id)), 0)
            assert started.count("strategist") == started.count("copywriter:instagram") == 1

            other = await start(http, channels=["instagram"], options={"review": "manual"})
            await paused(app, http, other)
            cancelled = await http.post(f"/api/v1/campaigns/{other}/cancel")
            assert cancelled.json()["status"] == "cancelled"
            late = await http.post(f"/api/v1/campaigns/{other}/review", json={"approve": True})
            assert late.status_code == 409
    finally:
        await close_app(app)


async def test_a_campaign_paused_for_review_holds_no_place_in_the_queue(tmp_path: Path) -> None:
    # one campaign at a time: a paused one must not keep the next from running
    app = create_app(make_settings(sparklio_home=tmp_path / "home", campaign_concurrency=1))
    try:
        async with await client_for(app) as http:
            waiting = await start(http, channels=["instagram"], options={"review": "manual"})
            await paused(app, http, waiting)
            other = await start(http, channels=["instagram"])
            assert (await events_of(http, other))[-1]["event"] == "done"
            assert (await http.get(f"/api/v1/campaigns/{waiting}")).json()[
                "status"
            ] == "awaiting_review"
    finally:
        await close_app(app)


async def test_a_review_taken_just_before_a_stop_resumes_the_campaign_at_the_next_start(
    tmp_path: Path,
) -> None:
    settings = make_settings(sparklio_home=tmp_path / "home")
    app = create_app(settings)
    try:
        async with await client_for(app) as http:
            campaign_id = await start(http, channels=["instagram"], options={"review": "manual"})
            events = await paused(app, http, campaign_id)
            # the review is recorded, and the process stops before it resumes the campaign
            store = app.state.services.campaigns.store
            taken = {"gate": "strategy", "approve": True, "changes": [], "pause": events[-1].id}
            assert await store.take_review(campaign_id, taken)
    finally:
        await close_app(app)

    app = create_app(settings)
    try:
        await app.state.services.campaigns.recover()  # what the server does once it starts
        async with await client_for(app) as http:
            events = await paused(app, http, campaign_id)
            assert events[-1].data["gate"] == "copy"  # it went on from the strategy gate
            assert started_after(events, 0).count("strategist") == 1
    finally:
        await close_app(app)


async def test_an_app_stopped_mid_step_leaves_the_campaign_pending_and_the_next_start_ends_it(
    tmp_path: Path,
) -> None:
    # a graceful stop (SIGTERM, Ctrl-C) cuts the step under way: that must not fail the
    # campaign for good, as it would if the step failed because the gateway closed under it
    gate = asyncio.Event()
    async with MockOllama() as fake:
        fake.then(Reply(), Reply(), Held(Reply(), gate))
        app = live_app(tmp_path, fake.url)
        try:
            async with await client_for(app) as http:
                campaign_id = await start(http)
                await until(lambda: fake.calls == 3)  # the strategist waits on the model
        finally:
            await close_app(app)
        gate.set()
        app = live_app(tmp_path, fake.url)  # the same home
        try:
            await app.state.services.campaigns.recover()  # what the server does once it starts
            async with await client_for(app) as http:
                events = await events_of(http, campaign_id)
                campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
        finally:
            await close_app(app)
    assert events[-1]["event"] == "done" and campaign["status"] == "succeeded"
    assert not [e for e in events if e["event"] == "step_failed"]
    finished = [e["data"]["step"] for e in events if e["event"] == "step_finished"]
    assert finished.count("brief") == finished.count("strategist") == 1
