"""What a studio sees of a campaign as it runs and once it is done, over HTTP in mock mode:
the copy appearing as the copywriter writes it, each image's progress, what each step cost,
and the campaign's images, served only to those who may see the campaign."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from sparklio.main import close_app, create_app
from sparklio.services.campaigns.feed import EventFeed, joined
from sparklio.services.campaigns.store import CampaignStore
from tests.conftest import client_for, make_settings
from tests.fakes.campaign import SlowCopyOllama
from tests.test_campaigns import client_of, events_of, live_app, start

CHANNELS = ["instagram", "naver_search"]
#: The mock model, priced (USD per million tokens) so that every model call costs something.
PRICE_IN, PRICE_OUT = 2.0, 8.0
ROUTING = f"""\
version: 1
modes:
  mock:
    default: [{{provider: mock, model: mock-v1}}]
media:
  modes:
    mock:
      default: [{{provider: mock, model: mock-image-v1}}]
prices:
  mock:
    mock-v1: {{input: {PRICE_IN}, output: {PRICE_OUT}}}
"""
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    routes = tmp_path / "routing.yaml"
    routes.write_text(ROUTING, encoding="utf-8")
    app = create_app(make_settings(llm_routing_file=routes, sparklio_home=tmp_path / "home"))
    yield app
    await close_app(app)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(app) as client:
        yield client


@pytest.fixture
async def finished(http: httpx.AsyncClient) -> tuple[str, list[dict[str, Any]]]:
    """A campaign run to its end, and its events."""
    campaign_id = await start(http, channels=CHANNELS)
    events = await events_of(http, campaign_id)
    assert events[-1]["event"] == "done", events[-1]
    return campaign_id, events


def where(events: list[dict[str, Any]], kind: str, step: str) -> int:
    """The index of the one event of `kind` for `step`."""
    found = [i for i, e in enumerate(events) if e["event"] == kind and e["data"]["step"] == step]
    assert len(found) == 1, (kind, step, found)
    return found[0]


async def test_copy_streams_as_copy_delta_events_that_add_up_to_each_channels_copy(
    finished: tuple[str, list[dict[str, Any]]],
) -> None:
    _, events = finished
    for channel in CHANNELS:
        started = where(events, "step_started", f"copywriter:{channel}")
        ended = where(events, "step_finished", f"copywriter:{channel}")
        deltas = [
            i
            for i, e in enumerate(events)
            if e["event"] == "copy_delta" and e["data"]["data"]["channel"] == channel
        ]
        assert deltas, f"no copy_delta for {channel}"
        # all of it while the step ran: the last piece before the step's output
        assert started < min(deltas) and max(deltas) < ended
        text = "".join(events[i]["data"]["data"]["text"] for i in deltas)
        assert json.loads(text) == events[ended]["data"]["data"]["output"]


async def test_in_live_mode_the_copy_comes_while_the_model_writes_it_not_at_the_step_end(
    tmp_path: Path,
) -> None:
    """Against a model that streams, a follower of the campaign gets the copy written so far
    while the copywriter still writes: the model's last piece is held until the test has
    seen copy_delta events, so no event of the step's end can have come yet."""
    async with SlowCopyOllama() as fake:
        app = live_app(tmp_path, fake.url)
        try:
            async with await client_for(app) as http:
                campaign_id = await start(http, channels=["instagram"])
                store: CampaignStore = app.state.services.campaigns.store
                so_far: list[Any] = []
                try:
                    async with asyncio.timeout(20):  # the model waits for the test meanwhile
                        while not so_far:
                            await asyncio.sleep(0.05)
                            so_far = [e for e in await store.events(campaign_id)
                                      if e.type == "copy_delta"]  # fmt: skip
                except TimeoutError:
                    pytest.fail("no copy_delta event while the copywriter was writing")
                kinds = [(e.type, e.step) for e in await store.events(campaign_id)]
                assert ("step_finished", "copywriter:instagram") not in kinds
                partial = "".join(e.data["text"] for e in so_far)
                fake.written.set()
                events = await events_of(http, campaign_id)
        finally:
            fake.written.set()  # nothing left waiting on the test
            await close_app(app)
    assert events[-1]["event"] == "done", events[-1]
    ended = where(events, "step_finished", "copywriter:instagram")
    text = "".join(e["data"]["data"]["text"] for e in events if e["event"] == "copy_delta")
    assert json.loads(text) == events[ended]["data"]["data"]["output"]
    assert text.startswith(partial) and len(partial) < len(text)


async def test_each_image_reports_its_progress_up_to_done_before_the_images_step_ends(
    finished: tuple[str, list[dict[str, Any]]],
) -> None:
    _, events = finished
    started = where(events, "step_started", "images")
    ended = where(events, "step_finished", "images")
    images = events[ended]["data"]["data"]["output"]
    assert images
    for image in images:
        progress = [
            (i, e["data"]["data"])
            for i, e in enumerate(events)
            if e["event"] == "image_progress" and e["data"]["data"]["index"] == image["concept"]
        ]
        assert progress, f"no image_progress for image {image['concept']}"
        assert all(started < i < ended for i, _ in progress)
        fractions = [p["progress"] for _, p in progress]
        assert fractions == sorted(fractions)  # it never goes back
        assert progress[-1][1]["progress"] == 1 and progress[-1][1]["status"] == "succeeded"


