"""Prompt building: templates per role/task, a generic fallback, and PROMPTS_DIR overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparklio.exceptions import ConfigError, InvalidRequestError
from sparklio.main import create_app
from sparklio.services.llm.prompt_builder import PromptBuilder
from tests.conftest import make_settings, serving

SCHEMA = {"type": "object", "properties": {"headline": {"type": "string"}}}


def test_generic_prompt_has_role_task_payload_and_json_instruction() -> None:
    prompt = PromptBuilder().render(
        "copywriter", "taglines", {"product": "Dawon green tea"}, "json", SCHEMA
    )
    assert prompt.template == "generic.j2"
    assert "senior copywriter" in prompt.text  # the role's own instruction
    assert "Task: taglines." in prompt.text
    assert '"product": "Dawon green tea"' in prompt.text
    assert "one JSON object only" in prompt.text
    assert '"headline"' in prompt.text  # the schema is shown
    assert len(prompt.hash) == 16


def test_text_mode_has_no_json_instruction_and_unknown_role_gets_generic_role() -> None:
    prompt = PromptBuilder().render("intern", "sort_mail", {"n": 1}, "text", None)
    assert "JSON object" not in prompt.text
    assert "intern agent of Sparklio" in prompt.text


def test_same_input_same_hash_different_payload_different_hash() -> None:
    builder = PromptBuilder()
    a = builder.render("brief", "analyze", {"x": 1}, "json", None)
    b = builder.render("brief", "analyze", {"x": 1}, "json", None)
    c = builder.render("brief", "analyze", {"x": 2}, "json", None)
    assert a.hash == b.hash != c.hash


def test_prompts_dir_overrides_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "copywriter").mkdir()
    (tmp_path / "copywriter" / "channel_copy.j2").write_text(
        '{% extends "base.j2" %}{% block task %}Write copy for {{ payload.product }}.{% endblock %}'
    )
    builder = PromptBuilder(tmp_path)
    prompt = builder.render("copywriter", "channel_copy", {"product": "Dawon"}, "json", None)
    assert prompt.template == "copywriter/channel_copy.j2"
    assert "Write copy for Dawon." in prompt.text
    assert "senior copywriter" in prompt.text  # the shipped role file still applies
    assert builder.render("brief", "analyze", {}, "json", None).template == "brief/analyze.j2"
    assert builder.render("brief", "summarise", {}, "json", None).template == "generic.j2"
    with pytest.raises(InvalidRequestError, match="product"):
        builder.render("copywriter", "channel_copy", {}, "json", None)


def test_prompts_dir_that_is_not_a_folder_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PROMPTS_DIR"):
        create_app(make_settings(prompts_dir=tmp_path / "missing"))


async def test_template_name_reaches_meta(tmp_path: Path) -> None:
    (tmp_path / "brief").mkdir()
    (tmp_path / "brief" / "analyze.j2").write_text('{% extends "base.j2" %}')
    app = create_app(make_settings(prompts_dir=tmp_path))
    async with serving(app) as http:
        response = await http.post(
            "/api/v1/llm/generate",
            json={"role": "brief", "task": "analyze", "payload": {"brief": "tea"}},
        )
    assert response.json()["meta"]["template"] == "brief/analyze.j2"
