"""The routing file: which provider and model serve each (role, task), per generator mode.

It loads into pydantic models with `extra="forbid"`, so a typo fails at start with a message
that names the file, the line, the key and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparklio.exceptions import ConfigError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
WILDCARD = "*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Candidate(_Strict):
    """One provider and model that can serve a route, with options for it."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


class MediaCandidate(_Strict):
    """One media provider and workflow that can serve a route, with the workflow's
    parameters (checkpoint, steps, cfg, sampler, scheduler, default width and height...).
    `model` defaults to the checkpoint, else the workflow, so reports name what rendered."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    workflow: str | None = Field(default=None, min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _model_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model"):
            params = data.get("params") or {}
            name = params.get("checkpoint") if isinstance(params, dict) else None
            data = {**data, "model": str(name or data.get("workflow") or data.get("provider"))}
        return data

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.workflow or self.model}"


C = TypeVar("C", Candidate, MediaCandidate)


def _check_name(value: str, what: str) -> str:
    if value != WILDCARD and not NAME_RE.match(value):
        raise ValueError(
            f"{what} must be '*' or a lowercase name of letters, digits and '_' (got {value!r})"
        )
    return value


class Rule(_Strict, Generic[C]):
    """Candidates for a role and task; either may be '*'."""

    role: str
    task: str
    candidates: list[C] = Field(min_length=1)

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        return _check_name(value, "role")

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        return _check_name(value, "task")

    @property
    def name(self) -> str:
        return f"{self.role}/{self.task}"


class ModeRoutes(_Strict, Generic[C]):
    """The routes of one generator mode: a default chain and rules that beat it."""

    default: list[C] | None = Field(default=None, min_length=1)
    rules: list[Rule[C]] = Field(default_factory=list)


Mode = Literal["mock", "live"]


class Price(_Strict):
    """What a model costs, in USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class MediaRouting(_Strict):
    """The routing file's `media` section: image routes, per generator mode."""

    modes: dict[Mode, ModeRoutes[MediaCandidate]]


class RoutingFile(_Strict):
    """The whole routing file."""

    version: Literal[1]
    tasks: dict[str, list[str]] | None = Field(
        default=None,
        description="Optional catalogue of the roles and tasks the gateway serves; "
        "calls for anything else get 404.",
    )
    modes: dict[Mode, ModeRoutes[Candidate]]
    media: MediaRouting | None = None
    prices: dict[str, dict[str, Price]] = Field(
        default_factory=dict,
        description="USD per million tokens, by provider and model; unlisted models cost 0.",
    )

    def cost(self, provider: str | None, model: str | None, prompt: int, completion: int) -> float:
        """Estimated cost of a call in USD (0 for local and unlisted models)."""
        price = self.prices.get(provider or "", {}).get(model or "")
        if price is None:
            return 0.0
        return (prompt * price.input + completion * price.output) / 1_000_000

    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Settings for a provider, by vendor name (e.g. llamacpp's model catalogue).",
    )

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for role, tasks in (value or {}).items():
            for name in (role, *tasks):
                if not NAME_RE.match(name):
                    raise ValueError(f"role and task names must be lowercase names (got {name!r})")
        return value

    def models_by_provider(self) -> dict[str, list[str]]:
        """Every LLM provider named anywhere in the file, with the models named for it."""
        return models_by_provider(self.modes.values())


def models_by_provider(sections: Iterable[ModeRoutes[Any]]) -> dict[str, list[str]]:
    """Every provider the sections' defaults and rules name, with its models in order."""
    found: dict[str, list[str]] = {}
    for routes in sections:
        chains = [routes.default or [], *(rule.candidates for rule in routes.rules)]
        for chain in chains:
            for candidate in chain:
                models = found.setdefault(candidate.provider, [])
                if candidate.model not in models:
                    models.append(candidate.model)
    return found


def routing_path(settings_file: Path | None) -> Path:
    """LLM_ROUTING_FILE when set, else the shipped file."""
    return settings_file or shipped_routing_file()


def shipped_routing_file() -> Path:
    """The routing file that ships inside the package."""
    return Path(str(resources.files("sparklio.services.llm") / "routing.yaml"))


