"""The `sparklio` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sparklio.cli import app

runner = CliRunner()


def test_routes_shows_the_table() -> None:
    result = runner.invoke(app, ["routes"])
    assert result.exit_code == 0, result.output
    assert "mock mode" in result.output
    assert "mock/mock-v1" in result.output


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
    key = next(w for w in first.stdout.split() if w.startswith("sk-spk-"))
    again = runner.invoke(app, ["create-test-users"])
    assert again.exit_code == 0
    assert "already exist" in again.output and "sk-spk-" not in again.output
    saved = json.loads((tmp_path / "home" / "test-users.json").read_text())
    assert key in {u["api_key"] for u in saved}
    assert (tmp_path / "home" / "test-users.json").stat().st_mode & 0o777 == 0o600


def test_db_upgrade_reports_the_revision() -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at revision 0001" in result.stdout
