"""Objects and arrays for the mock walk: which properties and how many items, within bounds.

Large arrays are cheap: past a few distinct items (when uniqueItems does not forbid it) the
first items repeat, and an array whose smallest valid size is over the output cap is a 422
before any of it is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from sparklio.exceptions import InvalidRequestError
from sparklio.services.llm.mock import values
from sparklio.services.llm.mock.refs import Loc
from sparklio.services.llm.mock.walk import (
    _REPEAT_AFTER,
    EXPAND_VALUES,
    MAX_OUTPUT_CHARS,
    Flat,
    _sub,
    unsatisfiable,
)

if TYPE_CHECKING:
    from sparklio.services.llm.mock.refs import SchemaTools
    from sparklio.services.llm.mock.walk import Walker

_MAX_UNIQUE_TRIES = 6


class _Shape:
    """The object keywords of a flattened node, per owning schema where that matters."""

    def __init__(self, tools: SchemaTools, flat: Flat) -> None:
        self.props: dict[str, list[Loc]] = {}
        self.patterns: list[tuple[str, Loc]] = []
        self.closers: list[tuple[set[str], list[str], Loc | None]] = []
        for value, owner in flat.kw.get("properties", ()):
            if isinstance(value, dict):
                for name in value:
                    self.props.setdefault(name, []).append(_sub(owner, "properties", name))
        for value, owner in flat.kw.get("patternProperties", ()):
            if isinstance(value, dict):
                self.patterns += [(p, _sub(owner, "patternProperties", p)) for p in value]
        for _, owner in flat.kw.get("additionalProperties", ()):
            names = set(owner.schema.get("properties") or ())
            own_patterns = list(owner.schema.get("patternProperties") or ())
            self.closers.append((names, own_patterns, _sub(owner, "additionalProperties")))
        for value, _ in flat.kw.get("unevaluatedProperties", ()):
            if value is False:  # approximated: only the properties named anywhere here
                self.closers.append((set(self.props), [p for p, _ in self.patterns], None))
        self.required: list[str] = []
        for value, _ in flat.kw.get("required", ()):
            if isinstance(value, list):
                self.required += [n for n in value if isinstance(n, str) and n not in self.required]
        self.depends: dict[str, list[str]] = {}
        self.dep_schemas: dict[str, list[Loc]] = {}
        for key in ("dependentRequired", "dependencies", "dependentSchemas"):
            for value, owner in flat.kw.get(key, ()):
                for name, need in (value or {}).items() if isinstance(value, dict) else ():
                    if isinstance(need, list):
                        self.depends.setdefault(name, []).extend(need)
                    else:
                        self.dep_schemas.setdefault(name, []).append(_sub(owner, key, name))
        self.names_schema = [_sub(o, "propertyNames") for _, o in flat.kw.get("propertyNames", ())]
        self.tools = tools
        self.low = int(max(flat.numbers("minProperties"), default=0))
        highs = flat.numbers("maxProperties")
        self.high = int(min(highs)) if highs else None
        self.needed = set(self.required)
        self.needed.update(d for n in self.required for d in self.depends.get(n, ()))
        self._locs: dict[str, list[Loc]] = {}

    def allowed(self, walker: Walker, name: str) -> bool:
        for names, patterns, extra in self.closers:
            if name in names or any(self.tools.matches(p, name) for p in patterns):
                continue
            if extra is None or extra.schema is False:
                return False
        return not self.names_schema or walker.fits(self.names_schema, name)

    def locs_for(self, name: str) -> list[Loc]:
        """The nodes a property's value must match. Kept for declared names (callers do not
        change the list); names made up from patterns or payload words vary from walk to walk,
        so keeping them would grow without end."""
        locs = self._locs.get(name)
        if locs is None:
            locs = self._find_locs(name)
            if name in self.props:
                self._locs[name] = locs
        return locs

    def _find_locs(self, name: str) -> list[Loc]:
        locs = list(self.props.get(name, ()))
        locs += [loc for p, loc in self.patterns if self.tools.matches(p, name)]
        for names, patterns, extra in self.closers:
            matched = any(self.tools.matches(p, name) for p in patterns)
            if extra is not None and name not in names and not matched:
                locs.append(extra)
        return locs


def build_object(
    walker: Walker, flat: Flat, hint: str, depth: int, minimal: bool, where: str
) -> dict[str, Any]:
    shape = flat.shape
    if shape is None:  # the same for every walk of this schema: kept with the folded node
        shape = flat.shape = _Shape(walker.tools, flat)
    low, high = shape.low, shape.high
    if high is not None and low > high:
        raise unsatisfiable(where, f"minProperties {low} is above maxProperties {high}")
    if low > MAX_OUTPUT_CHARS // 4:
        walker.spend(low * 4, where, "minProperties", low)
    chosen: list[str] = []

    def add(name: str) -> None:
        todo = [name]
        while todo:
            n = todo.pop()
            if n not in chosen:
                chosen.append(n)
                todo += shape.depends.get(n, [])

    for name in shape.required:
        add(name)
    expand = not minimal and walker.emitted < EXPAND_VALUES and depth < 8
    free = [n for n in shape.props if n not in chosen]
    for name in free:
        full = high is not None and len(chosen) >= high
        if full or not (expand or len(chosen) < low):
            break
        if name not in shape.dep_schemas and shape.allowed(walker, name):
            add(name)
    if len(chosen) < low:
        _more_names(walker, shape, chosen, low, hint, depth)
    bare = not (shape.props or shape.patterns or shape.closers or chosen)
    if bare and expand and low == 0 and high != 0:  # a free-form object: a couple of entries
        _more_names(walker, shape, chosen, 2 if high is None else min(2, high), hint, depth)
    extra = [loc for n in chosen for loc in shape.dep_schemas.get(n, ())]
    if extra and not isinstance(flat, _Merged):  # dependentSchemas of chosen names apply too
        merged = walker.flatten(flat.locs + extra, frozenset(g for g, _ in flat.groups))
        return build_object(walker, _Merged.of(merged), hint, depth, minimal, where)
    out: dict[str, Any] = {}
    needed = shape.needed
    for name in chosen:
        locs = shape.locs_for(name)
        walker.spend(len(name) + 4, where, "minProperties", low)
        if not locs:
            out[name] = walker.text._text_for(name)
            continue
        try:
            out[name] = walker.gen(locs, name, depth + 1, minimal, frozenset())
        except InvalidRequestError:
            if name in needed or len(out) < low:
                raise
            # an optional property no value can fill (e.g. `false`): leave it out
    return out


class _Merged(Flat):
    """A node with the dependentSchemas of its chosen properties folded in (done once)."""

    __slots__ = ()

    @classmethod
    def of(cls, flat: Flat) -> _Merged:
        merged = cls()
        merged.locs, merged.kw, merged.groups = flat.locs, flat.kw, flat.groups
        merged.kinds = merged.shape = None
        merged.nots, merged.refs, merged.check = flat.nots, flat.refs, flat.check
        return merged


def _more_names(
    walker: Walker, shape: _Shape, chosen: list[str], low: int, hint: str, depth: int
) -> None:
    """Add property names until there are `low`: declared ones first, then names for
    patternProperties, then words of the payload (or what propertyNames allows)."""
    for name in shape.props:
        if len(chosen) >= low:
            return
        if name not in chosen and shape.allowed(walker, name):
            chosen.append(name)
    tries = 0
    words = [w.lower() for w in walker.text.words] or ["item"]
    while len(chosen) < low and tries < low * 4 + 20:
        tries += 1
        walker.tick()
        new: str | None = None
        if shape.patterns and tries % 2:
            new = values.from_pattern(
                shape.patterns[tries % len(shape.patterns)][0], walker.rng, walker.tools.matches
            )
        elif shape.names_schema:
            made = walker.gen(shape.names_schema, f"{hint}{tries}", depth + 1, True, frozenset())
            new = made if isinstance(made, str) else None
        else:
            new = words[tries % len(words)] + ("" if tries <= len(words) else str(tries))
        if new is not None and new not in chosen and shape.allowed(walker, new):
            chosen.append(new)


def build_array(
    walker: Walker, flat: Flat, hint: str, depth: int, minimal: bool, where: str
) -> list[Any]:
    plan = flat.plans.get("array")
    if plan is None:  # the same for every walk of this schema: kept with the folded node
        plan = flat.plans["array"] = _array_plan(walker.tools.draft, flat)
    prefix, rest, closed, contains, low, high, want_c, unique = plan
    if high is not None and low > high:
        raise unsatisfiable(where, f"minItems {low} is above the most items allowed ({high})")
    realistic = not minimal and walker.emitted < EXPAND_VALUES
    count = max(low, want_c)
    if realistic:
        count = max(count, min(high if high is not None else 99, walker.rng.randint(2, 4)))
    if high is not None:
        count = min(count, high)
    hint = hint[:-1] if hint.endswith("s") else hint
    out: list[Any] = []
    seen: set[str] = set()  # canonical JSON of the items so far: uniqueness in O(1)
    if count > 100:
        walker.big.append((where, low))  # running out of output space names this array
    for i in range(count):
        if i >= _REPEAT_AFTER and not unique and i >= len(prefix) + want_c:
            _repeat(walker, out, count, len(prefix) + want_c, where, low)
            break
        locs = (prefix[i] if i < len(prefix) else rest) + (
            contains if len(prefix) <= i < len(prefix) + want_c or (
                i < want_c and closed is not None) else []
        )  # fmt: skip
        value = walker.gen(locs, hint, depth + 1, minimal, frozenset())
        text = _json(value)
        if (unique or realistic) and text in seen:
            value = _unique(walker, locs, value, seen, hint, depth, tries=6 if unique else 1)
            text = _json(value)
        if i == 0 and count > 1000:  # refuse before building what cannot fit
            size = (len(text) + 1) * (count - len(prefix))
            walker.spend(size, where, "minItems", low)
            walker.chars += size
        walker.spend(1, where, "minItems", low)  # its contents spent as they were built
        seen.add(text)
        out.append(value)
    if count > 100:
        walker.big.pop()
    # an item built for `items` may also match `contains` past maxContains: the check decides
    return out


def _array_plan(draft: int, flat: Flat) -> tuple[Any, ...]:
    """An array node's item nodes and bounds: (prefix, rest, closed, contains, low, high,
    want_c, unique)."""
    prefix: list[list[Loc]] = []
    rest: list[Loc] = []
    closed: int | None = None
    for owner in flat.locs:
        schema = owner.schema
        tuple_key = "prefixItems" if draft >= 2020 else "items"
        own = schema.get(tuple_key)
        if isinstance(own, list):
            for i in range(len(own)):
                if i >= len(prefix):
                    prefix.append([])
                prefix[i].append(_sub(owner, tuple_key, i))
            more_key = "items" if draft >= 2020 else "additionalItems"
            if more_key in schema:
                if schema[more_key] is False:
                    closed = len(own) if closed is None else min(closed, len(own))
                else:
                    rest.append(_sub(owner, more_key))
        elif "items" in schema:
            if schema["items"] is False:
                closed = 0 if closed is None else min(closed, 0)
            else:
                rest.append(_sub(owner, "items"))
    if not rest and any(v is False for v, _ in flat.kw.get("unevaluatedItems", ())):
        closed = len(prefix) if closed is None else min(closed, len(prefix))  # approximated
    contains = [_sub(o, "contains") for _, o in flat.kw.get("contains", ())]
    low = int(max(flat.numbers("minItems"), default=0))
    highs = flat.numbers("maxItems")
    high = int(min(highs)) if highs else None
    if closed is not None:
        high = closed if high is None else min(high, closed)
    want_c = int(max(flat.numbers("minContains"), default=1)) if contains else 0
    unique = any(v is True for v, _ in flat.kw.get("uniqueItems", ()))
    return prefix, rest, closed, contains, low, high, want_c, unique


def _repeat(walker: Walker, out: list[Any], count: int, start: int, where: str, low: int) -> None:
    """Fill `out` to `count` items by repeating the items built after the first `start`."""
    cycle = out[start:] or out[-1:]
    missing = count - len(out)
    size = sum(len(_json(v)) + 1 for v in cycle) * missing // len(cycle)
    walker.spend(size, where, "minItems", low)
    out.extend((cycle * (missing // len(cycle) + 1))[:missing])


def _unique(
    walker: Walker,
    locs: list[Loc],
    value: Any,
    seen: set[str],
    hint: str,
    depth: int,
    tries: int,
) -> Any:
    """Another value for the same item schema that is not already `seen`."""
    other: Any
    for attempt in range(tries):
        saved, walker.emitted = walker.emitted, 0  # distinct items need their optional parts
        try:
            other = walker.gen(locs, f"{hint}{attempt}", depth + 1, False, frozenset())
        finally:
            walker.emitted = max(saved, walker.emitted)
        if _json(other) not in seen:
            return other
    for k in range(1, 50):  # simple types: step away from this value
        if isinstance(value, str):
            other = f"{value} {len(seen) + k}"
        elif values.is_num(value):
            other = value + len(seen) + k
        else:
            return value
        if _json(other) not in seen and walker.fits(locs, other):
            return other
    return value


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an integer past 64 bits
        return repr(value)
