"""One output schema, made ready for the mock walk: its draft, its `$ref` targets, and checks.

`SchemaTools(schema)` resolves any reference inside the document (JSON pointers, `$id`-relative
URIs, `$anchor`, `$dynamicAnchor`, draft 4-7 `id`/`$id: "#name"`) to the node and its document
pointer, and tells whether a value is valid against the node at a pointer, using jsonschema-rs
(the validator the gateway checks the answer with), so the walk can pick another branch when its
first choice is wrong. Built once per distinct schema and cached by the provider.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urljoin, urlsplit

import jsonschema_rs

from sparklio.exceptions import InvalidRequestError

DEFAULT_BASE = "https://sparklio.invalid/output_schema.json"
_DRAFTS = (("draft-04", 4), ("draft-06", 6), ("draft-07", 7), ("2019-09", 2019))
# keywords whose values are data, not schemas: the index does not look for $id inside them
_DATA = frozenset({"enum", "const", "default", "examples", "example"})


class Loc(NamedTuple):
    """A schema node, the base URI its references resolve against, and its document pointer."""

    schema: Any
    base: str
    pointer: str


def draft_of(root: Any) -> int:
    """4, 6, 7, 2019 or 2020 (the default, as the validators assume) from the root's $schema."""
    uri = root.get("$schema", "") if isinstance(root, dict) else ""
    for mark, number in _DRAFTS:
        if isinstance(uri, str) and mark in uri:
            return number
    return 2020


