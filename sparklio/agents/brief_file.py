"""A brief as a marketer hands it over: a .yaml/.json file with its fields, or a .md/.txt
file (or the text itself) that is the brief. One parser for `sparklio campaign --brief` and
the studio's upload (POST /api/v1/campaigns/brief-file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparklio.exceptions import BriefError
from sparklio.wire.brand import Term

#: file names whose text holds the brief's fields; any other file's text is the brief
STRUCTURED = (".yaml", ".yml", ".json")
TEXT = (".md", ".txt")
FIELDS = "brief, product_facts, brand_guide, words_to_avoid, channels, variants"


class BriefFile(BaseModel):
    """A brief as a marketer hands it over: the text, and optionally facts, a brand guide,
    words no copy may contain, the channels, and variants per channel (the campaigns API
    checks these two: POST /api/v1/campaigns). An unknown key is refused, so a misspelt one
    (`chanels`) is not dropped unnoticed."""

    model_config = ConfigDict(extra="forbid")

    brief: str = Field(min_length=1)
    product_facts: dict[str, Any] = Field(default_factory=dict)
    brand_guide: str | None = None
    words_to_avoid: list[Term] = Field(default_factory=list, max_length=30)
    channels: list[str] | None = None
    variants: dict[str, Any] | None = None


class _BriefLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (`*name`: a few lines of them expand to billions of
    values) and with dates left as the text they are (a fact like `launch: 2026-12-01` stays
    what the marketer wrote, and JSON can carry it)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "a brief cannot use YAML aliases (*name); write the value out", mark
            )
        return super().compose_node(parent, index)


_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_BriefLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _as_text(loader: _BriefLoader, node: yaml.Node) -> Any:
    return loader.construct_yaml_str(node)


_BriefLoader.add_constructor(_TIMESTAMP, _as_text)  # an explicit `!!timestamp` too


def parse_brief(text: str, name: str) -> BriefFile:
    """The brief in `text`, read from the file `name`: its fields when `name` ends in .yaml,
    .yml or .json, else the text itself is the brief. BriefError (422) saying what is wrong."""
    suffix = Path(name).suffix.lower()
    if suffix not in STRUCTURED:
        if not text.strip():
            raise BriefError(f"{name} is empty: write the brief in it")
        return BriefFile(brief=text.strip())
    try:
        # JSON not as YAML: a JSON file indented with tabs is not YAML
        json_file = suffix == ".json"
        data = json.loads(text) if json_file else yaml.load(text, Loader=_BriefLoader)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: bad JSON; `!!int abc`
        raise BriefError(f"{name} is not valid {suffix[1:].upper()}: {exc}") from None
    except RecursionError:
        raise BriefError(f"{name} is nested too deeply to be a brief") from None
    if not isinstance(data, dict):
        raise BriefError(f"{name}: expected a mapping with the keys {FIELDS}; found "
                         f"{'nothing' if data is None else type(data).__name__}")  # fmt: skip
    try:
        return BriefFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise BriefError(f"{name}: {problems} (expected keys: {FIELDS})") from None


def load_brief(source: str) -> BriefFile:
    """A brief from a .yaml/.json file (keys brief, product_facts, brand_guide, ...), a text
    file, or the text itself. A missing file that looks like a path is an error, not text."""
    path = Path(source).expanduser()
    try:
        is_file = len(source) < 4096 and "\n" not in source and path.is_file()
    except OSError:  # a long text is not a valid path
        is_file = False
    if not is_file:
        if not source.strip():
            raise BriefError("the brief is empty")
        if " " not in source and path.suffix.lower() in (*STRUCTURED, *TEXT):
            raise BriefError(f"no such file: {source}")  # a mistyped path, not a brief
        return BriefFile(brief=source.strip())
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BriefError(f"cannot read {path}: {exc}") from None
    return parse_brief(text, str(path))


__all__ = ["BriefFile", "load_brief", "parse_brief"]
