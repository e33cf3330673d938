"""Ctrl-C on `sparklio campaign`: the campaign is durable, so the command says where it goes
on. Against a server it keeps running there (the command prints how to follow or cancel it);
in-process it stops with the command and resumes when Sparklio next starts on the same home.

The command runs as a subprocess that gets a real SIGINT while the campaign's third step
waits on a fake Ollama (tests/fakes/campaign.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sparklio.services.auth import local_token_for
from tests.conftest import make_settings
from tests.fakes.base import Held, Reply
from tests.fakes.campaign import ROUTES, MockOllama
from tests.gateway_process import ROOT, Server
from tests.live import until
from tests.test_campaigns import events_of

BRIEF = "Launch our oat latte in Seoul for office workers; instagram and naver search."


def live_env(tmp_path: Path, ollama: str) -> dict[str, str]:
    """Live mode, every model call to the fake Ollama at `ollama`, in a temp home."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    return {"GENERATOR_MODE": "live", "LLM_ROUTING_FILE": str(routes), "OLLAMA_BASE_URL": ollama}


def command(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`sparklio campaign` on BRIEF, from this checkout, in the test's home."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("GENERATOR_", "DATABASE_", "LLM_", "GATEWAY_"))}  # fmt: skip
    environ |= {"SPARKLIO_HOME": str(tmp_path / "home"), "LOG_LEVEL": "warning", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "sparklio.cli", "campaign", "--brief", BRIEF,
         "--out", str(tmp_path / "out"), *args],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip


def _default_sigint() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background of a shell
    (`make test &`) ignores SIGINT, and a child inherits that, so its Ctrl-C did nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def api(port: int, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20,
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip


async def at_third_call(proc: subprocess.Popen[str], fake: MockOllama) -> None:
    """Wait until the campaign's third model call (the strategist's) waits at the fake."""
    await until(lambda: fake.calls == 3 or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()


async def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Ctrl-C: SIGINT to the command; its exit code and output."""
    proc.send_signal(signal.SIGINT)
    try:
        out, errors = await asyncio.to_thread(proc.communicate, timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()  # not left running after the test, whatever it was stuck on
        out, errors = await asyncio.to_thread(proc.communicate)
        raise AssertionError(f"Ctrl-C did not stop the command in 60 s: {out}{errors}") from None
    return proc.returncode, out + errors


@pytest.mark.timeout(180)
async def test_ctrl_c_against_a_server_leaves_the_campaign_running_there(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    home = tmp_path / "home"
    async with MockOllama() as fake:
        fake.then(Reply(), Reply(), Held(Reply(), gate))  # the strategist waits
        env = live_env(tmp_path, fake.url)
        server = await asyncio.to_thread(Server, home, **env)
        try:
            token = await local_token_for(make_settings(sparklio_home=home))
            url = f"http://127.0.0.1:{server.port}"
            proc = command(tmp_path, {"GATEWAY_API_KEY": token}, "--gateway", url)
            try:
                await at_third_call(proc, fake)
            finally:
                code, output = await interrupt(proc)
            assert code == 130, output
            async with api(server.port, token) as http:
                listed = (await http.get("/api/v1/campaigns")).json()["campaigns"]
                [campaign] = listed
                assert campaign["status"] == "running"  # the command's Ctrl-C did not stop it
                campaign_id = campaign["id"]
                assert f"stopped following campaign {campaign_id}" in output
                assert (
                    "curl -X POST" in output and f"/api/v1/campaigns/{campaign_id}/cancel" in output
                )
                assert f"/api/v1/campaigns/{campaign_id}/events" in output
                gate.set()
                events = await events_of(http, campaign_id)
                assert events[-1]["event"] == "done"
        finally:
            gate.set()
            await asyncio.to_thread(server.stop)


@pytest.mark.timeout(180)
async def test_ctrl_c_in_process_stops_and_the_next_start_resumes_the_campaign(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    home = tmp_path / "home"
    async with MockOllama() as fake:
        fake.then(Reply(), Reply(), Held(Reply(), gate))
        env = live_env(tmp_path, fake.url)
        proc = command(tmp_path, env)
        try:
            await at_third_call(proc, fake)
        finally:
            code, output = await interrupt(proc)
        assert code == 130, output
        assert "resumes at its unfinished step" in output
        assert str(home) in output and "resume it:  sparklio serve" in output
        gate.set()  # the held call's client is gone

        server = await asyncio.to_thread(Server, home, **env)  # the next start, same home
        try:
            token = await local_token_for(make_settings(sparklio_home=home))
            async with api(server.port, token) as http:
                [campaign] = (await http.get("/api/v1/campaigns")).json()["campaigns"]
                assert f"stopped campaign {campaign['id']}" in output
                events = await events_of(http, campaign["id"])
                campaign = (await http.get(f"/api/v1/campaigns/{campaign['id']}")).json()
        finally:
            await asyncio.to_thread(server.stop)
    assert events[-1]["event"] == "done", events[-1]
    assert campaign["status"] == "succeeded"
    finished = [e["data"]["step"] for e in events if e["event"] == "step_finished"]
    assert finished.count("brief") == finished.count("brand") == 1
    bodies = [r.raw for r in fake.model_calls()]
    assert bodies.count(bodies[0]) == bodies.count(bodies[1]) == 1  # not asked again
