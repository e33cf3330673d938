"""The `sparklio` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from typer.testing import CliRunner

from sparklio.cli import app, studio_line
from sparklio.core.config import load_settings
from tests.fakes import refused_url
from tests.gateway_process import ROOT, Server

runner = CliRunner()


def test_routes_shows_the_table() -> None:
    result = runner.invoke(app, ["routes"])
    assert result.exit_code == 0, result.output
    assert "mock mode" in result.output
    assert "mock/mock-v1" in result.output


def test_routes_shows_the_endpoints_with_health_and_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        f"""version: 1
providers:
  ollama-mini: {{kind: ollama, base_url: "{refused_url()}", max_concurrency: 1}}
modes:
  live:
    default:
      - {{model: "qwen2.5:7b", endpoints: [ollama-mini]}}
      - {{provider: mock, model: mock-v1}}
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("LLM_ROUTING_FILE", str(path))
    monkeypatch.setenv("GENERATOR_MODE", "live")
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps a narrow table
    result = runner.invoke(app, ["routes"])
    assert result.exit_code == 0, result.output
    assert "ollama-mini/qwen2.5:7b" in result.output and "mock/mock-v1" in result.output
    [mini] = [line for line in result.output.splitlines() if "│ ollama-mini " in line]
    assert "ollama" in mini and "down" in mini and "connection refused" in mini
    assert "closed, 0/1 busy, 0 waiting" in mini
    [mock] = [line for line in result.output.splitlines() if "│ mock " in line]
    assert "in-process" in mock and "ok" in mock


