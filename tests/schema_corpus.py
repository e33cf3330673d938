"""The real-world schema corpus (tests/data/schemas/) and the independent judge of answers,
shared by the mock's tests and bench/mock_schemas.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

CORPUS = Path(__file__).parent / "data" / "schemas"


def load_corpus() -> list[tuple[str, Any]]:
    """(id, schema) for every corpus entry, in a stable order."""
    index = json.loads((CORPUS / "index.json").read_text())["entries"]
    out: list[tuple[str, Any]] = []
    for file in sorted({e["file"] for e in index.values()}):
        out += [(e["id"], e["schema"]) for e in json.loads((CORPUS / file).read_text())]
    return out


def _no_remote(uri: str) -> Any:
    raise referencing.exceptions.NoSuchResource(ref=uri)


def valid(schema: Any, value: Any) -> bool:
    """Judged by python-jsonschema with format checks (independent of the jsonschema-rs the
    mock and the gateway check with); a remote $ref resolves to nothing."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    registry: Any = referencing.Registry(retrieve=_no_remote)  # type: ignore[call-arg]
    return bool(cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER).is_valid(value))
