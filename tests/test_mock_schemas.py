"""The mock answers any schema boundedly: real-world corpus, cycles, huge minimums, the loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from sparklio.exceptions import InvalidRequestError
from sparklio.services.llm.mock import FULL_NODES, INLINE_NODES, OverBudget, SchemaTools
from sparklio.services.llm.mockdata import MockData
from sparklio.services.llm.providers.mock import build
from tests.schema_corpus import load_corpus, valid
from tests.test_mock_api import PAYLOAD, SELF_REF_IN_ANYOF

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "data" / "schemas"


def answer(schema: dict[str, Any], payload: Any = PAYLOAD) -> Any:
    return build(payload, 7, SchemaTools(schema), FULL_NODES)


CORPUS_ENTRIES = load_corpus()
# satisfiable, but the mock's answer is not valid yet ($dynamicRef is resolved statically)
KNOWN_GAPS = {"test-suite/draft2020-12/dynamicRef/12"}


@pytest.mark.timeout(120)
def test_the_real_world_corpus_is_answered_schema_valid() -> None:
    """Every corpus schema gets a valid answer (or a clean 422), never a hang or a crash."""
    failed: list[str] = []
    refused: list[str] = []
    for entry_id, schema in CORPUS_ENTRIES:
        try:
            value = answer(schema)
        except InvalidRequestError:
            refused.append(entry_id)
            continue
        if not valid(schema, value) and entry_id not in KNOWN_GAPS:
            failed.append(entry_id)
    assert len(CORPUS_ENTRIES) > 1000
    assert failed == [] and refused == []


def test_a_self_reference_inside_anyof_ends_with_a_valid_value() -> None:
    value = answer(SELF_REF_IN_ANYOF)
    assert valid(SELF_REF_IN_ANYOF, value)
    assert "name" in value["tree"]


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        (
            {
                "type": "object",
                "properties": {"tags": {"type": "array", "minItems": 10**9}},
                "required": ["tags"],
            },
            "minItems",
        ),
        (
            {
                "type": "object",
                "properties": {"bio": {"type": "string", "minLength": 10**9}},
                "required": ["bio"],
            },
            "minLength",
        ),
    ],
)
def test_a_minimum_of_a_billion_is_a_422_naming_the_keyword(
    schema: dict[str, Any], keyword: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        answer(schema)
    assert keyword in caught.value.message
    assert "/properties/" in caught.value.message


def test_forty_thousand_items_are_cheap_enough_for_the_event_loop() -> None:
    """Repeated items cost no walk steps: the whole array fits the inline budget."""
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "minItems": 40000, "items": {"type": "string"}}},
        "required": ["tags"],
    }
    value = MockData(PAYLOAD, 7).from_schema(schema, INLINE_NODES)
    assert len(value["tags"]) == 40000


def test_forty_thousand_items_are_built_valid() -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "minItems": 40000,
              "items": {"type": "string"}}}, "required": ["tags"]}  # fmt: skip
    value = answer(schema)
    assert len(value["tags"]) == 40000
    assert valid(schema, value)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"x": False}, "required": ["x"]},
        {"type": "object", "properties": {"x": {"not": {}}}, "required": ["x"]},
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}},
            "required": ["n"],
        },
        {
            "type": "object",
            "properties": {"s": {"type": "string", "minLength": 5, "maxLength": 2}},
            "required": ["s"],
        },
        {"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]},
    ],
)
def test_an_unsatisfiable_schema_is_a_422(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        answer(schema)


def test_a_big_walk_stops_at_the_inline_budget() -> None:
    """Past its inline budget the walk signals, so the provider can move it off the loop."""
    schema = {"type": "object", "properties": {f"p{i}": {"type": "array", "minItems": 3,
              "uniqueItems": True, "items": {"type": "object", "properties": {
                  "a": {"type": "string"}, "b": {"type": "integer"}}}} for i in range(200)},
              "required": [f"p{i}" for i in range(200)]}  # fmt: skip
    with pytest.raises(OverBudget):
        MockData(PAYLOAD, 7).from_schema(schema, INLINE_NODES)
    assert valid(schema, answer(schema))


@pytest.mark.parametrize(
    "schema",
    [
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": {
                "n": {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMinimum": True,
                    "maximum": 1,
                    "multipleOf": 0.01,
                }
            },
            "required": ["n"],
        },
        {
            "type": "object",
            "properties": {
                "p": {
                    "type": "array",
                    "prefixItems": [{"type": "integer"}, {"const": "x"}],
                    "items": False,
                    "minItems": 2,
                }
            },
            "required": ["p"],
        },
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "t": {"type": "array", "items": [{"type": "boolean"}], "additionalItems": False}
            },
            "required": ["t"],
        },
        {
            "type": "object",
            "patternProperties": {"^x-[a-z]+$": {"type": "integer"}},
            "additionalProperties": False,
            "minProperties": 2,
        },
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "dependentRequired": {"a": ["b"]},
            "required": ["a"],
        },
        {
            "type": "object",
            "properties": {"kind": {"enum": ["x", "y"]}},
            "required": ["kind"],
            "if": {"properties": {"kind": {"const": "x"}}},
            "then": {"required": ["xval"]},
            "else": {"required": ["yval"]},
        },
        {
            "type": "object",
            "properties": {
                "c": {
                    "type": "array",
                    "contains": {"const": 5},
                    "minContains": 2,
                    "uniqueItems": False,
                }
            },
            "required": ["c"],
        },
        {
            "type": "object",
            "properties": {"v": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]}},
            "required": ["v"],
        },
        {
            "type": "object",
            "properties": {"w": {"type": "string", "pattern": "^[가-힣]+$"}},
            "required": ["w"],
        },
        {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}, "minProperties": 3},
        {
            "type": "object",
            "properties": {
                f: {"type": "string", "format": f}
                for f in (
                    "date",
                    "date-time",
                    "time",
                    "email",
                    "idn-email",
                    "hostname",
                    "ipv4",
                    "ipv6",
                    "uri",
                    "uri-reference",
                    "iri",
                    "uuid",
                    "regex",
                    "json-pointer",
                    "duration",
                )
            },
            "required": ["date", "email", "uuid", "duration"],
        },
    ],
)
def test_schema_keywords_are_honoured(schema: dict[str, Any]) -> None:
    assert valid(schema, answer(schema))


def test_a_pattern_python_cannot_read_does_not_crash() -> None:
    """rstr cannot build \\p{L}; the answer still matches it as jsonschema-rs reads it."""
    schema = {"type": "object", "properties": {"w": {"type": "string", "pattern": "^\\p{L}+$"}},
              "required": ["w"]}  # fmt: skip
    value = answer(schema)
    assert jsonschema_rs.validator_for(schema).is_valid(value), value


def test_same_request_same_answer_and_korean_words() -> None:
    korean = {"product": "다원 녹차", "brief": "바쁜 직장인을 위한 녹차"}
    schema = {"type": "object", "properties": {"headline": {"type": "string"}},
              "required": ["headline"]}  # fmt: skip
    assert answer(schema, korean) == answer(schema, korean)
    assert any("\uac00" <= ch <= "\ud7a3" for ch in answer(schema, korean)["headline"])


def test_a_pattern_answer_is_the_same_in_every_process() -> None:
    """Two gateway processes (or one restarted) give the same answer: the strings built for
    a negated class or \\W do not follow the process's hash seed."""
    schema = {"type": "object", "required": ["a", "b", "c"], "properties": {
        "a": {"type": "string", "pattern": "^[^,\\t\\n]{6}$"},
        "b": {"type": "string", "pattern": "^\\W{6}$"},
        "c": {"type": "array", "minItems": 3, "items": {"type": "string", "pattern": "^[^a-z]+$"}},
    }}  # fmt: skip
    code = (
        "import json, sys\n"
        "from sparklio.services.llm.mock import FULL_NODES, SchemaTools\n"
        "from sparklio.services.llm.providers.mock import build\n"
        f"schema = json.loads({json.dumps(json.dumps(schema))})\n"
        f"print(json.dumps(build({PAYLOAD!r}, 7, SchemaTools(schema), FULL_NODES)))\n"
    )
    answers = []
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        answers.append(json.loads(done.stdout))
    assert answers[0] == answers[1] == answers[2]
    assert valid(schema, answers[0])