def test_generate_prints_the_response(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"headline": {"type": "string", "maxLength": 30}},
                "required": ["headline"],
            }
        )
    )
    result = runner.invoke(
        app,
        [
            "generate",
            "--role",
            "copywriter",
            "--task",
            "channel_copy",
            "--payload",
            '{"product": "Dawon green tea"}',
            "--schema",
            str(schema),
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["provider"] == "mock"
    assert len(body["output"]["headline"]) <= 30


def test_generate_text_mode() -> None:
    result = runner.invoke(
        app,
        [
            "generate",
            "--role",
            "brief",
            "--task",
            "analyze",
            "--payload",
            '{"product": "Dawon"}',
            "--mode",
            "text",
        ],
    )
    assert result.exit_code == 0
    assert "Dawon" in json.loads(result.stdout)["output"]["text"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--payload", "{nope"], 2, "--payload is not valid JSON"),
        (["--task", "sonnet"], 1, "route_not_found (404)"),
        (["--mode", "yaml"], 2, "--mode must be json or text"),
    ],
)
def test_generate_errors_are_one_clear_line(args: list[str], code: int, words: str) -> None:
    base = {"--role": "copywriter", "--task": "channel_copy", "--payload": "{}"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = runner.invoke(app, ["generate", *[x for kv in base.items() for x in kv]])
    assert result.exit_code == code
    assert words in result.output
    assert "Traceback" not in result.output


def test_bad_routing_file_exits_2_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodes:\n  mock:\n    default: [{provider: mokc, model: m}]\n")
    monkeypatch.setenv("LLM_ROUTING_FILE", str(bad))
    result = runner.invoke(app, ["routes"])
    assert result.exit_code == 2
    assert "unknown provider 'mokc'" in result.output


def test_config_shows_effective_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENERATOR_MODE", "live")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    one = runner.invoke(app, ["config", "generator_mode"])
    assert one.exit_code == 0 and one.stdout.strip() == "live"
    everything = runner.invoke(app, ["config"])
    assert "OPENAI_API_KEY" in everything.stdout
    assert "sk-very-secret" not in everything.stdout
    unknown = runner.invoke(app, ["config", "generater_mode"])
    assert unknown.exit_code == 2 and "generator_mode" in unknown.output


def test_create_test_users_is_idempotent_and_keeps_the_credentials(tmp_path: Path) -> None:
    first = runner.invoke(app, ["create-test-users"])
    assert first.exit_code == 0, first.output
    assert "admin@sparklio.local" in first.stdout and "member@sparklio.local" in first.stdout
    path = tmp_path / "home" / "test-users.json"
    saved = json.loads(path.read_text())
    again = runner.invoke(app, ["create-test-users"])
    assert again.exit_code == 0
    assert "already exist" in again.output and "sk-spk-" not in again.output
    assert json.loads(path.read_text()) == saved
    assert {u["role"] for u in saved} == {"admin", "member"}
    assert all(u["api_key"].startswith("sk-spk-") and u["password"] for u in saved)


def test_create_test_users_prints_no_password_or_key_when_not_on_a_terminal(
    tmp_path: Path,
) -> None:
    result = runner.invoke(app, ["create-test-users"])  # CliRunner's output is not a terminal
    assert result.exit_code == 0, result.output
    path = tmp_path / "home" / "test-users.json"
    for user in json.loads(path.read_text()):
        assert user["password"] not in result.output
        assert user["api_key"] not in result.output
        assert user["api_key"][:14] in result.output  # the prefix key listings show too
    assert str(path) in result.output


@pytest.mark.timeout(120)
def test_create_test_users_shows_them_once_on_a_terminal(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    with os.fdopen(primary, "rb") as terminal:
        done = subprocess.run(
            [sys.executable, "-m", "sparklio.cli", "create-test-users"],
            cwd=ROOT, stdout=secondary, stderr=subprocess.PIPE, timeout=120, check=False,
        )  # fmt: skip
        os.close(secondary)
        output = _read_all(terminal)
    assert done.returncode == 0, done.stderr
    for user in json.loads((tmp_path / "home" / "test-users.json").read_text()):
        assert user["password"] in output and user["api_key"] in output


def test_on_a_terminal_the_studio_line_shows_the_test_users_passwords(tmp_path: Path) -> None:
    assert runner.invoke(app, ["create-test-users"]).exit_code == 0
    users = json.loads((tmp_path / "home" / "test-users.json").read_text())
    settings = load_settings()
    line = studio_line("0.0.0.0", 8080, settings, on_terminal=True)
    logins = ", ".join(f"{u['email']} / {u['password']}" for u in users)
    assert line == f"Studio: http://0.0.0.0:8080/studio  log in as {logins}"
    # before `create-test-users`, only the address
    (tmp_path / "home" / "test-users.json").unlink()
    assert studio_line("h", 1, settings, on_terminal=True) == "Studio: http://h:1/studio"


def _read_all(terminal: IO[bytes]) -> str:
    data = b""
    with contextlib.suppress(OSError):  # EIO once the child's side is closed
        while chunk := terminal.read1(65536):
            data += chunk
    return data.decode()


def test_the_test_users_file_is_made_private_not_chmod_ed_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed: list[object] = []
    # a chmod that does nothing: what the file's mode is, it had from its creation
    monkeypatch.setattr(os, "chmod", lambda path, *args, **kwargs: changed.append(path))
    result = runner.invoke(app, ["create-test-users"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "home" / "test-users.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert changed == []


@pytest.mark.timeout(180)
def test_serve_startup_line_in_a_log_shows_where_the_key_is_not_the_key(
    tmp_path: Path,
) -> None:
    assert runner.invoke(app, ["create-test-users"]).exit_code == 0
    path = tmp_path / "home" / "test-users.json"
    key = next(u["api_key"] for u in json.loads(path.read_text()) if u["role"] == "member")
    server = Server(tmp_path / "home")  # its output goes to a file: the server's log
    try:
        log = server.output()
    finally:
        server.stop()
    assert "curl -s http://127.0.0.1:" in log
    assert key not in log
    assert f"Bearer {key[:14]}...(whole key in {path})" in log
    # the studio's address beside it, and who logs in there; their passwords stay in the file
    studio = f"Studio: http://127.0.0.1:{server.port}/studio  log in as "
    assert f"{studio}admin@sparklio.local, member@sparklio.local (passwords in {path})" in log
    for test_user in json.loads(path.read_text()):
        assert test_user["password"] not in log


@pytest.mark.parametrize(
    ("name", "value"),
    [("SERVER_HEADER_TIMEOUT", "90"), ("SERVER_MAX_HEADER_BYTES", "1024")],
)
def test_server_limits_out_of_range_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)  # granian takes at most 60 s, and 8 KiB at least
    result = runner.invoke(app, ["config", name.lower()])
    assert result.exit_code == 2
    assert name in result.output and "Traceback" not in result.output


def test_db_upgrade_reports_the_revision() -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at revision 0005" in result.stdout


BRIEF_KO = ROOT / "examples" / "brief_ko.yaml"


def _report_files(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text(encoding="utf-8")
            for name in ("campaign.json", "campaign.md", "campaign.html")}  # fmt: skip


def test_campaign_in_process_runs_through_the_api_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["campaign", "--brief", str(BRIEF_KO), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # progress: each step named as it starts and as it finishes, in the pipeline's order
    for step in ("brief", "brand", "strategist", "concepts", "review", "images"):
        assert f"→ {step}" in lines and f"✓ {step}" in lines, result.output
    assert lines.index("✓ brief") < lines.index("→ brand") < lines.index("→ strategist")
    assert any(line.startswith("✓ copywriter:") for line in lines)
    files = _report_files(out)
    data = json.loads(files["campaign.json"])
    assert data["brief"]["language"] == "ko" and data["images"]
    # the same files as before the API: the page carries its images inline, and on disk
    assert files["campaign.html"].count("data:image/png;base64,") == len(data["images"])
    assert len(list((out / "images").glob("*.png"))) == len(data["images"])
    assert data["brief"]["product"] in files["campaign.md"]
    assert "report: " in result.output and "campaign.html" in result.output
    # the campaign is the API's: the in-process gateway kept it in this run's database
    assert (tmp_path / "home" / "workflows.sqlite").is_file()


def test_a_failed_campaign_names_the_step_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "routing.yaml"
    routes.write_text(
        f"""version: 1
providers:
  down: {{kind: ollama, base_url: "{refused_url()}"}}
modes:
  live:
    default:
      - {{model: "qwen2.5:7b", endpoints: [down]}}
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("LLM_ROUTING_FILE", str(routes))
    monkeypatch.setenv("GENERATOR_MODE", "live")
    out = tmp_path / "out"
    result = runner.invoke(app, ["campaign", "--brief", str(BRIEF_KO), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "the campaign stopped at step brief:" in result.output
    assert "✗ brief" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_a_brief_file_names_its_channels_and_variants(tmp_path: Path) -> None:
    brief = tmp_path / "brief.yaml"
    brief.write_text(
        "brief: 다온 녹차 봄 신제품 출시, 검색 광고로 첫 구매를 늘리고 싶다.\n"
        "channels: [naver_search]\n"
        "variants: {naver_search: {headlines: 4, descriptions: 2}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["campaign", "--brief", str(brief), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(_report_files(out)["campaign.json"])
    [copy] = data["copies"]
    assert copy["channel"] == "naver_search"
    assert len(copy["variants"]["headlines"]) == 4
    assert len(copy["variants"]["descriptions"]) == 2

    brief.write_text("brief: a launch\nvariants: {naver_search: {headlines: 99}}\n")
    result = runner.invoke(app, ["campaign", "--brief", str(brief), "--out", str(out)])
    assert result.exit_code == 2 and "variants" in result.output, result.output


def test_a_brief_the_api_refuses_exits_2_naming_the_field(tmp_path: Path) -> None:
    brief = tmp_path / "brief.yaml"
    brief.write_text("brief: 'x'\nwords_to_avoid: ['   ']\n", encoding="utf-8")
    result = runner.invoke(app, ["campaign", "--brief", str(brief), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "--brief" in result.output and "words_to_avoid" in result.output


@pytest.mark.timeout(180)
def test_campaign_against_a_running_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "server-home"
    home.mkdir()
    env = {**os.environ, "SPARKLIO_HOME": str(home)}
    made = subprocess.run(
        [sys.executable, "-m", "sparklio.cli", "create-test-users"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    users = {u["role"]: u["api_key"] for u in json.loads((home / "test-users.json").read_text())}
    server = Server(home)
    try:
        monkeypatch.setenv("GATEWAY_API_KEY", users["member"])
        out = tmp_path / "out"
        url = f"http://127.0.0.1:{server.port}"
        result = runner.invoke(
            app, ["campaign", "--brief", str(BRIEF_KO), "--out", str(out), "--gateway", url]
        )
        assert result.exit_code == 0, result.output + server.output()
        assert "→ strategist" in result.output and "✓ review" in result.output
        data = json.loads(_report_files(out)["campaign.json"])
        assert data["images"] and len(list((out / "images").glob("*.png"))) == len(data["images"])
        # it ran on the server, as the member: their campaign list has it
        listed = httpx.get(f"{url}/api/v1/campaigns",
                           headers={"Authorization": f"Bearer {users['member']}"})  # fmt: skip
        assert [c["status"] for c in listed.json()["campaigns"]] == ["succeeded"]
        # this process ran no campaign engine of its own
        assert not (tmp_path / "home" / "workflows.sqlite").exists()
    finally:
        server.stop()


async def test_the_in_process_transport_streams_each_chunk_as_the_app_sends_it() -> None:
    """A campaign's progress shows live in-process: the first event is read while the app
    still holds the rest (it waits until the client has it), and closing early disconnects."""
    from sparklio.services.clients.asgi import StreamingASGITransport

    first_read = asyncio.Event()
    heard: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one\n", "more_body": True})
        await first_read.wait()  # buffered transports would never get here: a deadlock
        await send({"type": "http.response.body", "body": b"two\n", "more_body": True})
        heard.append((await receive())["type"])

    transport = StreamingASGITransport(app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        client.stream("GET", "/") as response,
    ):
        lines = response.aiter_lines()
        assert await anext(lines) == "one"
        first_read.set()
        assert await anext(lines) == "two"
    assert heard == ["http.disconnect"]
