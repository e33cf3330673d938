"""The call options the gateway reads or hands to providers, checked before a provider sees them.

Options are open-ended (a provider may take extras), but the common ones have one meaning
everywhere; a wrong type there used to reach the gateway's arithmetic or a provider's SDK and
come back as a 500 or a 502. Here it is a 422 that names `options.<name>` and what it takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sparklio.exceptions import InvalidRequestError
from sparklio.services.jsonvalues import MAX_INT, MIN_INT

#: name -> (smallest, largest) for options that take any number
NUMBERS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "repeat_penalty": (0.0, 10.0),
}
#: name -> (smallest, largest) for options that take a whole number
INTEGERS: dict[str, tuple[int, int]] = {
    "max_tokens": (1, 1_000_000),
    "max_completion_tokens": (1, 1_000_000),
    "top_k": (0, 1_000_000),
    "seed": (MIN_INT, MAX_INT),
}

#: What the OpenAPI document says about the options above (the names, types and ranges).
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Seconds per attempt; at most LLM_DEADLINE (the whole call's limit).",
        },
        **{
            name: {"type": "number", "minimum": low, "maximum": high}
            for name, (low, high) in NUMBERS.items()
        },
        **{
            name: {"type": "integer", "minimum": low, "maximum": high}
            for name, (low, high) in INTEGERS.items()
        },
        "stop": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "Where the model stops: one string or several.",
        },
        "cache": {
            "type": "boolean",
            "default": True,
            "description": "false: neither answer from the response cache nor store in it. "
            "Calls with temperature 0 or a seed are cached by default (meta.cache says hit, "
            "miss or off); never sent to the model.",
        },
    },
}


def check_options(options: Mapping[str, Any], deadline: float) -> None:
    """InvalidRequestError (422) naming the first known option whose value is not usable;
    `deadline` (LLM_DEADLINE) bounds `timeout`."""
    for name, value in options.items():
        problem = _problem(name, value, deadline)
        if problem is not None:
            raise InvalidRequestError(
                f"options.{name} {problem} (got {_short(value)}).",
                details=[{"field": f"options.{name}", "problem": problem}],
            )


def _problem(name: str, value: Any, deadline: float) -> str | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if name == "timeout":
        if value is None:  # "no timeout of my own": the provider's applies
            return None
        if not is_number or not 0 < value <= deadline:
            return (
                f"must be a number of seconds above 0 and at most {deadline:g} "
                "(LLM_DEADLINE, the limit of the whole call)"
            )
    elif name in NUMBERS:
        low, high = NUMBERS[name]
        if not is_number or not math.isfinite(value) or not low <= value <= high:
            return f"must be a number from {low:g} to {high:g}"
    elif name in INTEGERS:
        low_int, high_int = INTEGERS[name]
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or not low_int <= value <= high_int:
            return f"must be a whole number from {low_int} to {high_int}"
    elif name == "cache":
        if not isinstance(value, bool):
            return "must be true or false"
    elif name == "stop":
        strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not isinstance(value, str) and not strings:
            return "must be a string or a list of strings"
    return None


def _short(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 256:
        return "a very large integer"  # repr() of one over 4,300 digits raises
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["INTEGERS", "NUMBERS", "OPTIONS_SCHEMA", "check_options"]
