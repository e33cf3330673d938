"""The routing file: the endpoints (`providers`), and which endpoint and model serve each
(role, task), per generator mode, for model calls (`modes`) and images (`media.modes`).

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
from sparklio.wire.llm import NAME_PATTERN

NAME_RE = re.compile(NAME_PATTERN)
#: Endpoint names may also have '-' and '.': `ollama-desktop`, `vllm.gpu2`.
ENDPOINT_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
ENDPOINT_RE = re.compile(ENDPOINT_PATTERN)
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
WILDCARD = "*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointSpec(BaseModel):
    """One server, under the routing file's `providers` section, by its name:
    `ollama-desktop: {kind: ollama, base_url: http://desktop:11434, max_concurrency: 2}`.

    An entry named after a kind (`ollama`, `llamacpp`...) changes that kind's default
    endpoint, which the settings (`OLLAMA_BASE_URL`...) define. Keys beyond these are the
    kind's own settings (e.g. llamacpp's `models`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str | None = Field(default=None, min_length=1)
    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    api_key_env: str | None = Field(
        default=None, pattern=ENV_NAME,
        description="The environment variable that holds the key (never the key itself).",
    )  # fmt: skip
    timeout: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_queue: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _no_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("api_key" in data or "key" in data):
            raise ValueError(
                "a key never goes in the routing file: name the environment variable that "
                "holds it, e.g. api_key_env: OPENAI_API_KEY"
            )
        return data

    @property
    def settings(self) -> dict[str, Any]:
        """The kind's own settings: every key this model does not know."""
        return dict(self.model_extra or {})


