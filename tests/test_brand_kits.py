"""/api/v1/brand-kits on SQLite and PostgreSQL: a member's kits are theirs alone (404 for
anyone else), shared kits are everyone's to read and only an admin's to make and change, and
bad input is a 422 naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sparklio.main import close_app, create_app
from tests.conftest import make_settings
from tests.pg import db_url, postgres

__all__ = ["db_url", "postgres"]  # fixtures, used by name

KIT = {
    "name": "Dawon Tea",
    "voice": "Calm, warm and honest.\nNever loud.",
    "words_to_use": ["느린 한 잔", "first flush"],
    "words_to_avoid": ["최고", "miracle"],
    "claims_to_avoid": ["암 예방"],
    "palette": ["#2E7D32", "#F5F5DC"],
    "typography": "Serif headlines, sans-serif body",
    "example_copy": ["오후의 느린 한 잔."],
}
BASE = "/api/v1/brand-kits"


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = create_app(make_settings(database_url=db_url, sparklio_home=tmp_path / "home"))
    yield app
    await close_app(app)


async def client_of(app: FastAPI, email: str, role: str = "member") -> httpx.AsyncClient:
    user = await app.state.services.auth.create_user(email, "a long enough password", role)
    key, _ = await app.state.services.auth.create_api_key(user.id, "test")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                             headers={"Authorization": f"Bearer {key}"})  # fmt: skip


async def test_a_members_kit_is_theirs_alone_and_an_admins_shared_kit_is_everyones(
    app: FastAPI,
) -> None:
    async with (
        await client_of(app, "ana@example.com") as ana,
        await client_of(app, "ben@example.com") as ben,
        await client_of(app, "boss@example.com", "admin") as admin,
    ):
        made = await ana.post(BASE, json=KIT)
        assert made.status_code == 201, made.text
        own = made.json()
        assert {k: own[k] for k in KIT} == KIT  # Korean and line breaks kept as sent
        assert own["shared"] is False and own["owner_id"]
        shared = await admin.post(BASE, json={"name": "House style", "shared": True})
        assert shared.status_code == 201, shared.text
        assert shared.json()["shared"] is True and shared.json()["owner_id"] is None
        refused_share = await ben.post(BASE, json={"name": "Mine for all", "shared": True})

        kit, common = f"{BASE}/{own['id']}", f"{BASE}/{shared.json()['id']}"
        never = f"{BASE}/{'0' * 32}"
        ana_list = [k["name"] for k in (await ana.get(BASE)).json()["brand_kits"]]
        ben_list = [k["name"] for k in (await ben.get(BASE)).json()["brand_kits"]]
        ben_reads = [(await ben.get(kit)), (await ben.put(kit, json=KIT)), (await ben.delete(kit))]
        missing = await ben.get(never)
        ben_reads_shared = await ben.get(common)
        ben_changes_shared = await ben.put(common, json={"name": "Hijacked"})
        ben_deletes_shared = await ben.delete(common)
        ana_unshares = await ana.put(kit, json={**KIT, "shared": True})
        renamed = await ana.put(kit, json={**KIT, "name": "Dawon Tea 2", "palette": []})
        admin_reads = await admin.get(kit)
        admin_edits_shared = await admin.put(common, json={"name": "House style v2"})
        deleted = await ana.delete(kit)
        gone = await ana.get(kit)

    assert refused_share.status_code == 403
    assert "admin" in refused_share.json()["error"]["message"]
    assert ana_list == ["Dawon Tea", "House style"]
    assert ben_list == ["House style"]  # ana's kit is not listed, and ben's refused one not made
    assert [r.status_code for r in ben_reads] == [404, 404, 404]
    # the same answer as for a kit that never existed, but for its id
    assert ben_reads[0].json()["error"]["message"] == missing.json()["error"]["message"].replace(
        "0" * 32, own["id"]
    )
    assert ben_reads_shared.status_code == 200
    assert (ben_changes_shared.status_code, ben_deletes_shared.status_code) == (403, 403)
    assert ana_unshares.status_code == 403  # a member cannot share by replacing either
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Dawon Tea 2" and renamed.json()["palette"] == []
    assert renamed.json()["updated_at"] > own["updated_at"]
    assert renamed.json()["created_at"] == own["created_at"]
    assert admin_reads.status_code == 200  # admins may read anyone's
    assert admin_edits_shared.status_code == 200
    assert admin_edits_shared.json()["shared"] is True  # left shared: `shared` was absent
    assert deleted.status_code == 204 and gone.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**KIT, "name": ""}, "name"),
        ({**KIT, "name": "   "}, "name"),
        ({**KIT, "name": "x" * 101}, "name"),
        ({**KIT, "voice": "v" * 301}, "voice"),
        ({**KIT, "words_to_avoid": [f"w{i}" for i in range(31)]}, "words_to_avoid"),
        ({**KIT, "words_to_avoid": ["a\x00b"]}, "words_to_avoid.0"),
        ({**KIT, "words_to_use": ["x" * 81]}, "words_to_use.0"),
        ({**KIT, "claims_to_avoid": ["c" * 201]}, "claims_to_avoid.0"),
        ({**KIT, "palette": ["green"]}, "palette.0"),
        ({**KIT, "palette": ["#000000"] * 9}, "palette"),
        ({**KIT, "example_copy": ["e" * 2001]}, "example_copy.0"),
        ({**KIT, "colour": "#000000"}, "colour"),
        ({k: v for k, v in KIT.items() if k != "name"}, "name"),
    ],
)
async def test_bad_kits_are_a_422_naming_the_field(
    app: FastAPI, body: dict[str, object], field: str
) -> None:
    async with await client_of(app, "ana@example.com") as ana:
        refused = await ana.post(BASE, json=body)
        listed = (await ana.get(BASE)).json()["brand_kits"]
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert field in [d["field"] for d in error["details"]], error
    assert field in error["message"]
    assert listed == []


async def test_a_malformed_kit_id_is_a_422_naming_it(app: FastAPI) -> None:
    async with await client_of(app, "ana@example.com") as ana:
        answer = await ana.get(f"{BASE}/not-an-id")
    assert answer.status_code == 422
    assert answer.json()["error"]["message"].startswith("kit_id:")