async def test_the_campaign_shows_tokens_and_cost_per_step_and_in_total(
    http: httpx.AsyncClient, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    campaign_id, _ = finished
    campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
    steps = {s["step"]: s for s in campaign["steps"]}
    model_steps = ["brief", "brand", "strategist", "concepts", "review"]
    model_steps += [f"copywriter:{c}" for c in CHANNELS]
    for name in model_steps:
        step = steps[name]
        assert step["prompt_tokens"] > 0 and step["completion_tokens"] > 0, name
        price = (step["prompt_tokens"] * PRICE_IN + step["completion_tokens"] * PRICE_OUT) / 1e6
        assert step["cost_usd"] == pytest.approx(price), name
        assert step["records"][0]["cost_usd"] == pytest.approx(price), name
    assert steps["images"]["cost_usd"] == 0  # no model tokens in rendering the images
    totals = campaign["totals"]
    for field in ("prompt_tokens", "completion_tokens", "cost_usd"):
        assert totals[field] == pytest.approx(sum(s[field] for s in steps.values())), field
    assert totals["cost_usd"] > 0
    # the result's own step records carry it too, for the report
    assert sum(r["cost_usd"] for r in campaign["result"]["steps"]) == pytest.approx(
        totals["cost_usd"]
    )
    # and the reports show it, per step and in total
    for kind in ("md", "html"):
        report = (await http.get(f"/api/v1/campaigns/{campaign_id}/report.{kind}")).text
        assert "Cost (USD)" in report and f"{totals['cost_usd']:.6f}" in report, kind


async def test_the_reports_show_the_images_which_only_those_who_see_the_campaign_get(
    app: FastAPI, http: httpx.AsyncClient, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    campaign_id, _ = finished
    campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
    urls = [image["url"] for image in campaign["images"]]
    assert urls and len(urls) == len(campaign["result"]["images"])
    assert [i["url"] for i in campaign["result"]["images"]] == urls

    html = (await http.get(f"/api/v1/campaigns/{campaign_id}/report.html")).text
    md = (await http.get(f"/api/v1/campaigns/{campaign_id}/report.md")).text
    data = (await http.get(f"/api/v1/campaigns/{campaign_id}/report.json")).json()
    for url in urls:
        assert f'src="{url}"' in html
        assert f"]({url})" in md
    assert [i["url"] for i in data["images"]] == urls

    async with await client_of(app, "other@example.com") as other:
        for url in urls:
            mine = await http.get(url)
            assert mine.status_code == 200, mine.text
            assert mine.headers["content-type"] == "image/png"
            assert mine.content.startswith(PNG)
            theirs = await other.get(url)
            assert theirs.status_code == 404
            assert theirs.json()["error"]["type"] == "not_found"
    # an asset that is not one of the campaign's images is not served under it
    stranger = f"/api/v1/campaigns/{campaign_id}/images/{'0' * 64}"
    assert (await http.get(stranger)).status_code == 404


async def test_a_burst_of_pieces_is_written_as_one_event(app: FastAPI) -> None:
    user = await app.state.services.auth.create_user("writer@example.com", "a long password")
    store = CampaignStore(app.state.services.db_sessions)
    row = await store.create(user.id, "a brief", {})
    feed = EventFeed(store, row.id, "copy_delta", joined("text"))
    pieces = [f"piece {n} " for n in range(200)]
    for piece in pieces:  # as a fast model writes them, with no await in between
        feed.add("instagram", {"channel": "instagram", "text": piece})
    await feed.flush()

    written = [e for e in await store.events(row.id) if e.type == "copy_delta"]
    assert len(written) == 1
    assert written[0].data == {"channel": "instagram", "text": "".join(pieces)}


async def test_a_channels_pieces_wait_out_the_interval_or_the_end_of_the_step(
    app: FastAPI,
) -> None:
    user = await app.state.services.auth.create_user("writer@example.com", "a long password")
    store = CampaignStore(app.state.services.db_sessions)
    row = await store.create(user.id, "a brief", {})
    feed = EventFeed(store, row.id, "copy_delta", joined("text"), interval=30.0)

    async def written() -> list[dict[str, Any]]:
        return [e.data for e in await store.events(row.id) if e.type == "copy_delta"]

    def add(channel: str, text: str) -> None:
        feed.add(channel, {"channel": channel, "text": text})

    add("instagram", "Fresh ")  # a channel's first piece goes out at once
    add("naver_search", "Oat ")
    while len(await written()) < 2:  # noqa: ASYNC110  # the writes run as tasks
        await asyncio.sleep(0.005)
    add("instagram", "oat ")
    add("instagram", "latte")
    assert len(await written()) == 2  # within the interval: held back
    await feed.flush()  # the step ended: what was held is written, in one event
    events = await written()
    assert len(events) == 3 and events[-1] == {"channel": "instagram", "text": "oat latte"}
    assert [e["text"] for e in events if e["channel"] == "instagram"] == ["Fresh ", "oat latte"]


async def test_a_live_update_that_cannot_be_written_does_not_fail_the_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a database without the events table: every write fails
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        feed = EventFeed(CampaignStore(async_sessionmaker(engine)), "c1", "copy_delta",
                         joined("text"))  # fmt: skip
        feed.add("instagram", {"channel": "instagram", "text": "Hello"})
        await feed.flush()  # logs the failure, raises nothing
        feed.add("instagram", {"channel": "instagram", "text": " again"})
        await feed.flush()
    finally:
        await engine.dispose()
    lost = [r.getMessage() for r in caplog.records if r.name == "sparklio.campaigns"]
    assert len(lost) == 2 and all("copy_delta event was not written" in m for m in lost)
