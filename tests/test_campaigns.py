"""Campaigns over HTTP, run as durable workflows: start one, follow its events, read its
report; another user cannot see it; cancel; a server killed mid-campaign finishes it on restart
without calling a finished step again."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

BRIEF = "Launch our oat latte in Seoul for office workers; instagram and naver search."


def parse_events(text: str) -> list[dict[str, Any]]:
    """The server-sent events of a stream: id, event and data of each."""
    events = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
        events.append(fields)
    return events


async def events_of(http: httpx.AsyncClient, campaign_id: str, after: int | None = None) -> list[dict[str, Any]]:
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    response = await http.get(f"/api/v1/campaigns/{campaign_id}/events", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_events(response.text)


async def test_a_campaign_over_http_runs_every_step_and_streams_its_events_in_order(
    http: httpx.AsyncClient,
) -> None:
    started = await http.post("/api/v1/campaigns", json={"brief": BRIEF})
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["status"] == "queued"
    campaign_id = body["id"]
    assert body["links"]["events"] == f"/api/v1/campaigns/{campaign_id}/events"

    events = await events_of(http, campaign_id)
    print([(e["event"], e["data"]["step"]) for e in events])
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[0]["event"] == "queued" and events[-1]["event"] == "done"

    campaign = (await http.get(f"/api/v1/campaigns/{campaign_id}")).json()
    print(campaign["duration_s"])
    assert campaign["status"] == "succeeded"
    assert campaign["duration_s"] < 2