class _Targets(_Strict):
    """Where a candidate may be sent: one endpoint or kind (`provider`), or several endpoints
    that serve the same model (`endpoints`: the call goes to the least busy healthy one)."""

    provider: str | None = Field(default=None, min_length=1)
    endpoints: tuple[str, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_way(self) -> Any:
        if (self.provider is None) == (self.endpoints is None):
            raise ValueError(
                "a candidate names either `provider` (one endpoint or kind) or `endpoints` "
                "(a list of endpoints that serve the model), not both and not neither"
            )
        if self.endpoints is not None and len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError(f"endpoints lists a name twice: {list(self.endpoints)}")
        return self

    @property
    def targets(self) -> tuple[str, ...]:
        """The endpoint (or kind) names this candidate may go to, in the file's order."""
        return self.endpoints if self.endpoints is not None else (self.provider or "",)

    @property
    def where(self) -> str:
        return self.provider or "|".join(self.endpoints or ())


class Candidate(_Targets):
    """One model that can serve a route, where it runs, and options for it."""

    model: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    def label_on(self, endpoint: str) -> str:
        return f"{endpoint}/{self.model}"

    @property
    def label(self) -> str:
        return self.label_on(self.where)


class MediaCandidate(_Targets):
    """One media workflow that can serve a route, where it runs, with the workflow's
    parameters (checkpoint, steps, cfg, sampler, scheduler, default width and height...).
    `model` defaults to the checkpoint, else the workflow, so reports name what rendered."""

    model: str = Field(min_length=1)
    workflow: str | None = Field(default=None, min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _model_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model"):
            params = data.get("params") or {}
            name = params.get("checkpoint") if isinstance(params, dict) else None
            fallback = data.get("provider") or "|".join(data.get("endpoints") or ())
            data = {**data, "model": str(name or data.get("workflow") or fallback)}
        return data

    def label_on(self, endpoint: str) -> str:
        return f"{endpoint}/{self.workflow or self.model}"

    @property
    def label(self) -> str:
        return self.label_on(self.where)


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
    cache_ttl: float | None = Field(
        default=None, ge=0,
        description="Seconds this route's answers stay in the response cache; 0: never cached.",
    )  # fmt: skip

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
    cache_ttl: float | None = Field(
        default=None, ge=0,
        description="Seconds answers stay in the response cache, for the default chain and "
        "every rule without its own cache_ttl (else CACHE_TTL); 0: never cached.",
    )  # fmt: skip


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
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Model names for the OpenAI-compatible API: alias -> 'role/task'.",
    )
    media: MediaRouting | None = None
    prices: dict[str, dict[str, Price]] = Field(
        default_factory=dict,
        description="USD per million tokens, by provider and model; unlisted models cost 0.",
    )

    def cost(
        self, names: Iterable[str | None], model: str | None, prompt: int, completion: int
    ) -> float:
        """Estimated cost of a call in USD (0 for local and unlisted models), priced under
        the first of `names` (the endpoint, then its kind) that lists the model."""
        for name in names:
            price = self.prices.get(name or "", {}).get(model or "")
            if price is not None:
                return (prompt * price.input + completion * price.output) / 1_000_000
        return 0.0

    providers: dict[str, EndpointSpec] = Field(
        default_factory=dict,
        description="The endpoints, by name: each of a kind, with its base URL, key (by "
        "environment variable), timeout and concurrency.",
    )

    @field_validator("providers")
    @classmethod
    def _endpoint_names(cls, value: dict[str, EndpointSpec]) -> dict[str, EndpointSpec]:
        for name in value:
            if not ENDPOINT_RE.match(name):
                raise ValueError(
                    f"endpoint names are lowercase letters, digits, '_', '-' and '.' (got {name!r})"
                )
        return value

    def kind_of(self, name: str) -> str:
        """The kind of endpoint `name` (a name with no entry is a kind's default endpoint)."""
        spec = self.providers.get(name)
        return (spec.kind if spec is not None else None) or name

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for role, tasks in (value or {}).items():
            for name in (role, *tasks):
                if not NAME_RE.match(name):
                    raise ValueError(f"role and task names must be lowercase names (got {name!r})")
        return value

    def models_by_endpoint(self) -> dict[str, list[str]]:
        """Every LLM endpoint (or kind) named anywhere in the file, with its models."""
        return models_by_endpoint(self.modes.values())

    def endpoint_names(self, kinds: Collection[str]) -> list[str]:
        """The endpoints of the `providers` section whose kind is one of `kinds`."""
        return [name for name in self.providers if self.kind_of(name) in kinds]


def models_by_endpoint(sections: Iterable[ModeRoutes[Any]]) -> dict[str, list[str]]:
    """Every endpoint (or kind) the sections' candidates name, with its models in order."""
    found: dict[str, list[str]] = {}
    for routes in sections:
        chains = [routes.default or [], *(rule.candidates for rule in routes.rules)]
        for chain in chains:
            for candidate in chain:
                for target in candidate.targets:
                    models = found.setdefault(target, [])
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
    kinds = sorted({*known, *known_media})
    for name, spec in routing.providers.items():
        if spec.kind is None and name not in kinds:
            problems.append(
                f"{_where(node, ('providers', name))}: endpoint {name!r} needs a kind (one of: "
                f"{', '.join(kinds)}), e.g. {name}: {{kind: ollama, base_url: http://host:11434}}"
            )
        elif spec.kind is not None and spec.kind not in kinds:
            problems.append(
                f"{_where(node, ('providers', name, 'kind'))}: unknown provider kind "
                f"{spec.kind!r}; expected one of: {', '.join(kinds)}"
            )
    for alias, target in routing.aliases.items():
        role, _, task = target.partition("/")
        catalogue = routing.tasks
        if not (NAME_RE.match(role) and NAME_RE.match(task)) or (
            catalogue is not None and task not in catalogue.get(role, ())
        ):
            problems.append(
                f"{_where(node, ('aliases', alias))}: alias {alias!r} must name a role/task "
                f"the file serves (got {target!r})"
            )
    llm = [*known, *routing.endpoint_names(known)]
    sections: list[tuple[tuple[str, ...], Any, Collection[str], dict[str, list[str]] | None]] = [
        (("modes",), routing.modes, llm, routing.tasks)
    ]
    if routing.media is not None:
        media = [*known_media, *routing.endpoint_names(known_media)]
        sections.append((("media", "modes"), routing.media.modes, media, None))
        problems.extend(_media_cache_problems(routing.media.modes, node))
    for prefix, modes, names, catalogue in sections:
        for mode, routes in modes.items():
            problems.extend(_section_problems((*prefix, mode), routes, node, names, catalogue))
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
            key = "provider" if candidate.provider is not None else "endpoints"
            for target in candidate.targets:
                if target not in known:
                    problems.append(
                        f"{_where(node, (*loc, j, key))}: unknown provider {target!r}; expected "
                        f"an endpoint or kind: {', '.join(sorted(known))}"
                    )
    return problems


def _media_cache_problems(modes: dict[Any, ModeRoutes[Any]], node: yaml.Node | None) -> list[str]:
    """cache_ttl is for model calls: images are never cached."""
    found: list[tuple[Any, ...]] = []
    for mode, routes in modes.items():
        if routes.cache_ttl is not None:
            found.append(("media", "modes", mode, "cache_ttl"))
        found += [("media", "modes", mode, "rules", i, "cache_ttl")
                  for i, rule in enumerate(routes.rules) if rule.cache_ttl is not None]  # fmt: skip
    return [f"{_where(node, loc)}: cache_ttl applies to model calls only; images are never "
            "cached: remove it" for loc in found]  # fmt: skip


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
