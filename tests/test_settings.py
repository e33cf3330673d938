"""Settings: the work order's names and defaults, and .env.example listing every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparklio.core.config import Settings, load_settings
from sparklio.exceptions import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_work_order_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.generator_mode == "mock"
    assert settings.ollama_base_url == "http://localhost:11434"
    assert settings.ollama_timeout == 120
    assert settings.comfyui_base_url == "http://localhost:8188"
    assert settings.comfyui_timeout == 300


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("GENERATOR_MODE=live\nOLLAMA_TIMEOUT=30\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.generator_mode == "live"
    assert settings.ollama_timeout == 30


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENERATOR_MODE", "moc")
    with pytest.raises(ConfigError, match=r"GENERATOR_MODE.*'mock' or 'live'.*'moc'"):
        load_settings()


def test_env_example_lists_every_setting_with_a_comment() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    for name in Settings.model_fields:
        env = name.upper()
        index = next((i for i, line in enumerate(lines) if line.lstrip("# ").startswith(env)), None)
        assert index is not None, f"{env} is missing from .env.example"
        assert lines[index - 1].startswith("# "), f"{env} has no comment line above it"
