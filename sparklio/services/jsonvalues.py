"""Caller-supplied JSON that parses but that the gateway could not pass on.

JSON has no limit on numbers and pydantic reads any integer, but orjson (and most JSON tools a
payload reaches: databases, JavaScript, model servers) stop at 64 bits, and a float like 1e999
reads as infinity, which JSON cannot write back. `check_json_value` finds the first such value
and names its path, so the caller gets a 422 saying what to change instead of a 500.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from sparklio.exceptions import InvalidRequestError

#: The integers orjson writes: signed 64-bit below zero, unsigned 64-bit above.
MIN_INT, MAX_INT = -(2**63), 2**64 - 1


def check_json_value(value: Any, field: str) -> None:
    """InvalidRequestError (422) naming `field`'s path to the first integer outside 64 bits
    or non-finite number in `value`; nothing when every value can be written back as JSON."""
    try:
        orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: the slow walk below says where and why
        pass
    else:
        if not _has_float(value):
            return
    problem = _first_problem(value, field)
    if problem is not None:
        where, message = problem
        details = [{"field": where, "problem": message}]
        raise InvalidRequestError(f"{where}: {message}", details=details)


def _has_float(value: Any) -> bool:
    # orjson writes inf and nan as null without complaint: look for them only when a float is
    # there at all, which is cheap to rule out for the usual payload of strings and ints
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _first_problem(value: Any, field: str) -> tuple[str, str] | None:
    """(path, what is wrong) of the first unwritable value, depth first, in document order."""
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                return path, (
                    f"{_describe(item)} is outside the 64-bit range JSON tools accept "
                    f"({MIN_INT} to {MAX_INT}); send it as a string"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path, (
                    f"number {item} is outside the range of a 64-bit float; send it as a string"
                )
        elif isinstance(item, dict):
            stack.extend((f"{path}.{key}", sub) for key, sub in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
        elif not isinstance(item, str) and item is not None:
            return path, f"a {type(item).__name__} is not a JSON value"
    return None


def _describe(number: int) -> str:
    # str() of an integer over 4,300 digits raises (CPython's guard against slow conversions)
    digits = math.floor(number.bit_length() * math.log10(2)) + 1
    if digits <= 40:
        return f"integer {number}"
    return f"{'negative ' if number < 0 else ''}integer of about {digits} digits"


__all__ = ["MAX_INT", "MIN_INT", "check_json_value"]