def _join(base: str, ref: str) -> str:
    if ref.startswith("#"):
        return base.split("#", 1)[0] + ref
    if urlsplit(ref).scheme:
        return ref
    return urljoin(base, ref)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class SchemaTools:
    """Reference resolution and per-node validity checks for one root schema."""

    def __init__(self, root: dict[str, Any], size: int = 0) -> None:
        self.root = root
        self.size = size  # bytes of JSON, when the caller knows
        self.draft = draft_of(root)
        self.id_key = "id" if self.draft == 4 else "$id"
        own = root.get(self.id_key)
        self.base = _join(DEFAULT_BASE, own) if isinstance(own, str) and own else DEFAULT_BASE
        self.base = self.base.split("#", 1)[0]
        self._resources: dict[str, Loc] | None = None
        self._anchors: dict[str, Loc] = {}
        self._probes: dict[str, Any] = {}
        self.flats: dict[Any, Any] = {}  # the walk's folded nodes, by (pointers, skipped)
        self._patterns: dict[str, Any] = {}
        self._registry: Any = None
        self._validator: Any = None

    # -- references ------------------------------------------------------------------------

    def child_base(self, schema: dict[str, Any], base: str) -> str:
        """The base URI inside `schema`, which may set its own $id."""
        own = schema.get(self.id_key)
        if isinstance(own, str) and own and not own.startswith("#"):
            return _join(base, own).split("#", 1)[0]
        return base

    def resolve(self, ref: str, base: str, where: str) -> Loc:
        """The node `ref` points to; a 422 naming `where` if it is not in the document."""
        full = _join(base, ref)
        url, _, fragment = full.partition("#")
        fragment = unquote(fragment)
        if url == self.base and (not fragment or fragment.startswith("/")):
            return self._walk(Loc(self.root, self.base, ""), fragment, ref, where)
        resources, anchors = self._index()
        if fragment and not fragment.startswith("/"):
            found = anchors.get(f"{url}#{fragment}")
            if found is not None:
                return found
        elif url in resources:
            return self._walk(resources[url], fragment, ref, where)
        raise InvalidRequestError(
            f"output_schema $ref {ref!r} at {where or '/'} does not resolve inside the schema; "
            "define what it names under $defs (the mock fetches nothing).",
            details={"schema_path": where or "/"},
        )

    def _walk(self, start: Loc, fragment: str, ref: str, where: str) -> Loc:
        node, base, pointer = start
        for raw in fragment.split("/")[1:] if fragment else ():
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise InvalidRequestError(
                    f"output_schema $ref {ref!r} at {where or '/'} points at nothing.",
                    details={"schema_path": where or "/"},
                )
            pointer = f"{pointer}/{_escape(token)}"
            if isinstance(node, dict):
                base = self.child_base(node, base)
        return Loc(node, base, pointer)

    def _index(self) -> tuple[dict[str, Loc], dict[str, Loc]]:
        """Every resource ($id) and anchor in the document, built on first need."""
        if self._resources is not None:
            return self._resources, self._anchors
        resources: dict[str, Loc] = {self.base: Loc(self.root, self.base, "")}
        stack: list[tuple[Any, str, str]] = [(self.root, self.base, "")]
        while stack:
            node, base, pointer = stack.pop()
            if isinstance(node, list):
                stack.extend((v, base, f"{pointer}/{i}") for i, v in enumerate(node))
                continue
            if not isinstance(node, dict):
                continue
            own = node.get(self.id_key)
            if isinstance(own, str) and own:
                if own.startswith("#"):  # draft 6/7 plain-name fragment
                    self._anchors[f"{base}#{own[1:]}"] = Loc(node, base, pointer)
                else:
                    base = _join(base, own).split("#", 1)[0]
                    resources.setdefault(base, Loc(node, base, pointer))
                    if "#" in own and own.split("#", 1)[1]:
                        self._anchors[f"{base}#{own.split('#', 1)[1]}"] = Loc(node, base, pointer)
            for key in ("$anchor", "$dynamicAnchor"):
                if isinstance(node.get(key), str):
                    self._anchors.setdefault(f"{base}#{node[key]}", Loc(node, base, pointer))
            for key, value in node.items():
                if key not in _DATA and isinstance(value, dict | list):
                    stack.append((value, base, f"{pointer}/{_escape(key)}"))
        self._resources = resources
        return resources, self._anchors

    # -- checks ----------------------------------------------------------------------------

    @property
    def warm(self) -> bool:
        """Whether the whole-schema validator is compiled already."""
        return self._validator is not None

    def valid(self, value: Any) -> bool:
        """Whether `value` is valid against the whole schema, formats included."""
        if self._validator is None:
            try:
                self._validator = jsonschema_rs.validator_for(
                    self.root, validate_formats=True, retriever=_no_fetch
                )
            except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError):
                self._validator = False  # the gateway refuses such a schema before the mock
        return self._validator is False or bool(self._validator.is_valid(value))

    def errors(self, value: Any, limit: int = 3) -> list[str]:
        if self.valid(value):
            return []
        return [
            e.message
            for _, e in zip(range(limit), self._validator.iter_errors(value), strict=False)
        ]

    def matches(self, pattern: str, text: str) -> bool | None:
        """Whether `text` matches the schema regex `pattern` as the gateway's validator reads
        it (ECMA-style, with a backtracking limit: Python's re could hang on some patterns);
        None when it cannot be compiled."""
        check = self._patterns.get(pattern)
        if check is None:
            try:
                check = jsonschema_rs.validator_for({"pattern": pattern})
            except (jsonschema_rs.ValidationError, ValueError):
                check = False
            self._patterns[pattern] = check
        return None if check is False else bool(check.is_valid(text))  # type: ignore[union-attr]

    def fits(self, pointer: str, value: Any) -> bool:
        """Whether `value` is valid against the node at `pointer`; True when that cannot be told
        (a node jsonschema-rs cannot compile alone), leaving the final check to decide."""
        probe = self._probes.get(pointer)
        if probe is None:
            probe = self._compile_probe(pointer)
            self._probes[pointer] = probe
        if probe is False:
            return True
        return bool(probe.is_valid(value))

    def _compile_probe(self, pointer: str) -> Any:
        try:
            if self._registry is None:
                self._registry = jsonschema_rs.Registry(resources=[(self.base, self.root)])
            probe: dict[str, Any] = {"$ref": f"{self.base}#{quote(pointer, safe='/~')}"}
            if isinstance(self.root.get("$schema"), str):
                probe["$schema"] = self.root["$schema"]
            return jsonschema_rs.validator_for(
                probe, validate_formats=True, registry=self._registry, retriever=_no_fetch
            )
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError):
            return False


def _no_fetch(uri: str) -> Any:
    raise ValueError(f"no remote schema: {uri}")


def pointer_token(key: str | int) -> str:
    """`key` as one JSON pointer token."""
    return _escape(str(key))


_BIG_REPEAT = re.compile(r"\{(\d{5,})")


def huge_repeat(pattern: str) -> bool:
    """Whether the regex asks for a repetition too long to build (e.g. `a{100000}`)."""
    return any(int(n) > 10_000 for n in _BIG_REPEAT.findall(pattern))
