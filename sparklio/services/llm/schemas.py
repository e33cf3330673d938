"""JSON Schema checks: each distinct schema is checked and compiled once, then reused."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from sparklio.exceptions import InvalidRequestError


def _path(parts: Any) -> str:
    return "/".join(str(p) for p in parts) or "(root)"


class SchemaCache:
    """Compiled validators for output schemas, keyed by the schema's canonical JSON."""

    def __init__(self, maxsize: int = 512) -> None:
        self._compile = lru_cache(maxsize=maxsize)(self._build)

    def validator(self, schema: dict[str, Any]) -> Validator:
        """A validator for `schema`; InvalidRequestError (422) if it is not a usable schema."""
        if not isinstance(schema, dict):
            raise InvalidRequestError("output_schema must be a JSON Schema object.")
        return self._compile(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))

    @staticmethod
    def _build(key: bytes) -> Validator:
        schema = orjson.loads(key)
        cls = validators.validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            raise InvalidRequestError(
                f"output_schema is not a valid JSON Schema: {exc.message} "
                f"(at {_path(exc.absolute_path)}).",
                details={"schema_path": _path(exc.absolute_path)},
            ) from None
        kind = schema.get("type")
        if kind is not None and kind != "object" and "object" not in kind:
            raise InvalidRequestError(
                f"output_schema must describe a JSON object (type: object), not {kind!r}: "
                "wrap the value in an object property."
            )
        return cls(schema, format_checker=cls.FORMAT_CHECKER)

    @staticmethod
    def errors(validator: Validator, instance: Any, limit: int = 20) -> list[str]:
        """Human-readable validation errors of `instance`, empty when it is valid."""
        try:
            found = sorted(validator.iter_errors(instance), key=lambda e: _path(e.absolute_path))
        except Unresolvable as exc:
            raise InvalidRequestError(
                f"output_schema has a $ref that cannot be resolved: {exc}. Define it under $defs."
            ) from None
        return [f"{_path(e.absolute_path)}: {e.message}" for e in found[:limit]]
