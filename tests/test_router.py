"""The routing file and the Router: precedence, and clear errors on bad files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sparklio.exceptions import ConfigError, RouteNotFoundError
from sparklio.services.gateway.routing import (
    RoutingFile,
    load_routing_file,
    shipped_routing_file,
)
from sparklio.services.llm.providers.registry import ProviderRegistry
from sparklio.services.llm.router import LLMRouter
from sparklio.services.media.providers.registry import MediaRegistry

KNOWN = ["mock", "ollama", "openai"]


def routed(routing: RoutingFile, mode: str) -> LLMRouter:
    return LLMRouter(routing, mode)  # type: ignore[arg-type]


PRECEDENCE = """
version: 1
modes:
  live:
    default:
      - {provider: ollama, model: default-model}
    rules:
      - role: "*"
        task: "*"
        candidates: [{provider: ollama, model: any-any}]
      - role: "*"
        task: review
        candidates: [{provider: ollama, model: any-review}]
      - role: copywriter
        task: "*"
        candidates:
          - {provider: ollama, model: copy-any, options: {temperature: 0.8}}
          - {provider: openai, model: copy-fallback}
      - role: copywriter
        task: review
        candidates: [{provider: openai, model: copy-review}]
  mock:
    default:
      - {provider: mock, model: mock-v1}
"""


def test_precedence_exact_then_role_then_task_then_wildcards(
    write_routing: Callable[[str], Path],
) -> None:
    router = routed(load_routing_file(write_routing(PRECEDENCE), KNOWN), "live")
    assert router.route("copywriter", "review").candidates[0].model == "copy-review"
    route = router.route("copywriter", "channel_copy")
    assert route.rule == "copywriter/*"
    assert [c.model for c in route.candidates] == ["copy-any", "copy-fallback"]
    assert route.candidates[0].options == {"temperature": 0.8}
    assert router.route("reviewer", "review").rule == "*/review"
    assert router.route("brief", "analyze").rule == "*/*"


def test_default_when_no_rule_matches(write_routing: Callable[[str], Path]) -> None:
    router = routed(load_routing_file(write_routing(PRECEDENCE), KNOWN), "mock")
    route = router.route("brief", "analyze")
    assert route.rule == "default"
    assert route.candidates[0].provider == "mock"


def test_no_rule_and_no_default_names_role_task_and_known_routes(
    write_routing: Callable[[str], Path],
) -> None:
    path = write_routing("""
        version: 1
        modes:
          mock:
            rules:
              - {role: brief, task: analyze, candidates: [{provider: mock, model: m}]}
        """)
    router = routed(load_routing_file(path, KNOWN), "mock")
    with pytest.raises(RouteNotFoundError) as info:
        router.route("copywriter", "channel_copy")
    assert "copywriter/channel_copy" in info.value.message
    assert "brief/analyze" in info.value.message


def test_task_catalogue_rejects_unknown_tasks() -> None:
    shipped = load_routing_file(
        shipped_routing_file(),
        ProviderRegistry().names(),
        MediaRegistry().names(),
    )
    router = routed(shipped, "mock")
    assert router.route("copywriter", "channel_copy").rule == "default"
    with pytest.raises(RouteNotFoundError) as info:
        router.route("copywriter", "sonnet")
    assert "copywriter/sonnet" in info.value.message
    assert "copywriter/channel_copy" in info.value.message


def test_table_lists_most_specific_first(write_routing: Callable[[str], Path]) -> None:
    router = routed(load_routing_file(write_routing(PRECEDENCE), KNOWN), "live")
    assert [row["rule"] for row in router.table()] == [
        "copywriter/review",
        "copywriter/*",
        "*/review",
        "*/*",
        "default",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nmodes:\n  mock:\n    default:\n"
            "      - {provider: mock, model: m, temprature: 1}\n",
            ["line 5", "modes.mock.default.0.temprature", "unknown key"],
        ),
        (
            "version: 1\nmodes:\n  mock:\n    default:\n      - {provider: mokc, model: m}\n",
            ["line 5", "unknown provider 'mokc'", "mock, ollama, openai"],
        ),
        (
            "version: 1\nmodes:\n  mock:\n    default: []\n",
            ["line 4", "modes.mock.default", "at least 1"],
        ),
        (
            "version: 1\nmodes:\n  mock:\n    rules:\n"
            "      - {role: brief, task: x, candidates: []}\n",
            ["modes.mock.rules.0.candidates", "at least 1"],
        ),
        ("version: 2\nmodes: {}\n", ["line 1", "version", "Input should be 1"]),
        (
            "version: 1\nmodes:\n  staging:\n    default: [{provider: mock, model: m}]\n",
            ["modes.staging", "'mock' or 'live'"],
        ),
        ("version: 1\n", ["modes", "required key is missing"]),
        (
            "version: 1\nmodes:\n  mock:\n    default: [{provider: mock}]\n",
            ["modes.mock.default.0.model", "required key is missing"],
        ),
        ("version: 1\nmodes: [\n", ["not valid YAML", "line"]),
        (
            "version: 1\nmodes:\n  mock:\n    rules:\n"
            "      - {role: Copy Writer, task: '*', candidates: [{provider: mock, model: m}]}\n",
            ["modes.mock.rules.0.role", "lowercase name"],
        ),
        (
            "version: 1\nmodes:\n  mock:\n    rules:\n"
            "      - {role: brief, task: a, candidates: [{provider: mock, model: m}]}\n"
            "      - {role: brief, task: a, candidates: [{provider: mock, model: n}]}\n",
            ["line 6", "brief/a appears twice"],
        ),
        (
            "version: 1\ntasks: {brief: [analyze]}\nmodes:\n  mock:\n    rules:\n"
            "      - {role: brief, task: summarise, candidates: [{provider: mock, model: m}]}\n",
            ["line 6", "task 'summarise' is not listed"],
        ),
    ],
)
def test_bad_files_fail_naming_file_line_key_and_expectation(
    write_routing: Callable[[str], Path], text: str, expected: list[str]
) -> None:
    path = write_routing(text)
    with pytest.raises(ConfigError) as info:
        load_routing_file(path, KNOWN)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LLM_ROUTING_FILE"):
        load_routing_file(tmp_path / "nope.yaml", KNOWN)


def test_mode_without_a_section_is_a_config_error(write_routing: Callable[[str], Path]) -> None:
    path = write_routing("version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n")
    with pytest.raises(ConfigError, match="GENERATOR_MODE='live'"):
        routed(load_routing_file(path, KNOWN), "live")


def test_an_alias_must_name_a_task_the_file_serves(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "version: 1\ntasks: {copywriter: [channel_copy]}\n"
        "aliases: {copy: copywriter/channel_copy, typo: copywriter/chanel_copy}\n"
        "modes:\n  mock:\n    default: [{provider: mock, model: m}]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_routing_file(path, ProviderRegistry().names(), MediaRegistry().names())
    message = str(caught.value)
    assert "line 3, key aliases.typo: alias 'typo' must name a role/task" in message
    assert "'copy'" not in message
