"""The bounded schema walk: a value for every node of a JSON Schema, within a work budget.

A node and everything it folds in ($ref, allOf, and for draft 2019+ $ref siblings) is flattened
into one set of keyword lists; anyOf/oneOf/if are choices tried one branch at a time, each
answer checked against the original nodes (jsonschema-rs), so a wrong first guess costs a retry,
not a 502. Work is counted (nodes visited, characters of output, nesting depth): the walk stops
with `OverBudget` when its budget runs out, and with a 422 when the schema itself asks for more
than the mock will ever build (a minItems of 10^9) or for nothing at all (`false`, `not: {}`).
A `$ref` that comes back to a node being built switches that subtree to its smallest value
(no optional properties, the fewest items, the non-recursive branch first).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from sparklio.exceptions import InvalidRequestError
from sparklio.services.llm.mock import values
from sparklio.services.llm.mock.refs import Loc, SchemaTools, pointer_token

if TYPE_CHECKING:
    from sparklio.services.llm.mockdata import MockData

MAX_OUTPUT_CHARS = 1_000_000  # about 1 MB of JSON: more is no mock answer anyone reads
MAX_DEPTH = 48  # nesting of values; a required self-reference deeper than this never ends
INLINE_NODES = 3_000  # the walk's budget on the event loop...
INLINE_SECONDS = 0.005  # ...and its time there, then it moves to a worker thread
FULL_NODES = 400_000  # its budget in a worker thread: well under a second
EXPAND_VALUES = 150  # realistic output fills optional parts until this many values exist
_CLOCK_EVERY = 64  # steps of work between readings of the thread's CPU clock
_REPEAT_AFTER = 8  # array items past this many (and not unique) repeat the first ones
_ORDER = ("object", "array", "string", "integer", "number", "boolean", "null")
# keywords the walk may get wrong on its first try: a value for a node with any of them is
# checked (the rest are built right by construction; checking every node costs a compiled
# probe per node, 0.5 ms each on a large schema)
_RISKY = frozenset(
    {"contains", "maxContains", "propertyNames", "dependentSchemas", "dependencies",
     "unevaluatedProperties", "unevaluatedItems", "pattern", "uniqueItems"}
)  # fmt: skip
_MISSING: Any = object()
_FLATS_CACHED = 20_000  # folded nodes kept per schema (a schema's structure, not its values)
_NOTES = frozenset({"title", "description", "$comment", "default", "examples", "deprecated",
                    "readOnly", "writeOnly", "$id", "$schema", "$anchor"})  # fmt: skip


class OverBudget(Exception):
    """The walk used up its work budget."""


def unsatisfiable(where: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"output_schema cannot be satisfied at {where or '/'}: {why}.",
        details={"schema_path": where or "/"},
    )


class Flat:
    """One node with its $ref/allOf parts folded in: keyword -> [(value, owning node)]."""

    __slots__ = ("check", "groups", "kinds", "kw", "locs", "nots", "plans", "refs", "shape")

    def __init__(self) -> None:
        self.kinds: list[str] | None = None  # the types to try, worked out once
        self.shape: Any = None  # its object keywords, gathered once (shapes._Shape)
        self.plans: dict[str, Any] = {}  # per type, its keywords read once (bounds, items)
        self.check = False  # whether a value for it must be checked (see _RISKY)
        self.locs: list[Loc] = []
        self.kw: dict[str, list[tuple[Any, Loc]]] = {}
        self.groups: list[tuple[str, list[list[Loc]]]] = []
        self.nots: list[Loc] = []
        self.refs: list[str] = []

    def numbers(self, key: str) -> list[float]:
        return [v for v, _ in self.kw.get(key, ()) if values.is_num(v)]


def _sub(owner: Loc, *path: str | int) -> Loc:
    node: Any = owner.schema
    for part in path:
        node = node[part]
    return Loc(node, owner.base, owner.pointer + "".join(f"/{pointer_token(p)}" for p in path))


class Walker:
    """Builds one value for a schema; `text` supplies the realistic words."""

    def __init__(
        self,
        text: MockData,
        tools: SchemaTools,
        nodes: int,
        *,
        minimal: bool = False,
        root_object: bool = False,
        seconds: float | None = None,
    ) -> None:
        self.root_object = root_object
        # a CPU-time limit on top of the step budget: compiling checks for a large schema
        # costs milliseconds the step count cannot see. Output does not depend on it: a walk
        # that runs out is redone from scratch with the full budget.
        # a system call: only when there is a limit to check
        self.deadline = None if seconds is None else time.thread_time() + seconds
        self._clock = _CLOCK_EVERY  # steps until the clock is read again (just read)
        self.text = text
        self.rng = text.rng
        self.tools = tools
        self.nodes = nodes
        self.chars = MAX_OUTPUT_CHARS
        self.emitted = 0
        self.minimal = minimal
        self.active: dict[str, int] = {}
        self.big: list[tuple[str, int]] = []  # (where, minItems) of large arrays being built

    def value(self) -> Any:
        root = Loc(self.tools.root, self.tools.base, "")
        return self.gen([root], "", 0, self.minimal, frozenset())

    # -- accounting ------------------------------------------------------------------------

    def tick(self, cost: int = 1) -> None:
        self.nodes -= cost
        if self.nodes < 0:
            raise OverBudget
        if self.deadline is None:
            return
        self._clock -= cost
        if self._clock < 0:
            self._clock = _CLOCK_EVERY
            # CPU time of this thread: work done, whatever the load
            if time.thread_time() > self.deadline:
                raise OverBudget

    def spend(self, chars: int, where: str, keyword: str, wanted: int) -> None:
        self.chars -= chars
        if self.chars < 0:
            if self.big and (keyword != "minItems" or wanted <= 100):
                (where, wanted), keyword = self.big[-1], "minItems"  # the array that made it big
            raise InvalidRequestError(
                f"output_schema requires at least {wanted} {_unit(keyword)} at {where or '/'} "
                f"({keyword}); the mock answers at most {MAX_OUTPUT_CHARS:,} characters of JSON. "
                f"Lower {keyword} or test this schema against a real model.",
                details={"schema_path": where or "/", "keyword": keyword},
            )

    def fits(self, locs: list[Loc], value: Any) -> bool:
        for loc in locs:
            if loc.pointer not in self.tools._probes:
                self.tick(20)  # compiling a probe is real work: count it
                self._clock = 0  # and may be slow: look at the clock after it
            if not self.tools.fits(loc.pointer, value):
                return False
        return True

    # -- folding ---------------------------------------------------------------------------

    def flatten(self, locs: list[Loc], skip: frozenset[str]) -> Flat:
        """The folded node, from the schema's cache when it was folded before (charged the
        same steps as the first time, so a walk costs the same cold or warm)."""
        key = (tuple([loc.pointer for loc in locs]), skip)
        cached = self.tools.flats.get(key)
        if cached is not None:
            flat, cost = cached
            self.tick(cost)
            return flat
        before = self.nodes
        flat = self._flatten(locs, skip)
        if len(self.tools.flats) < _FLATS_CACHED:
            self.tools.flats[key] = (flat, before - self.nodes)
        return flat

    def _flatten(self, locs: list[Loc], skip: frozenset[str]) -> Flat:
        flat = Flat()
        queue = list(locs)
        seen: set[str] = set()
        draft = self.tools.draft
        i = 0
        while i < len(queue):
            loc = queue[i]
            i += 1
            schema = loc.schema
            if schema is True:
                continue
            if schema is False:
                raise unsatisfiable(loc.pointer, "the schema is `false`, which no value matches")
            if not isinstance(schema, dict):
                raise InvalidRequestError(
                    f"output_schema has a sub-schema that is not an object at {loc.pointer}."
                )
            if loc.pointer in seen:
                continue
            seen.add(loc.pointer)
            self.tick()
            ref = schema.get("$ref")
            # draft 4-7 ignore everything beside a $ref, its sibling $id included
            own_base = draft > 7 or not isinstance(ref, str)
            base = self.tools.child_base(schema, loc.base) if own_base else loc.base
            here = Loc(schema, base, loc.pointer)
            flat.locs.append(here)
            if isinstance(ref, str):
                target = self.tools.resolve(ref, here.base, loc.pointer)
                flat.refs.append(target.pointer)
                queue.append(target)
                if draft <= 7:
                    continue  # draft 4-7 ignore a $ref's siblings
            for key in ("$dynamicRef", "$recursiveRef"):
                if isinstance(schema.get(key), str):
                    target = self.tools.resolve(schema[key], here.base, loc.pointer)
                    flat.refs.append(target.pointer)
                    queue.append(target)
            for key, value in schema.items():
                if key == "allOf" and isinstance(value, list):
                    queue.extend(_sub(here, "allOf", j) for j in range(len(value)))
                elif key in ("anyOf", "oneOf") and isinstance(value, list):
                    if f"{loc.pointer}/{key}" not in skip:
                        flat.groups.append(
                            (
                                f"{loc.pointer}/{key}",
                                [[_sub(here, key, j)] for j in range(len(value))],
                            )
                        )
                elif key == "if":
                    if f"{loc.pointer}/if" not in skip:
                        then = [_sub(here, "if")] + (
                            [_sub(here, "then")] if "then" in schema else []
                        )
                        other = [_sub(here, "else")] if "else" in schema else []
                        flat.groups.append((f"{loc.pointer}/if", [then, other]))
                elif key == "not":
                    if value is True or (isinstance(value, dict) and not set(value) - _NOTES):
                        raise unsatisfiable(loc.pointer, "`not` forbids every value")
                    flat.nots.append(_sub(here, "not"))
                elif key not in ("then", "else"):
                    flat.kw.setdefault(key, []).append((value, here))
        flat.check = bool(flat.nots) or not _RISKY.isdisjoint(flat.kw)
        return flat

    # -- the walk --------------------------------------------------------------------------

    def gen(
        self, locs: list[Loc], hint: str, depth: int, minimal: bool, skip: frozenset[str]
    ) -> Any:
        if depth > MAX_DEPTH:
            raise unsatisfiable(
                locs[0].pointer if locs else "",
                f"values nest deeper than {MAX_DEPTH} levels (a required property or "
                "item refers back to itself without end)",
            )  # fmt: skip
        flat = self.flatten(locs, skip)
        refs = flat.refs  # most nodes have none: no bookkeeping then
        active = self.active
        if refs and any(active.get(p) for p in refs):
            minimal = True  # a $ref came back round: build its smallest value
        for p in refs:
            active[p] = active.get(p, 0) + 1
        try:
            if flat.groups:
                return self._choose(flat, locs, hint, depth, minimal, skip)
            return self._plain(flat, hint, depth, minimal)
        finally:
            for p in refs:
                active[p] -= 1

    def _choose(
        self, flat: Flat, locs: list[Loc], hint: str, depth: int, minimal: bool,
        skip: frozenset[str],
    ) -> Any:  # fmt: skip
        key, branches = flat.groups[0]
        first: Any = _MISSING
        good: Any = _MISSING
        error: InvalidRequestError | None = None
        for branch in self._order(branches, minimal, key.endswith("/if")):
            try:
                value = self.gen(locs + branch, hint, depth, minimal, skip | {key})
            except InvalidRequestError as exc:
                error = error or exc
                continue
            if self.fits(flat.locs, value):
                if not (self.root_object and depth == 0 and not isinstance(value, dict)):
                    return value
                good = value if good is _MISSING else good  # valid, but an object is wanted
            if first is _MISSING:
                first = value
        if good is not _MISSING:
            return good
        if first is _MISSING:
            raise error or unsatisfiable(key, "no branch can be satisfied")
        return first

    def _order(self, branches: list[list[Loc]], minimal: bool, is_if: bool) -> list[list[Loc]]:
        if is_if:
            return branches

        def rank(branch: list[Loc]) -> tuple[int, int, int]:
            schema = branch[0].schema
            if not isinstance(schema, dict):
                return (0, 0, 0) if schema is True else (2, 2, 2)
            ref = schema.get("$ref")
            recursive = 0
            if isinstance(ref, str):
                try:
                    target = self.tools.resolve(ref, branch[0].base, branch[0].pointer)
                except InvalidRequestError:
                    return (2, 2, 2)
                recursive = 1 if self.active.get(target.pointer) else 0
                schema = target.schema if isinstance(target.schema, dict) else {}
            null = 1 if schema.get("type") == "null" else 0
            simple = 0 if not minimal or schema.get("type") not in ("object", "array") else 1
            return (recursive, null, simple) if minimal else (null, recursive, 0)

        return sorted(branches, key=rank)

    def _plain(self, flat: Flat, hint: str, depth: int, minimal: bool) -> Any:
        where = flat.locs[0].pointer if flat.locs else ""
        if not flat.locs:
            return self.text._text_for(hint)
        consts = flat.kw.get("const")
        if consts:
            value = consts[0][0]
            if any(v != value or type(v) is not type(value) for v, _ in consts[1:]):
                raise unsatisfiable(where, "two `const` values differ")
            return value
        if "enum" in flat.kw:
            return self._enum(flat, hint, where)
        first: Any = _MISSING
        kinds = self._types(flat, where)
        if self.root_object and depth == 0 and "object" in kinds:
            kinds = ["object", *(k for k in kinds if k != "object")]
        if not flat.check:  # built right by construction: the first type that can be built
            last = len(kinds) - 1
            for i, kind in enumerate(kinds):
                try:
                    return self._typed(kind, flat, hint, depth, minimal, where)
                except InvalidRequestError:
                    if i == last:
                        raise
            raise unsatisfiable(where, "no type can be satisfied")
        attempts = [(kind, minimal) for kind in kinds]
        if not minimal:
            attempts += [(kind, True) for kind, _ in attempts]
        for kind, small in attempts:
            try:
                value = self._typed(kind, flat, hint, depth, small, where)
            except InvalidRequestError:
                if first is _MISSING and (kind, small) == attempts[-1]:
                    raise
                continue
            if self.fits(flat.locs, value):
                return value
            if first is _MISSING:
                first = value
        if first is _MISSING:
            raise unsatisfiable(where, "no type can be satisfied")
        return first

    def _enum(self, flat: Flat, hint: str, where: str) -> Any:
        enums = [v for v, _ in flat.kw["enum"] if isinstance(v, list)]
        options = list(enums[0]) if enums else []
        for other in enums[1:]:
            options = [o for o in options if any(values.same(o, x) for x in other)]
        if not options:
            raise unsatisfiable(where, "no value is in every `enum`")
        chosen = self.text._choose(options, hint)
        if len(flat.locs) == 1 and not flat.nots:
            return chosen
        for option in [chosen, *options[:50]]:
            if self.fits(flat.locs, option):
                return option
        return chosen

    def _types(self, flat: Flat, where: str) -> list[str]:
        if flat.kinds is None:
            flat.kinds = self._work_out_types(flat, where)
        return flat.kinds

    def _work_out_types(self, flat: Flat, where: str) -> list[str]:
        declared: set[str] | None = None
        order: list[str] = []
        for value, _ in flat.kw.get("type", ()):
            kinds = {value} if isinstance(value, str) else set(value or ())
            order += [k for k in (value if isinstance(value, list) else [value]) if k not in order]
            if "number" in kinds:
                kinds.add("integer")
            declared = kinds if declared is None else declared & kinds
        inferred = values.infer_types(flat.kw)
        if declared is not None:
            if not declared:
                raise unsatisfiable(where, "no value has every `type` asked for")
            ranked = [k for k in inferred if k in declared]
            ranked += [k for k in order if k in declared and k not in ranked and k != "null"]
            ranked += [k for k in _ORDER if k in declared and k not in ranked]
            if "number" in ranked and "integer" not in ranked:
                ranked.append("integer")
            return ranked
        rest = [k for k in _ORDER if k not in inferred]
        return (
            inferred
            + (["string"] if "string" not in inferred else [])
            + [k for k in rest if k != "string"]
        )

    def _typed(
        self, kind: str, flat: Flat, hint: str, depth: int, minimal: bool, where: str
    ) -> Any:
        self.emitted += 1
        if kind == "string":
            return self._string(flat, hint, where)
        if kind == "object":
            return shapes.build_object(self, flat, hint, depth, minimal, where)
        if kind == "array":
            return shapes.build_array(self, flat, hint, depth, minimal, where)
        if kind in ("integer", "number"):
            return self._number(flat, hint, kind == "integer", where)
        if kind == "boolean":
            return self.rng.random() < 0.7
        if kind == "null":
            return None
        return self._string(flat, hint, where)

    def _number(self, flat: Flat, hint: str, integer: bool, where: str) -> float | int:
        plan = flat.plans.get("number")
        if plan is None:
            plan = flat.plans["number"] = (
                *values.bound(flat.kw, "minimum", "exclusiveMinimum", max),
                *values.bound(flat.kw, "maximum", "exclusiveMaximum", min),
                [s for s in flat.numbers("multipleOf") if s > 0],
            )
        low, low_open, high, high_open, steps = plan
        value = values.number(self.rng, low, high, low_open, high_open, steps, integer, hint)
        if value is None:
            raise unsatisfiable(where, "no number lies within minimum/maximum and multipleOf")
        return int(value) if integer else value

    def _string(self, flat: Flat, hint: str, where: str) -> str:
        plan = flat.plans.get("string")
        if plan is None:
            highs = flat.numbers("maxLength")
            plan = flat.plans["string"] = (
                int(max(flat.numbers("minLength"), default=0)),
                int(min(highs)) if highs else None,
                [p for p, _ in flat.kw.get("pattern", ()) if isinstance(p, str)],
                [f for f, _ in flat.kw.get("format", ()) if isinstance(f, str)],
            )
        low, high, patterns, formats = plan
        if high is not None and low > high:
            raise unsatisfiable(where, f"minLength {low} is above maxLength {high}")
        if low > MAX_OUTPUT_CHARS:
            self.spend(low, where, "minLength", low)
        if not patterns and not formats:  # the common case: the payload's words, fitted
            self.tick()
            filler = self.text.sentence() if low else ""
            text = values.fit(self.text._text_for(hint), low, high, filler)
            self.spend(len(text) + 2, where, "minLength", low)
            return text
        slug = re.sub(r"[^a-z0-9]+", "-", self.text.subject.lower()).strip("-") or "brand"
        candidates: list[Callable[[], str | None]] = []
        if formats:
            candidates.append(partial(values.formatted, formats[0], slug, self.rng))
        for pattern in patterns[:3]:  # all must match: build from each in turn
            one = partial(values.from_pattern, pattern, self.rng, self.tools.matches)
            candidates += [one, one, partial(one, shortest=True)]
        candidates += [partial(self.text._text_for, hint), lambda: slug, lambda: "a"]
        fallback: str | None = None
        for make in candidates:
            self.tick()
            made = make()
            if made is None:
                continue
            if not patterns or len(made) < low:
                made = values.fit(made, low, high, self.text.sentence() if low else "")
            if len(made) < low or (high is not None and len(made) > high):
                continue
            if all(self.tools.matches(p, made) is not False for p in patterns):
                self.spend(len(made) + 2, where, "minLength", low)
                return made
            fallback = fallback or made
        text = fallback if fallback is not None else values.fit("", low, high, "a")
        self.spend(len(text) + 2, where, "minLength", low)
        return text


def _unit(keyword: str) -> str:
    return {"minItems": "items", "minLength": "characters", "minProperties": "properties"}.get(
        keyword, "values"
    )


# shapes builds objects and arrays with this module's Walker (and imports it): bound last
from sparklio.services.llm.mock import shapes  # noqa: E402
