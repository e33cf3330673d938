"""Authentication: what a caller meets with no, good, revoked or expired credentials.

Every test runs on SQLite and on a real PostgreSQL (127.0.0.1:5432, trust auth, user postgres),
each a fresh database per module, migrated with Alembic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sparklio.api.auth import AdminDep, PrincipalDep
from sparklio.api.deps import get_auth, get_settings
from sparklio.api.errors import install_error_handlers
from sparklio.api.v1.endpoints import auth as auth_endpoints
from sparklio.core.config import Settings
from sparklio.db.engine import make_engine, migrate, sessions
from sparklio.db.models import ApiKey, User
from sparklio.exceptions import InvalidRequestError
from sparklio.services.auth import AuthService
from tests.conftest import make_settings, provide

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
#: argon2id with small parameters: the same code path, a fraction of a millisecond a hash
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def _postgres(statement: str) -> None:
    connection = await asyncpg.connect(f"{PG_SERVER}/test", timeout=3)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, migrated database for this module."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('auth') / 'auth.db'}"
        migrate(url)
        yield url
        return
    name = f"sparklio_auth_{secrets.token_hex(6)}"
    try:
        asyncio.run(_postgres(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        reason = (
            f"PostgreSQL is not reachable at {PG_SERVER}/test ({exc!r}); start one with trust "
            "auth for user postgres to run the PostgreSQL half of these tests"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        migrate(url)
        yield url
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database)
    yield engine
    await engine.dispose()


@pytest.fixture
def service(engine: AsyncEngine, settings: Settings) -> AuthService:
    return AuthService(settings, sessions(engine), hasher=FAST_HASHER)


def make_app(service: AuthService) -> FastAPI:
    """What create_app wires, and a protected route or two."""
    app = FastAPI()
    provide(app, get_settings, service.settings)
    provide(app, get_auth, service)
    install_error_handlers(app)
    app.include_router(auth_endpoints.router, prefix="/api/v1")

    @app.get("/protected")
    async def protected(principal: PrincipalDep) -> dict[str, Any]:
        return {"email": principal.email, "via": principal.via}

    @app.get("/admin-only")
    async def admin_only(principal: AdminDep) -> dict[str, Any]:
        return {"email": principal.email}

    return app


def connect(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://sparklio")


@pytest.fixture
async def client(service: AuthService) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(make_app(service)) as client:
        yield client


async def new_user(service: AuthService, role: str = "member") -> tuple[User, str]:
    password = secrets.token_urlsafe(12)
    user = await service.create_user(f"{role}-{secrets.token_hex(4)}@Example.com", password, role)
    return user, password


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def message(response: httpx.Response) -> str:
    text: str = response.json()["error"]["message"]
    return text


async def test_no_or_bad_credentials_get_401_saying_how_to_authenticate(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/protected")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer <API key or token>" in message(response)
    assert "sparklio create-test-users" in message(response)
    assert "POST /api/v1/auth/api-keys" in message(response)

    response = await client.get("/protected", headers={"Authorization": "Basic dTpw"})
    assert response.status_code == 401
    assert "malformed" in message(response)

    unknown = "sk-spk-" + secrets.token_urlsafe(32)
    response = await client.get("/protected", headers=bearer(unknown))
    assert response.status_code == 401
    assert unknown not in message(response)  # never echo a whole key
    assert unknown[:14] in message(response)


async def test_a_key_works_until_revoked_then_403_on_the_very_next_request(
    client: httpx.AsyncClient, service: AuthService, engine: AsyncEngine
) -> None:
    user, _ = await new_user(service)
    key, record = await service.create_api_key(user.id, "laptop")
    assert key.startswith("sk-spk-") and record.prefix == key[:14]

    response = await client.get("/protected", headers=bearer(key))
    assert response.status_code == 200
    assert response.json() == {"email": user.email, "via": "key"}
    assert user.email == user.email.lower()
    # every model call checks the key: the next ones are answered without the database
    statements: list[str] = []
    listen = event.listens_for(engine.sync_engine, "before_cursor_execute")
    listen(lambda *args: statements.append(args[2]))
    for _ in range(3):
        assert (await client.get("/protected", headers=bearer(key))).status_code == 200
    assert statements == []

    listed = (await client.get("/api/v1/auth/api-keys", headers=bearer(key))).json()["api_keys"]
    assert [k["prefix"] for k in listed] == [key[:14]]
    assert "key" not in listed[0] and listed[0]["revoked_at"] is None
    first_use = listed[0]["last_used_at"]
    assert first_use is not None
    # used again within the minute: last_used_at is not written again
    listed = (await client.get("/api/v1/auth/api-keys", headers=bearer(key))).json()["api_keys"]
    assert listed[0]["last_used_at"] == first_use

    # the table holds the sha256 and the prefix, never the key
    async with engine.connect() as connection:
        rows = (await connection.execute(select(ApiKey.__table__))).all()
    assert len(rows) >= 1
    assert all(key not in str(value) for row in rows for value in row)
    assert hashlib.sha256(key.encode()).hexdigest() in {row.key_hash for row in rows}

    response = await client.delete(f"/api/v1/auth/api-keys/{record.id}", headers=bearer(key))
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None

    response = await client.get("/protected", headers=bearer(key))  # was cached a moment ago
    assert response.status_code == 403
    assert message(response).startswith(f"API key {key[:14]} was revoked")


async def test_keys_are_created_over_http_and_members_revoke_only_their_own(
    client: httpx.AsyncClient, service: AuthService
) -> None:
    alice, _ = await new_user(service)
    bob, _ = await new_user(service)
    admin, _ = await new_user(service, role="admin")
    alice_key, _ = await service.create_api_key(alice.id, "first")
    admin_key, _ = await service.create_api_key(admin.id, "admin")

    response = await client.post(
        "/api/v1/auth/api-keys", json={"name": "ci"}, headers=bearer(alice_key)
    )
    assert response.status_code == 201
    created = response.json()
    assert created["name"] == "ci" and created["prefix"] == created["key"][:14]
    assert (await client.get("/protected", headers=bearer(created["key"]))).status_code == 200

    bob_key, bob_record = await service.create_api_key(bob.id, "bob")
    response = await client.delete(
        f"/api/v1/auth/api-keys/{bob_record.id}", headers=bearer(alice_key)
    )
    assert response.status_code == 404
    assert (await client.get("/protected", headers=bearer(bob_key))).status_code == 200

    response = await client.delete(
        f"/api/v1/auth/api-keys/{bob_record.id}", headers=bearer(admin_key)
    )
    assert response.status_code == 200
    assert (await client.get("/protected", headers=bearer(bob_key))).status_code == 403

    response = await client.post(
        "/api/v1/auth/api-keys", json={"name": "x", "admin": True}, headers=bearer(alice_key)
    )
    assert response.status_code == 422


async def test_an_inactive_user_gets_403_at_once_and_cannot_log_in(
    client: httpx.AsyncClient, service: AuthService
) -> None:
    user, password = await new_user(service)
    key, _ = await service.create_api_key(user.id, "k")
    assert (await client.get("/protected", headers=bearer(key))).status_code == 200

    await service.set_active(user.id, False)
    response = await client.get("/protected", headers=bearer(key))
    assert response.status_code == 403
    assert "inactive" in message(response)
    response = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": password}
    )
    assert response.status_code == 403

    await service.set_active(user.id, True)
    assert (await client.get("/protected", headers=bearer(key))).status_code == 200


async def test_login_gives_a_token_for_the_protected_routes_and_me(
    client: httpx.AsyncClient, service: AuthService
) -> None:
    user, password = await new_user(service)
    response = await client.post(
        "/api/v1/auth/login", json={"email": user.email.upper(), "password": password}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_at"]
    assert body["expires_in"] == service.settings.jwt_expiry_minutes * 60

    token = body["access_token"]
    response = await client.get("/protected", headers=bearer(token))
    assert response.json() == {"email": user.email, "via": "token"}
    me = (await client.get("/api/v1/auth/me", headers=bearer(token))).json()
    assert me == {
        "id": user.id,
        "email": user.email,
        "role": "member",
        "active": True,
        "via": "token",
        "key_id": None,
        "limits": [],  # none set: nothing held
    }
    response = await client.get("/admin-only", headers=bearer(token))
    assert response.status_code == 403
    assert "needs an admin" in message(response)

    wrong = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": password + "x"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": password}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert message(wrong) == message(unknown) == "email or password is wrong"

    extra = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": password, "role": "admin"}
    )
    assert extra.status_code == 422


async def test_an_expired_or_forged_token_gets_401_saying_which(
    client: httpx.AsyncClient, service: AuthService, engine: AsyncEngine
) -> None:
    user, _ = await new_user(service)
    expired = service.issue_token(user.id, "member", expires_in=timedelta(minutes=-1))
    response = await client.get("/protected", headers=bearer(expired.access_token))
    assert response.status_code == 401
    assert "expired" in message(response)
    assert "POST /api/v1/auth/login" in message(response)

    other_secret = SecretStr(secrets.token_urlsafe(48))
    forger = AuthService(make_settings(jwt_secret=other_secret), sessions(engine))
    forged = forger.issue_token(user.id, "admin")
    response = await client.get("/protected", headers=bearer(forged.access_token))
    assert response.status_code == 401
    assert "signature" in message(response)

    response = await client.get("/protected", headers=bearer("not-a-token"))
    assert response.status_code == 401


async def test_ensure_test_users_creates_once_then_returns_nothing(
    client: httpx.AsyncClient, service: AuthService
) -> None:
    created = await service.ensure_test_users()
    assert [(c.email, c.role) for c in created] == [
        ("admin@sparklio.local", "admin"),
        ("member@sparklio.local", "member"),
    ]
    admin = created[0]
    response = await client.get("/admin-only", headers=bearer(admin.api_key))
    assert response.status_code == 200
    response = await client.post(
        "/api/v1/auth/login", json={"email": admin.email, "password": admin.password}
    )
    assert response.status_code == 200

    assert await service.ensure_test_users() == []
    # the first credentials still work
    assert (await client.get("/protected", headers=bearer(created[1].api_key))).status_code == 200


async def test_the_jwt_secret_file_is_private_and_reused(
    engine: AsyncEngine, settings: Settings
) -> None:
    first = AuthService(settings, sessions(engine), hasher=FAST_HASHER)
    token = await first.local_token()
    path = Path(settings.home) / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text()

    second = AuthService(settings, sessions(engine), hasher=FAST_HASHER)  # e.g. a restart
    principal = await second.authenticate(f"Bearer {token}")
    assert (principal.email, principal.role, principal.via) == (
        "local@sparklio.local",
        "admin",
        "token",
    )
    member = await second.authenticate(f"Bearer {await second.local_token('member')}")
    assert member.role == "member"  # a token may narrow the user's role
    assert path.read_text() == secret
    assert secret.strip() not in token


async def test_a_configured_jwt_secret_is_used_and_no_file_is_written(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = make_settings(
        sparklio_home=tmp_path / "configured", jwt_secret=SecretStr(secrets.token_urlsafe(48))
    )
    service = AuthService(settings, sessions(engine), hasher=FAST_HASHER)
    principal = await service.authenticate(f"Bearer {await service.local_token()}")
    assert principal.email == "local@sparklio.local"
    assert not (settings.home / "jwt_secret").exists()


async def test_create_user_refuses_bad_input_clearly(service: AuthService) -> None:
    with pytest.raises(InvalidRequestError, match="not an email address"):
        await service.create_user("nobody", "long-enough")
    with pytest.raises(InvalidRequestError, match="between 8 and"):
        await service.create_user("short@example.com", "short")
    with pytest.raises(InvalidRequestError, match="role: one of admin, member"):
        await service.create_user("boss@example.com", "long-enough", role="owner")
    user, _ = await new_user(service)
    with pytest.raises(InvalidRequestError, match="already exists"):
        await service.create_user(user.email.upper(), "long-enough")


async def test_passwords_are_stored_as_argon2id_and_verify(
    engine: AsyncEngine, settings: Settings
) -> None:
    service = AuthService(settings, sessions(engine))  # the real parameters, once
    user = await service.create_user("Real.Hash@Example.com", "correct horse battery")
    assert user.email == "real.hash@example.com"
    assert user.password_hash.startswith("$argon2id$")
    assert "correct horse" not in user.password_hash
    token = await service.login("real.hash@example.com", "correct horse battery", "127.0.0.1")
    assert (await service.authenticate(f"Bearer {token.access_token}")).user_id == user.id


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/auth/login", {"email": "nul\x00@example.com", "password": "whatever1"}, "email"),
        ("/api/v1/auth/login", {"email": "bell\x07@example.com", "password": "x"}, "email"),
        ("/api/v1/auth/login", {"email": "half\ud800@example.com", "password": "x"}, "email"),
        ("/api/v1/auth/login", {"email": "a@example.com", "password": "half\udfff"}, "password"),
        ("/api/v1/auth/login", {"email": "a" * 321, "password": "whatever1"}, "email"),
        ("/api/v1/auth/login", {"email": "a@example.com", "password": "p" * 1025}, "password"),
        ("/api/v1/auth/login", {"email": 5, "password": "whatever1"}, "email"),
        ("/api/v1/auth/login", {"email": ["a@example.com"], "password": "x"}, "email"),
        ("/api/v1/auth/login", {"email": "", "password": "whatever1"}, "email"),
        ("/api/v1/auth/login", {"email": "a@example.com"}, "password"),
        ("/api/v1/auth/api-keys", {"name": "lap\x00top"}, "name"),
        ("/api/v1/auth/api-keys", {"name": "line\nbreak"}, "name"),
        ("/api/v1/auth/api-keys", {"name": "half\ud800"}, "name"),
        ("/api/v1/auth/api-keys", {"name": "n" * 101}, "name"),
        ("/api/v1/auth/api-keys", {"name": None}, "name"),
        ("/api/v1/auth/api-keys", {"name": 2**70}, "name"),
    ],
)
async def test_odd_input_to_auth_endpoints_is_a_422_naming_the_field(
    client: httpx.AsyncClient, service: AuthService, path: str, body: Any, field: str
) -> None:
    """NUL in a login email or a key name was a 500 on PostgreSQL, which refuses it in text
    (issue 10); on SQLite it was stored, or a login said the password was wrong."""
    user, _ = await new_user(service)
    key, _ = await service.create_api_key(user.id, "k")
    headers = {**bearer(key), "Content-Type": "application/json"}
    # json.dumps escapes what httpx's json= would refuse to encode (a lone surrogate)
    response = await client.post(path, content=json.dumps(body), headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_request"
    assert message(response).startswith(f"Invalid request: {field}: ")
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]


async def test_odd_bodies_paths_and_headers_on_auth_endpoints_are_4xx(
    client: httpx.AsyncClient, service: AuthService
) -> None:
    user, _ = await new_user(service)
    key, _ = await service.create_api_key(user.id, "k")
    login = "/api/v1/auth/login"
    for content in (b"", b"not json", b"[]", b'"a"', b"\x00", b"\xff\xfe", b'{"email": "a@b.c",'):
        response = await client.post(
            login, content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (content, response.text)
    for key_id in ("%00", "a%00b", "%ED%A0%80", "x" * 33, "..%2F..%2Fetc", "%0A"):
        response = await client.delete(f"/api/v1/auth/api-keys/{key_id}", headers=bearer(key))
        assert response.status_code in (404, 422), (key_id, response.text)
        assert "key_id" in message(response) or response.status_code == 404
    for credential in ("sk-spk-" + "\xe9" * 40, "x" * 20_000, "a.b.c", "sk-spk-\x7f"):
        response = await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {credential}".encode("latin-1")}
        )
        assert response.status_code == 401, (credential[:20], response.text)


async def test_stored_text_with_control_characters_is_refused_naming_the_field(
    service: AuthService,
) -> None:
    """The service checks too: `create_user` is also called from the CLI."""
    with pytest.raises(InvalidRequestError, match=r"^email: a control character \(U\+0000\)"):
        await service.create_user("nul\x00@example.com", "long-enough")
    with pytest.raises(InvalidRequestError, match=r"^password: a lone surrogate \(U\+D800\)"):
        await service.create_user("surrogate@example.com", "long-enough\ud800")
    user, password = await new_user(service)
    with pytest.raises(InvalidRequestError, match=r"^name: a control character \(U\+001B\)"):
        await service.create_api_key(user.id, "\x1b[31mred")
    with pytest.raises(InvalidRequestError, match=r"^email: a control character"):
        await service.login(user.email + "\x00", password, "127.0.0.1")
    # NUL in a password is refused by nothing: it is hashed, never stored
    assert (await service.create_user("nul.password@example.com", "pass\x00word")).email
    assert (await service.login("nul.password@example.com", "pass\x00word", "127.0.0.1")).expires_in


#: values a careless client or a fuzzer sends: control and odd characters, huge and wrong types
NASTY: list[Any] = [
    "", " ", "\x00", "\x01x", "a\tb", "\x1f", "\x7f", "\x85", "\u2028", "\ufeff", "\ud800",
    "x\udfff", "🙂@example.com", "a" * 10_000, "' OR 1=1 --", "%00", "\\", '"', "null",
    "a@b.c\x00", "\u202eevil@example.com", 0, -1, 2**64, 2**70, 1.5, True, None, [], {},
    {"$ne": ""}, ["a@example.com"],
]  # fmt: skip


async def test_no_value_in_any_auth_field_is_a_500(
    service: AuthService, engine: AsyncEngine
) -> None:
    """Every auth endpoint, every field, every NASTY value: a 4xx (a 422 names the field) or
    a success, never a 5xx; and nothing a 422 refused was stored."""
    user, password = await new_user(service)
    key, _ = await service.create_api_key(user.id, "k")
    app = make_app(service)
    json_headers = {**bearer(key), "Content-Type": "application/json"}
    seen: dict[int, int] = {}
    for n, value in enumerate(NASTY):
        # a fresh address per value: the login limit would otherwise answer for the rest
        async with connect(app, f"10.1.{n}.1") as client:
            login, keys = "/api/v1/auth/login", "/api/v1/auth/api-keys"
            requests = [
                (login, {"email": value, "password": password}, "email"),
                (login, {"email": user.email, "password": value}, "password"),
                (keys, {"name": value}, "name"),
            ]
            for path, body, field in requests:
                content = json.dumps(body)
                response = await client.post(path, content=content, headers=json_headers)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                assert response.status_code < 500, (path, field, repr(value)[:40], response.text)
                if response.status_code == 422:
                    assert f"{field}: " in message(response), (field, message(response))
            if isinstance(value, str) and len(value) < 100:
                quoted = quote(value.encode("utf-8", "surrogatepass"), safe="")
                response = await client.delete(
                    f"/api/v1/auth/api-keys/{quoted}", headers=bearer(key)
                )
                assert response.status_code < 500, (repr(value), response.text)
    assert seen.get(422, 0) >= len(NASTY)  # most values are refused...
    assert seen.get(201, 0) >= 5  # ...and plain odd text is a fine key name
    async with engine.connect() as connection:
        names = (await connection.execute(select(ApiKey.name))).scalars().all()
    assert not any("\x00" in name or "\x7f" in name for name in names)
