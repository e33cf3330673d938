"""The web studio's backend: the shell and its files at /studio, the session cookie login,
its CSRF check, logging out, and reading an uploaded brief file.

The app runs in-process (httpx over ASGI); httpx keeps cookies as a browser does (its jar
sends a Secure cookie over https only), and the Set-Cookie headers are read as sent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI

from sparklio.core.config import Settings
from sparklio.main import close_app, create_app
from sparklio.services.auth import LOGIN_FAILURES
from tests.conftest import make_settings
from tests.test_campaigns import parse_events

PASSWORD = "a long enough password"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
CSRF_MESSAGE = (
    "CSRF token missing or wrong: send the X-CSRF-Token header with the value of the "
    "sparklio_csrf cookie"
)
ROOT = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379/0"
SECRET = "s" * 48


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    yield app
    await close_app(app)


def browser(app: FastAPI, base_url: str = "http://studio.test") -> httpx.AsyncClient:
    """A client that keeps cookies like a browser and sends no Authorization header."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def user(app: FastAPI, email: str, role: str = "member") -> str:
    created = await app.state.services.auth.create_user(email, PASSWORD, role)
    return str(created.id)


async def log_in(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/auth/session", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def set_cookies(response: httpx.Response) -> dict[str, Any]:
    """The cookies a response sets, by name, with their attributes as sent."""
    cookies: dict[str, Any] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            cookies[name] = morsel
    return cookies


def cookies(session: str, csrf: str | None = None) -> dict[str, str]:
    """A Cookie header, for a client other than the one the cookies were set on."""
    header = f"sparklio_session={session}"
    return {"Cookie": header if csrf is None else f"{header}; sparklio_csrf={csrf}"}


def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


# -- the shell and its files ---------------------------------------------------------------


async def test_the_shell_answers_every_studio_route_with_its_security_headers(
    app: FastAPI,
) -> None:
    async with browser(app) as client:
        pages = [await client.get(p) for p in ("/studio", "/studio/", "/studio/campaigns/c1")]
    shell = (ROOT / "sparklio" / "studio" / "static" / "index.html").read_text()
    for page in pages:
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.text == shell
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["cache-control"] == "no-store"


async def test_static_files_are_served_with_the_headers_and_nothing_outside_the_folder(
    app: FastAPI,
) -> None:
    async with browser(app) as client:
        found = await client.get("/studio/static/index.html")
        again = await client.get(
            "/studio/static/index.html", headers={"If-None-Match": found.headers["etag"]}
        )
        missing = await client.get("/studio/static/nope.js")
        outside = await client.get("/studio/static/..%2F..%2Fmain.py")
    assert found.status_code == 200 and "<html" in found.text
    assert found.headers["content-security-policy"] == CSP
    assert found.headers["x-content-type-options"] == "nosniff"
    assert found.headers["cache-control"] == "no-cache"  # kept, but checked on each load
    assert again.status_code == 304
    # the API's JSON error, not a stack trace or a file from elsewhere
    assert refused(missing, 404) and refused(outside, 404)


# -- logging in --------------------------------------------------------------------------------


async def test_login_sets_an_httponly_session_cookie_and_a_readable_csrf_cookie(
    app: FastAPI,
) -> None:
    user_id = await user(app, "ana@example.com")
    async with browser(app) as client:
        response = await client.post(
            "/api/v1/auth/session", json={"email": "ana@example.com", "password": PASSWORD}
        )
        me = await client.get("/api/v1/auth/me")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == {"id": user_id, "email": "ana@example.com", "role": "member"}
    cookies = set_cookies(response)
    session, csrf = cookies["sparklio_session"], cookies["sparklio_csrf"]
    assert session["httponly"] and not csrf["httponly"]  # the script reads only the CSRF one
    for cookie in (session, csrf):
        assert cookie["samesite"].lower() == "strict"
        assert cookie["path"] == "/"
        assert not cookie["secure"]  # plain http: a Secure cookie would never come back
        assert int(cookie["max-age"]) > 3600
    assert csrf.value == body["csrf_token"] and csrf.value != session.value
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "ana@example.com" and me.json()["via"] == "token"


@pytest.mark.parametrize(
    ("base_url", "overrides", "headers", "secure"),
    [
        ("https://studio.test", {}, {}, True),
        ("http://studio.test", {"session_cookie_secure": True}, {}, True),
        # a TLS proxy in FORWARDED_ALLOW_IPS says the browser came over https
        ("http://studio.test", {"forwarded_allow_ips": "127.0.0.1"},
         {"X-Forwarded-Proto": "https"}, True),
        # anyone else saying so is not believed
        ("http://studio.test", {}, {"X-Forwarded-Proto": "https"}, False),
    ],
)  # fmt: skip
async def test_the_cookies_are_secure_over_https(
    tmp_path: Path, base_url: str, overrides: dict[str, Any], headers: dict[str, str],
    secure: bool,
) -> None:  # fmt: skip
    app = create_app(make_settings(sparklio_home=tmp_path / "home", **overrides))
    try:
        await user(app, "ana@example.com")
        async with browser(app, base_url) as client:
            response = await client.post(
                "/api/v1/auth/session", headers=headers,
                json={"email": "ana@example.com", "password": PASSWORD},
            )  # fmt: skip
            me = await client.get("/api/v1/auth/me")
            cookies = set_cookies(response)
            assert bool(cookies["sparklio_session"]["secure"]) is secure
            assert bool(cookies["sparklio_csrf"]["secure"]) is secure
            if base_url.startswith("https"):  # the browser sends it back over https
                assert me.status_code == 200, me.text
    finally:
        await close_app(app)


async def test_a_wrong_password_is_401_and_repeated_failures_are_429(app: FastAPI) -> None:
    await user(app, "ana@example.com")
    async with browser(app) as client:
        wrong = {"email": "ana@example.com", "password": "not the password"}
        failures = [await client.post("/api/v1/auth/session", json=wrong)
                    for _ in range(LOGIN_FAILURES)]  # fmt: skip
        locked = await client.post(
            "/api/v1/auth/session", json={"email": "ana@example.com", "password": PASSWORD}
        )
    for failure in failures:
        assert refused(failure, 401) == "email or password is wrong"
        assert "sparklio_session" not in set_cookies(failure)
    assert "Too many failed logins" in refused(locked, 429)
    assert int(locked.headers["retry-after"]) > 0
    assert "sparklio_session" not in set_cookies(locked)


# -- what the cookie opens -------------------------------------------------------------------


async def test_the_cookie_follows_and_reads_the_users_own_campaign(app: FastAPI) -> None:
    await user(app, "ana@example.com")
    async with browser(app) as client:
        csrf = (await log_in(client, "ana@example.com"))["csrf_token"]
        started = await client.post(
            "/api/v1/campaigns", headers={"X-CSRF-Token": csrf},
            json={"brief": "Launch our oat latte in Seoul for office workers; instagram."},
        )  # fmt: skip
        assert started.status_code == 202, started.text
        base = f"/api/v1/campaigns/{started.json()['id']}"
        events = await client.get(f"{base}/events")  # an EventSource sends cookies only
        report = await client.get(f"{base}/report.md")
        listed = await client.get("/api/v1/campaigns")
    assert events.status_code == 200, events.text
    assert events.headers["content-type"].startswith("text/event-stream")
    assert parse_events(events.text)[-1]["event"] == "done"
    assert report.status_code == 200 and "oat latte" in report.text.lower()
    assert [c["id"] for c in listed.json()["campaigns"]] == [started.json()["id"]]


async def test_a_members_cookie_opens_neither_another_members_campaign_nor_admin_pages(
    app: FastAPI,
) -> None:
    await user(app, "ana@example.com")
    await user(app, "ben@example.com")
    async with browser(app) as ana, browser(app) as ben:
        csrf = (await log_in(ana, "ana@example.com"))["csrf_token"]
        started = await ana.post(
            "/api/v1/campaigns",
            headers={"X-CSRF-Token": csrf},
            json={"brief": "Oat latte for office workers in Seoul."},
        )
        base = f"/api/v1/campaigns/{started.json()['id']}"
        assert (await ana.get(f"{base}/events")).status_code == 200  # it finished
        await log_in(ben, "ben@example.com")
        seen = [await ben.get(base + path) for path in ("", "/events", "/report.html")]
        usage = await ben.get("/api/v1/usage")
        limits = await ben.put(
            "/api/v1/auth/users/x/limits", json={"rpm": 1},
            headers={"X-CSRF-Token": ben.cookies["sparklio_csrf"]},
        )  # fmt: skip
    for response in seen:
        assert "No campaign" in refused(response, 404)
    assert "needs an admin" in refused(usage, 403)
    assert "needs an admin" in refused(limits, 403)


# -- CSRF ----------------------------------------------------------------------------------------


async def test_a_cookie_change_needs_the_sessions_csrf_token(app: FastAPI) -> None:
    await user(app, "ana@example.com")
    key = {"name": "laptop"}
    async with browser(app) as client, browser(app) as other, browser(app) as bare:
        csrf = (await log_in(client, "ana@example.com"))["csrf_token"]
        session = client.cookies["sparklio_session"]
        # the same user's other session: a token that is right, for another session
        elsewhere = (await log_in(other, "ana@example.com"))["csrf_token"]
        without = await client.post("/api/v1/auth/api-keys", json=key)
        wrong = await client.post("/api/v1/auth/api-keys", json=key,
                                  headers={"X-CSRF-Token": csrf[:-4] + "abcd"})  # fmt: skip
        not_ascii = await client.post("/api/v1/auth/api-keys", json=key,
                                      headers={"X-CSRF-Token": "é".encode()})  # fmt: skip
        # the cookie and the header agree, but belong to the other session
        foreign = await bare.post(
            "/api/v1/auth/api-keys", json=key,
            headers={"X-CSRF-Token": elsewhere, **cookies(session, elsewhere)},
        )  # fmt: skip
        # the header is the session's, but there is no CSRF cookie to match
        no_cookie = await bare.post(
            "/api/v1/auth/api-keys", json=key, headers={"X-CSRF-Token": csrf, **cookies(session)}
        )
        listed = await client.get("/api/v1/auth/api-keys")  # a GET needs no token
        made = await client.post("/api/v1/auth/api-keys", json=key,
                                 headers={"X-CSRF-Token": csrf})  # fmt: skip
    for response in (without, wrong, not_ascii, foreign, no_cookie):
        assert refused(response, 403) == CSRF_MESSAGE
    assert listed.status_code == 200 and listed.json()["api_keys"] == []  # none was made
    assert made.status_code == 201, made.text
    assert made.json()["key"].startswith("sk-spk-")


async def test_bearer_clients_are_unchanged_and_their_header_wins_over_a_cookie(
    app: FastAPI,
) -> None:
    ana = await user(app, "ana@example.com")
    key, _ = await app.state.services.auth.create_api_key(ana, "ci")
    await user(app, "boss@example.com", "admin")
    async with browser(app) as client:
        await log_in(client, "boss@example.com")  # an admin's cookie in the jar
        bearer = {"Authorization": f"Bearer {key}"}
        me = await client.get("/api/v1/auth/me", headers=bearer)
        made = await client.post("/api/v1/auth/api-keys", json={"name": "x"}, headers=bearer)
        usage = await client.get("/api/v1/usage", headers=bearer)
        bad = await client.get("/api/v1/auth/me", headers={"Authorization": "Bearer nope"})
    assert me.json()["email"] == "ana@example.com" and me.json()["via"] == "key"
    assert made.status_code == 201, made.text  # no CSRF token needed with a header
    assert "needs an admin" in refused(usage, 403)  # the header's member, not the cookie
    assert refused(bad, 401)


# -- logging out -----------------------------------------------------------------------------


async def test_logout_clears_the_cookies_and_the_old_cookie_is_refused(app: FastAPI) -> None:
    await user(app, "ana@example.com")
    async with browser(app) as client:
        csrf = (await log_in(client, "ana@example.com"))["csrf_token"]
        token = client.cookies["sparklio_session"]
        forged = await client.delete("/api/v1/auth/session")  # another site's page, say
        still = await client.get("/api/v1/auth/me")
        out = await client.delete("/api/v1/auth/session", headers={"X-CSRF-Token": csrf})
        after = await client.get("/api/v1/auth/me")
        again = await client.delete("/api/v1/auth/session")  # nothing left to end
    assert refused(forged, 403) == CSRF_MESSAGE
    assert still.status_code == 200  # a forged logout ends nothing
    assert out.status_code == 204 and out.content == b""
    cleared = set_cookies(out)
    for name in ("sparklio_session", "sparklio_csrf"):
        assert cleared[name].value == "" and int(cleared[name]["max-age"]) == 0
    assert refused(after, 401)  # the jar dropped the cookie
    assert again.status_code == 204
    # the old value, kept by someone, is refused: as a cookie and as a bearer token
    async with browser(app) as thief:
        as_cookie = await thief.get("/api/v1/auth/me", headers=cookies(token))
        as_bearer = await thief.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert "logged out" in refused(as_cookie, 401)
    assert "logged out" in refused(as_bearer, 401)


async def test_logout_holds_on_every_process(tmp_path: Path) -> None:
    """Two gateways on one database and one Redis: a logout on A is refused on B at once,
    though B had the session in its credential cache."""
    client = redis.Redis.from_url(REDIS, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs Redis at {REDIS} ({exc})")
    finally:
        client.close()
    shared = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        "redis_url": REDIS,
        "redis_auth_prefix": f"test:{uuid.uuid4().hex}:auth:",
        "jwt_secret": SECRET,
    }
    a = create_app(make_settings(sparklio_home=tmp_path / "a", **shared))
    b = create_app(make_settings(sparklio_home=tmp_path / "b", **shared))
    try:
        await user(a, "ana@example.com")
        async with browser(a) as on_a, browser(b) as on_b:
            csrf = (await log_in(on_a, "ana@example.com"))["csrf_token"]
            session = cookies(on_a.cookies["sparklio_session"])
            before = await on_b.get("/api/v1/auth/me", headers=session)  # now in B's cache
            out = await on_a.delete("/api/v1/auth/session", headers={"X-CSRF-Token": csrf})
            after = await on_b.get("/api/v1/auth/me", headers=session)
    finally:
        await close_app(a)
        await close_app(b)
    assert before.status_code == 200, before.text
    assert out.status_code == 204
    assert "logged out" in refused(after, 401)


# -- a brief file --------------------------------------------------------------------------------


@pytest.fixture
async def studio(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A logged-in browser and the CSRF header its changes carry."""
    await user(app, "ana@example.com")
    async with browser(app) as client:
        csrf = (await log_in(client, "ana@example.com"))["csrf_token"]
        yield client, {"X-CSRF-Token": csrf}


async def test_a_yaml_brief_file_gives_the_fields_the_cli_reads(
    studio: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, csrf = studio
    text = (ROOT / "examples" / "brief_en.yaml").read_text()
    text += "channels: [instagram, naver_search]\nwords_to_avoid: [miracle]\n"
    text += "variants: {naver_search: {headlines: 5}}\n"
    response = await client.post("/api/v1/campaigns/brief-file", headers=csrf,
                                  json={"filename": "brief.yaml", "text": text})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["brief"].startswith("We are launching Aurora Trail")
    assert body["product_facts"]["weight"] == "240 g"
    assert body["channels"] == ["instagram", "naver_search"]
    assert body["words_to_avoid"] == ["miracle"]
    assert body["variants"] == {"naver_search": {"headlines": 5}}
    assert body["brand_guide"] is None
    # what it gives starts a campaign as it is
    started = await client.post(
        "/api/v1/campaigns", headers=csrf, json={k: v for k, v in body.items() if v is not None}
    )
    assert started.status_code == 202, started.text


async def test_a_json_brief_file_may_be_indented_with_tabs_and_dates_stay_text(
    studio: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, csrf = studio
    files = {
        "brief.json": '{\n\t"brief": "Oat latte",\n\t"product_facts": {"launch": "2026-12-01"}\n}',
        "brief.yml": "brief: Oat latte\nproduct_facts:\n  launch: 2026-12-01\n",
    }
    for filename, text in files.items():
        response = await client.post("/api/v1/campaigns/brief-file", headers=csrf,
                                     json={"filename": filename, "text": text})  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["brief"] == "Oat latte"
        assert response.json()["product_facts"] == {"launch": "2026-12-01"}


async def test_a_markdown_brief_file_is_the_brief(
    studio: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, csrf = studio
    text = "# Oat latte launch\n\nOffice workers in Seoul; **calm** afternoons.\n"
    response = await client.post("/api/v1/campaigns/brief-file", headers=csrf,
                                 json={"filename": "Brief.MD", "text": text})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == {
        "brief": text.strip(), "product_facts": {}, "brand_guide": None,
        "words_to_avoid": [], "channels": None, "variants": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("filename", "text", "says"),
    [
        ("brief.yaml", "brief: [unclosed", "brief.yaml is not valid YAML"),
        ("brief.yaml", "brief: !!int abc", "brief.yaml is not valid YAML"),
        ("brief.json", '{"brief": "x",}', "brief.json is not valid JSON"),
        ("brief.yaml", "- just\n- a list\n", "expected a mapping with the keys brief"),
        ("brief.yaml", "product_facts: {a: 1}\n", "brief: Field required"),
        ("brief.json", '{"brief": "x", "colour": "red"}', "colour"),
        ("brief.yaml", "brief: hi\nchannels: [myspace]\n", "channels.0"),
        ("brief.yaml", "brief: hi\nproduct_facts: {big: .inf}\n", "product_facts.big"),
        ("brief.yaml", "a: &a [x, x]\nb: &b [*a, *a]\nbrief: hi\n", "aliases"),
        ("brief.yaml", "brief: " + "[" * 5000, "brief.yaml"),
        ("brief.md", "  \n\n ", "brief.md is empty"),
        ("brief.pdf", "%PDF-1.7", ".yaml, .yml, .json, .md, .txt"),
    ],
)
async def test_a_malformed_brief_file_is_a_clear_422(
    studio: tuple[httpx.AsyncClient, dict[str, str]], filename: str, text: str, says: str
) -> None:
    client, csrf = studio
    response = await client.post("/api/v1/campaigns/brief-file", headers=csrf,
                                 json={"filename": filename, "text": text})  # fmt: skip
    assert says in refused(response, 422)


async def test_a_brief_file_needs_a_login(app: FastAPI) -> None:
    async with browser(app) as client:
        response = await client.post("/api/v1/campaigns/brief-file",
                                     json={"filename": "b.md", "text": "hi"})  # fmt: skip
    assert "No credentials" in refused(response, 401)
