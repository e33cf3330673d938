"""Caller-supplied JSON that parses but that the gateway could not pass on.

JSON has no limit on numbers and pydantic reads any integer, but orjson (and most JSON tools a
payload reaches: databases, JavaScript, model servers) stop at 64 bits, and a float like 1e999
reads as infinity, which JSON cannot write back. `check_json_value` finds the first such value
and names its path, so the caller gets a 422 saying what to change instead of a 500.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from sparklio.exceptions import InvalidRequestError

#: The integers orjson writes: signed 64-bit below zero, unsigned 64-bit above.
MIN_INT, MAX_INT = -(2**63), 2**64 - 1


#: An exponent too large for a float (1e999); also matches harmless text ("e123"), which only
#: costs a walk. A plain search: an alternation with NaN|Infinity was 5x slower.
_BIG_EXPONENT = re.compile(rb"[eE][+-]?\d\d\d")


def may_hold_nonfinite(raw: bytes) -> bool:
    """Whether a JSON body may hold a NaN or an infinite number, as pydantic reads them
    (NaN, Infinity, 1e999), so it is worth a walk. About 2 ms a megabyte."""
    return b"NaN" in raw or b"Infinity" in raw or _BIG_EXPONENT.search(raw) is not None


def check_json_value(value: Any, field: str, *, floats: bool = False) -> None:
    """InvalidRequestError (422) naming `field`'s path to the first value JSON tools cannot
    take: an integer outside 64 bits (checked by orjson, at its speed) and, with `floats`, a
    NaN or infinity (orjson writes those as null, so finding one walks the whole value in
    Python: ask for it when `may_hold_nonfinite` says the request's text may hold one)."""
    try:
        orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError: the walk below says where and why
        refused: TypeError | None = exc
    else:
        if not floats:
            return
        refused = None
    problem = _first_problem(value, field)
    if problem is None and refused is not None:  # e.g. nested deeper than orjson goes (254)
        problem = field, f"cannot be written as JSON ({refused})"
    if problem is not None:
        where, message = problem
        details = [{"field": where, "problem": message}]
        raise InvalidRequestError(f"{where}: {message}", details=details)


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
            for key in item:
                if not _is_unicode(key):
                    return f"{path}.{_printable(key)}", _SURROGATE
            stack.extend((f"{path}.{key}", sub) for key, sub in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            if not _is_unicode(item):
                return path, _SURROGATE
        elif item is not None:
            return path, f"a {type(item).__name__} is not a JSON value"
    return None


_SURROGATE = (
    "text with a lone UTF-16 surrogate (an escape like \\ud800 without its pair), which is not "
    "Unicode; remove it"
)


def _is_unicode(text: str) -> bool:
    # a lone surrogate (which Python's json reads from "\ud800") cannot be written as UTF-8
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _describe(number: int) -> str:
    # str() of an integer over 4,300 digits raises (CPython's guard against slow conversions)
    digits = math.floor(number.bit_length() * math.log10(2)) + 1
    if digits <= 40:
        return f"integer {number}"
    return f"{'negative ' if number < 0 else ''}integer of about {digits} digits"


__all__ = ["MAX_INT", "MIN_INT", "check_json_value", "may_hold_nonfinite"]
