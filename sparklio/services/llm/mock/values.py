"""Leaf values for the mock walk: numbers within bounds and steps, formatted strings, patterns."""

from __future__ import annotations

import math
import random
import string
import uuid
from collections.abc import Callable
from decimal import Decimal
from itertools import chain
from typing import Any

import rstr

from sparklio.services.llm.mock.refs import huge_repeat


def number(
    rng: random.Random,
    low: float | None,
    high: float | None,
    low_open: bool,
    high_open: bool,
    steps: list[float],
    integer: bool,
    hint: str,
) -> float | int | None:
    """A number in the range that is a multiple of every step; None when there is none."""
    if low is None and high is None and any(h in hint.lower() for h in ("score", "rating")):
        low, high = 1, 10
    lo = Decimal(str(low)) if low is not None else None
    hi = Decimal(str(high)) if high is not None else None
    if lo is None:
        lo, low_open = (hi - 100 if hi is not None and hi < 0 else Decimal(0)), False
        if hi is not None and hi <= lo:
            lo = hi - 100
    if hi is None:
        hi, high_open = lo + 100, False
    step = _lcm([Decimal(str(s)) for s in steps if s]) if steps else None
    if integer:
        step = _lcm([step, Decimal(1)]) if step is not None else Decimal(1)
    if step is not None:
        first = math.ceil(lo / step)
        last = math.floor(hi / step)
        if low_open and first * step == lo:
            first += 1
        if high_open and last * step == hi:
            last -= 1
        if first > last:
            return None
        pick = first if last - first > 10**6 else rng.randint(first, last)
        for k in (pick, first, last, 0):
            if first <= k <= last:
                value = Decimal(k) * step
                out: float | int = (
                    int(value) if value == value.to_integral_value() else float(value)
                )
                if all(_multiple(out, s) for s in steps if s):
                    return out
        return None
    span = hi - lo
    if span < 0 or (span == 0 and (low_open or high_open)):
        return None
    if span == 0:
        return float(lo)
    if max(abs(lo), abs(hi)) > 2**52:  # past float precision: an exact integer inside
        inside = math.floor(lo) + 1 if span > 1 or low_open else math.ceil(lo)
        return inside if lo <= inside <= hi else float(lo)
    value = lo + span * Decimal(str(round(rng.uniform(0.1, 0.9), 2)))
    result = round(float(value), 2)
    if not (float(lo) < result < float(hi)) and not (
        float(lo) <= result <= float(hi) and not low_open and not high_open
    ):
        result = float((lo + hi) / 2)
    if result == int(result) and float(lo) < result + 0.25 < float(hi):
        result += 0.25  # a "number" that reads as one, and is not also an "integer"
    return result


def _multiple(value: float, step: float) -> bool:
    if isinstance(value, int) and isinstance(step, int):
        return value % step == 0
    quotient = value / step
    return quotient == int(quotient) if math.isfinite(quotient) else False


def _lcm(steps: list[Decimal]) -> Decimal:
    """The least common multiple of decimal steps (exact, via their scaled integers)."""
    scale = max(-s.as_tuple().exponent for s in steps)  # type: ignore[operator]
    scale = max(scale, 0)
    ints = [int(s * (10**scale)) for s in steps]
    result = ints[0]
    for n in ints[1:]:
        result = result * n // math.gcd(result, n)
    return Decimal(result) / (10**scale)


def formatted(fmt: str, slug: str, rng: random.Random) -> str | None:
    """A value of a JSON Schema format, None for formats it does not know."""
    day = rng.randint(1, 28)
    month = rng.randint(1, 12)
    hour = rng.randint(8, 19)
    by_format = {
        "email": f"hello@{slug}.example.com",
        "idn-email": f"hello@{slug}.example.com",
        "date": f"2026-{month:02d}-{day:02d}",
        "date-time": f"2026-{month:02d}-{day:02d}T{hour:02d}:00:00Z",
        "time": f"{hour:02d}:00:00Z",
        "duration": f"P{day}D",
        "uri": f"https://{slug}.example.com/",
        "url": f"https://{slug}.example.com/",
        "iri": f"https://{slug}.example.com/",
        "uri-reference": f"/{slug}/",
        "iri-reference": f"/{slug}/",
        "uri-template": f"https://{slug}.example.com/{{id}}",
        "hostname": f"{slug}.example.com",
        "idn-hostname": f"{slug}.example.com",
        "ipv4": f"192.0.2.{rng.randint(1, 254)}",
        "ipv6": f"2001:db8::{rng.randint(1, 0xFFFF):x}",
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "regex": "^[a-z0-9-]+$",
        "json-pointer": f"/{slug}/0",
        "relative-json-pointer": f"0/{slug}",
        "byte": "c3BhcmtsaW8=",
        "binary": slug,
        "password": f"{slug}-{rng.randint(1000, 9999)}",
    }
    return by_format.get(fmt)