def load_routing_file(
    path: Path, known_providers: Collection[str], known_media: Collection[str] = ()
) -> RoutingFile:
    """Read and validate a routing file; any problem raises ConfigError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Routing file {path}: cannot be read ({exc.strerror}). Set LLM_ROUTING_FILE to an "
            "existing file, or unset it to use the shipped one."
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Routing file {path}: not valid YAML: {exc}") from None
    try:
        routing = RoutingFile.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_where(node, err['loc'])}: {_explain(err)}" for err in exc.errors(include_url=False)
        ]
        raise ConfigError(f"Routing file {path} is invalid:\n  " + "\n  ".join(problems)) from None
    _check_references(routing, path, node, known_providers, known_media)
    return routing


def _check_references(
    routing: RoutingFile,
    path: Path,
    node: yaml.Node | None,
    known: Collection[str],
    known_media: Collection[str],
) -> None:
    problems: list[str] = []
    sections: list[tuple[tuple[str, ...], Any, Collection[str], dict[str, list[str]] | None]] = [
        (("modes",), routing.modes, known, routing.tasks)
    ]
    if routing.media is not None:
        sections.append((("media", "modes"), routing.media.modes, known_media, None))
    for prefix, modes, names, catalogue in sections:
        for mode, routes in modes.items():
            problems.extend(_section_problems((*prefix, mode), routes, node, names, catalogue))
    for name in routing.providers:
        if name not in {*known, *known_media}:
            problems.append(
                f"{_where(node, ('providers', name))}: unknown provider {name!r}; expected one "
                f"of: {', '.join(sorted({*known, *known_media}))}"
            )
    if problems:
        raise ConfigError(f"Routing file {path} is invalid:\n  " + "\n  ".join(problems))


def _section_problems(
    prefix: tuple[str, ...],
    routes: ModeRoutes[Any],
    node: yaml.Node | None,
    known: Collection[str],
    catalogue: dict[str, list[str]] | None,
) -> list[str]:
    problems: list[str] = []
    chains: list[tuple[tuple[Any, ...], list[Any]]] = []
    if routes.default:
        chains.append(((*prefix, "default"), routes.default))
    seen: set[str] = set()
    for i, rule in enumerate(routes.rules):
        loc: tuple[Any, ...] = (*prefix, "rules", i)
        chains.append(((*loc, "candidates"), rule.candidates))
        if rule.name in seen:
            problems.append(f"{_where(node, loc)}: rule {rule.name} appears twice in {prefix[-1]}")
        seen.add(rule.name)
        problems.extend(_catalogue_problems(catalogue, rule, _where(node, loc)))
    for loc, chain in chains:
        for j, candidate in enumerate(chain):
            if candidate.provider not in known:
                problems.append(
                    f"{_where(node, (*loc, j, 'provider'))}: unknown provider "
                    f"{candidate.provider!r}; expected one of: {', '.join(sorted(known))}"
                )
    return problems


def _catalogue_problems(
    tasks: dict[str, list[str]] | None, rule: Rule[Any], where: str
) -> list[str]:
    if tasks is None:
        return []
    if rule.role != WILDCARD and rule.role not in tasks:
        return [f"{where}: role {rule.role!r} is not in 'tasks'; expected one of {sorted(tasks)}"]
    if rule.task == WILDCARD:
        return []
    roles = [rule.role] if rule.role != WILDCARD else list(tasks)
    if not any(rule.task in tasks[r] for r in roles):
        return [f"{where}: task {rule.task!r} is not listed under 'tasks' for {rule.role!r}"]
    return []


def _explain(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key; remove it or check its spelling"
    if err["type"] == "missing":
        return "required key is missing"
    return f"{err['msg']} (got {err.get('input')!r})"


def _where(node: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    """`line N, key a.b.c` for a pydantic error location inside the YAML node tree."""
    key = ".".join(str(part) for part in loc) or "(top level)"
    if node is None:
        return f"key {key}"
    line = node.start_mark.line
    for part in loc:
        step = _child(node, part)
        if step is None:  # a missing key: report its parent
            break
        line, node = step
    return f"line {line + 1}, key {key}"


def _child(node: yaml.Node, part: Any) -> tuple[int, yaml.Node] | None:
    """(line, node) of one step down the YAML tree: a mapping's key or a sequence's item."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == str(part):
                return key_node.start_mark.line, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item = node.value[part]
        return item.start_mark.line, item
    return None
