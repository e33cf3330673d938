"""Login limits that hold (issue 10): failures count per (account, address) and per address,
never per account alone, and the address is the TCP peer unless that peer is a proxy listed
in FORWARDED_ALLOW_IPS.

The in-process tests run the real app over httpx's ASGI transport, which sets the peer
address; the last one serves the gateway with `sparklio serve` and logs in over TCP from
127.0.0.1, where uvicorn used to believe any X-Forwarded-For.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.datastructures import Headers

from sparklio.api.auth import forwarded_client
from sparklio.core.config import Settings
from sparklio.exceptions import ConfigError
from sparklio.services.auth import ADDRESS_FAILURES, LOGIN_FAILURES, AuthService
from tests.conftest import make_settings
from tests.servers import free_port
from tests.test_auth import connect, database, engine, make_app, message, new_user, service

__all__ = ["database", "engine", "service"]  # fixtures, used by name

LOGIN = "/api/v1/auth/login"
ROOT = Path(__file__).resolve().parents[1]


def wrong(email: str) -> dict[str, str]:
    return {"email": email, "password": "not-the-password"}


def stranger() -> str:
    return f"{secrets.token_hex(4)}@example.com"


def with_proxies(service: AuthService, allowed: str) -> AuthService:
    """The same service, with FORWARDED_ALLOW_IPS set."""
    service.settings = service.settings.model_copy(update={"forwarded_allow_ips": allowed})
    return service


async def test_a_stranger_guessing_a_password_cannot_lock_out_its_owner(
    service: AuthService,
) -> None:
    owner, password = await new_user(service)
    app = make_app(service)
    async with connect(app, "203.0.113.9") as attacker, connect(app, "198.51.100.4") as home:
        for _ in range(LOGIN_FAILURES):
            assert (await attacker.post(LOGIN, json=wrong(owner.email))).status_code == 401
        response = await attacker.post(LOGIN, json=wrong(owner.email))
        assert response.status_code == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 300
        assert "try again in" in message(response)
        # even the right password is refused from the guessing address...
        right = {"email": owner.email, "password": password}
        assert (await attacker.post(LOGIN, json=right)).status_code == 429

        # ...while the owner, from their own address, typos once and then logs in
        assert (await home.post(LOGIN, json=wrong(owner.email))).status_code == 401
        response = await home.post(LOGIN, json=right)
        assert response.status_code == 200
        assert response.json()["access_token"]


async def test_one_address_is_limited_across_accounts(service: AuthService) -> None:
    user, password = await new_user(service)
    app = make_app(service)
    async with connect(app, "203.0.113.10") as sprayer, connect(app, "198.51.100.5") as other:
        for _ in range(ADDRESS_FAILURES):
            assert (await sprayer.post(LOGIN, json=wrong(stranger()))).status_code == 401
        response = await sprayer.post(LOGIN, json=wrong(stranger()))
        assert response.status_code == 429
        right = {"email": user.email, "password": password}
        assert (await sprayer.post(LOGIN, json=right)).status_code == 429
        assert (await other.post(LOGIN, json=right)).status_code == 200


async def test_a_successful_login_does_not_reset_the_address_counter(
    service: AuthService,
) -> None:
    user, password = await new_user(service)
    right = {"email": user.email, "password": password}
    async with connect(make_app(service)) as client:
        for _ in range(ADDRESS_FAILURES - 1):
            assert (await client.post(LOGIN, json=wrong(stranger()))).status_code == 401
        assert (await client.post(LOGIN, json=right)).status_code == 200
        assert (await client.post(LOGIN, json=wrong(stranger()))).status_code == 401
        assert (await client.post(LOGIN, json=right)).status_code == 429


async def test_forwarded_headers_are_ignored_unless_the_peer_is_an_allowed_proxy(
    service: AuthService,
) -> None:
    """By default (FORWARDED_ALLOW_IPS empty) a client that rotates X-Forwarded-For is still
    one address; so is a client that is not one of the listed proxies."""
    owner, _ = await new_user(service)
    for allowed in ("", "10.0.0.0/8"):
        with_proxies(service, allowed)
        async with connect(make_app(service), f"192.0.2.{len(allowed)}") as client:
            codes = []
            for n in range(LOGIN_FAILURES + 1):
                headers = {"X-Forwarded-For": f"198.51.100.{n}", "Forwarded": f"for=192.0.2.{n}"}
                response = await client.post(LOGIN, json=wrong(owner.email), headers=headers)
                codes.append(response.status_code)
        assert codes == [401] * LOGIN_FAILURES + [429], allowed


async def test_an_allowed_proxy_names_the_client_it_forwards(service: AuthService) -> None:
    owner, password = await new_user(service)
    right = {"email": owner.email, "password": password}
    with_proxies(service, "127.0.0.1, 10.0.0.0/8")
    async with connect(make_app(service), "127.0.0.1") as proxy:
        # the attacker puts a fake address first; the proxy appends the one it saw
        spoofed = {"X-Forwarded-For": f"{secrets.token_hex(1)}.1.1.1, 203.0.113.50"}
        for _ in range(LOGIN_FAILURES):
            response = await proxy.post(LOGIN, json=wrong(owner.email), headers=spoofed)
            assert response.status_code == 401
            spoofed = {"X-Forwarded-For": f"{secrets.token_hex(1)}.1.1.1, 203.0.113.50"}
        response = await proxy.post(LOGIN, json=right, headers=spoofed)
        assert response.status_code == 429

        # the owner behind the same proxy, through a second one, and over RFC 7239
        via_two = {"X-Forwarded-For": "198.51.100.7, 10.1.2.3"}
        assert (await proxy.post(LOGIN, json=right, headers=via_two)).status_code == 200
        rfc = {"Forwarded": 'for="[2001:db8:cafe::17]:4711";proto=https'}
        assert (await proxy.post(LOGIN, json=right, headers=rfc)).status_code == 200


async def test_an_ipv6_client_is_limited_per_64_block(service: AuthService) -> None:
    """An IPv6 client usually holds a whole /64: hopping inside it does not reset the count."""
    with_proxies(service, "127.0.0.1")
    codes = []
    async with connect(make_app(service), "127.0.0.1") as proxy:
        for n in range(ADDRESS_FAILURES + 1):
            headers = {"X-Forwarded-For": f"2001:db8:1:2::{n + 1:x}"}
            response = await proxy.post(LOGIN, json=wrong(stranger()), headers=headers)
            codes.append(response.status_code)
        assert codes == [401] * ADDRESS_FAILURES + [429]
        other_block = {"X-Forwarded-For": "2001:db8:1:3::1"}
        response = await proxy.post(LOGIN, json=wrong(stranger()), headers=other_block)
        assert response.status_code == 401


@pytest.mark.parametrize(
    ("peer", "headers", "allowed", "client"),
    [
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.1"}, "", "127.0.0.1"),
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.1"}, "127.0.0.1", "203.0.113.1"),
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.1"}, "*", "203.0.113.1"),
        ("10.0.0.2", {"x-forwarded-for": "203.0.113.1"}, "127.0.0.1", "10.0.0.2"),
        # read from the right: the first hop that is not an allowed proxy
        ("10.0.0.2", {"x-forwarded-for": "6.6.6.6, 203.0.113.1, 10.0.0.9"}, "10.0.0.0/8",
         "203.0.113.1"),
        # every hop an allowed proxy: the leftmost
        ("10.0.0.2", {"x-forwarded-for": "10.0.0.7, 10.0.0.9"}, "10.0.0.0/8", "10.0.0.7"),
        # a hop that is no address ends the walk at the last believed one
        ("10.0.0.2", {"x-forwarded-for": "203.0.113.1, unknown"}, "10.0.0.0/8", "10.0.0.2"),
        ("10.0.0.2", {"x-forwarded-for": "  "}, "10.0.0.0/8", "10.0.0.2"),
        ("10.0.0.2", {"x-forwarded-for": "203.0.113.1:5555"}, "10.0.0.0/8", "203.0.113.1"),
        ("10.0.0.2", {"x-forwarded-for": "::ffff:203.0.113.1"}, "10.0.0.0/8", "203.0.113.1"),
        ("10.0.0.2", {"forwarded": 'for=192.0.2.60;proto=http, for="[2001:db8::1]:80"'},
         "10.0.0.0/8", "2001:db8::1"),
        ("10.0.0.2", {"forwarded": "for=_hidden"}, "10.0.0.0/8", "10.0.0.2"),
        ("::1", {"x-forwarded-for": "203.0.113.1"}, "::1", "203.0.113.1"),
        ("", {"x-forwarded-for": "203.0.113.1"}, "*", ""),
    ],
)  # fmt: skip
def test_forwarded_client_reads_the_hop_the_proxy_wrote(
    peer: str, headers: dict[str, str], allowed: str, client: str
) -> None:
    assert forwarded_client(peer, Headers(headers), allowed) == client


def test_a_bad_forwarded_allow_ips_stops_the_start_naming_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"FORWARDED_ALLOW_IPS.*'10\.0\.0\.300'"):
        from sparklio.core.config import load_settings

        load_settings(_env_file=None, forwarded_allow_ips="127.0.0.1, 10.0.0.300")
    assert make_settings(forwarded_allow_ips="127.0.0.1, 10.0.0.0/8, ::1, *")
    assert Settings(_env_file=None).forwarded_allow_ips == ""  # type: ignore[call-arg]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """`sparklio serve` on a free port (mock mode, SQLite in tmp_path, no .env)."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),  # this checkout's sparklio, whatever is installed
        "SPARKLIO_HOME": str(tmp_path / "home"),
        "GENERATOR_MODE": "mock",
        "ALLOW_REMOTE_CALLS": "false",
        "LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "sparklio.cli", "serve", "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a busy 2-core machine imports slowly
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "serve.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.mark.timeout(180)
def test_the_served_gateway_does_not_believe_x_forwarded_for_from_loopback(served: str) -> None:
    """`sparklio serve` with the default settings: a client on 127.0.0.1 that rotates
    X-Forwarded-For is still one address, and hits the per-address limit."""
    codes = []
    with httpx.Client(base_url=served, timeout=30) as client:
        for n in range(ADDRESS_FAILURES + 1):
            headers = {"X-Forwarded-For": f"198.51.{n}.{n}"}
            codes.append(client.post(LOGIN, json=wrong(stranger()), headers=headers).status_code)
    assert codes == [401] * ADDRESS_FAILURES + [429]