class _Xeger(rstr.Rstr):
    """rstr's regex-to-string with bounded work: a repeat goes at most a few times past its
    minimum (rstr allows 100, and nested repeats multiply to millions of steps), and the same
    string in every process: rstr builds `\\W` and `[^...]` from sets, whose order changes
    with PYTHONHASHSEED, so they are sorted here."""

    _LIMIT = 20_000

    def __init__(self, rng: random.Random, shortest: bool = False) -> None:
        super().__init__(rng)
        self._work = 0
        self._extra = 0 if shortest else 3
        for name in ("nonword", "unambiguous"):
            self._alphabets[name] = "".join(sorted(self._alphabets[name]))

    def _handle_in(self, value: Any) -> Any:
        candidates = list(chain(*(self._handle_state(i) for i in value)))
        if candidates and candidates[0] is False:  # a negated class: printable but those
            candidates = sorted(set(string.printable).difference(candidates[1:]))
        return self._random.choice(candidates)

    def _handle_repeat(self, start_range: int, end_range: int, value: Any) -> str:
        times = self._random.randint(start_range, min(end_range, start_range + self._extra))
        self._work += times + 1
        if self._work > self._LIMIT:
            raise OverflowError("pattern too costly to build")
        return "".join("".join(self._handle_state(i) for i in value) for _ in range(times))


def from_pattern(
    pattern: str,
    rng: random.Random,
    matches: Callable[[str, str], bool | None],
    shortest: bool = False,
) -> str | None:
    """A string matching `pattern` (`shortest`: each repeat at its minimum), or None when
    rstr cannot build one (e.g. \\p{L}, huge repeats) or what it builds does not match as
    the validator reads the pattern."""
    if huge_repeat(pattern):
        return None
    try:
        text = str(_Xeger(rng, shortest).xeger(pattern))
    except Exception:
        return None
    return text if matches(pattern, text) is not False else None


def fit(text: str, low: int, high: int | None, filler: str) -> str:
    """`text` made at least `low` and at most `high` characters, padding cheaply."""
    if len(text) < low:
        unit = f" {filler}" if filler else " x"
        text += unit * (-(-(low - len(text)) // len(unit)))
        text = text[:low] if high is None or high >= low else text
    if high is not None and len(text) > high:
        cut = text[:high]
        spaced = cut.rsplit(" ", 1)[0].rstrip(",.;:—-") if " " in cut else cut
        text = spaced if len(spaced) >= low else cut
    return text


def json_size(value: Any) -> int:
    """A quick upper-bound guess of the JSON length of a leaf value (containers count 2)."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int | float):
        return len(str(value))
    return 2


_KINDS = (
    ("object", frozenset({"properties", "required", "additionalProperties", "minProperties",
                          "maxProperties", "patternProperties", "propertyNames",
                          "dependentRequired", "dependentSchemas", "dependencies"})),
    ("array", frozenset({"items", "prefixItems", "minItems", "maxItems", "contains",
                         "uniqueItems", "additionalItems"})),
    ("string", frozenset({"minLength", "maxLength", "pattern", "format"})),
    ("number", frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                          "multipleOf"})),
)  # fmt: skip


def infer_types(kw: dict[str, Any]) -> list[str]:
    """The types a schema without `type` hints at by its keywords."""
    return [kind for kind, keys in _KINDS if not keys.isdisjoint(kw)]


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values (True is not 1)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def bound(
    kw: dict[str, list[tuple[Any, Any]]], inclusive: str, exclusive: str, pick: Any
) -> tuple[float | None, bool]:
    """The tightest bound from `minimum`-style and `exclusiveMinimum`-style keywords (a folded
    node's keyword -> [(value, owning Loc)]), with draft 4's boolean exclusiveMinimum (which
    makes its sibling `minimum` exclusive)."""
    found: list[tuple[float, bool]] = []
    for value, owner in kw.get(inclusive, ()):
        if is_num(value):
            found.append((value, owner.schema.get(exclusive) is True))
    for value, _ in kw.get(exclusive, ()):
        if is_num(value):
            found.append((value, True))
    if not found:
        return None, False
    best = pick(v for v, _ in found)
    return best, any(open_ for v, open_ in found if v == best)


def is_num(value: Any) -> bool:
    """A JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
