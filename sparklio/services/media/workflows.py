"""ComfyUI workflow templates: API-format JSON graphs with `{{placeholders}}`.

Shipped templates live in `sparklio/services/media/workflows/`; a file dropped into
WORKFLOWS_DIR adds one (or replaces a shipped one of the same name) and is routed by its stem
in the routing file's media section, with no code change.

Placeholders are filled in the parsed graph, not in its text: a value that is a whole
placeholder (`"{{steps}}"`) becomes the JSON value itself, so numbers stay numbers, and a
prompt with quotes or newlines cannot break the graph. A placeholder inside a longer string
(`"sparklio/{{job_id}}"`) is substituted as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from sparklio.exceptions import ConfigError, InvalidRequestError

PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_WHOLE = re.compile(r"^\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}$")


@dataclass(frozen=True)
class Workflow:
    """One template: its graph, where it came from and the placeholders it needs."""

    name: str
    path: Path
    graph: dict[str, Any]
    placeholders: frozenset[str]

    def fill(self, values: dict[str, Any]) -> dict[str, Any]:
        """The graph with every placeholder replaced; 422 naming any left unfilled."""
        missing = sorted(self.placeholders - values.keys())
        if missing:
            raise InvalidRequestError(
                f"Workflow {self.name!r} ({self.path.name}) needs "
                f"{', '.join('{{' + m + '}}' for m in missing)}, which neither the request nor "
                "the route provides: add it to the route's params in the routing file, or to "
                "the request's options.",
                details={"workflow": self.name, "missing": missing},
            )
        filled: dict[str, Any] = _fill(self.graph, values)
        return filled


def _fill(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str):
        whole = _WHOLE.match(node)
        if whole:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    return node


def _placeholders(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_placeholders(v) for v in node)) if node else set()
    if isinstance(node, str):
        return set(PLACEHOLDER.findall(node))
    return set()


class WorkflowLibrary:
    """Finds, checks and caches workflow templates by name."""

    def __init__(self, workflows_dir: Path | None = None) -> None:
        self.folders: list[Path] = []
        if workflows_dir is not None:
            if not workflows_dir.is_dir():
                raise ConfigError(
                    f"WORKFLOWS_DIR={workflows_dir} is not a folder. Point it at a folder of "
                    "ComfyUI API-format .json templates, or unset it."
                )
            self.folders.append(workflows_dir)
        self.folders.append(Path(str(resources.files("sparklio.services.media") / "workflows")))
        self._cache: dict[str, Workflow] = {}

    def names(self) -> list[str]:
        """Every workflow available, by name."""
        return sorted({p.stem for folder in self.folders for p in folder.glob("*.json")})

    def get(self, name: str) -> Workflow:
        """The workflow `name`; ConfigError if there is none or it is not a ComfyUI graph."""
        workflow = self._cache.get(name)
        if workflow is None:
            workflow = self._cache[name] = self._load(name)
        return workflow

    def _load(self, name: str) -> Workflow:
        if not re.match(r"^[A-Za-z0-9_.-]+$", name):
            raise ConfigError(f"Workflow name {name!r} must be a file name without folders.")
        path = next(
            (f / f"{name}.json" for f in self.folders if (f / f"{name}.json").is_file()), None
        )
        if path is None:
            raise ConfigError(
                f"No workflow {name!r}: looked for {name}.json in "
                f"{', '.join(str(f) for f in self.folders)}. Available: {', '.join(self.names())}."
            )
        try:
            graph = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"Workflow {path} is not valid JSON: {exc}") from None
        problems = _graph_problems(graph)
        if problems:
            raise ConfigError(
                f"Workflow {path} is not a ComfyUI API-format graph ({problems}). Export it "
                "with 'Save (API Format)' in ComfyUI."
            )
        return Workflow(name, path, graph, frozenset(_placeholders(graph)))


def _graph_problems(graph: Any) -> str:
    if not isinstance(graph, dict) or not graph:
        return "expected an object of nodes by id"
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return f"node {node_id!r} has no class_type"
        if not isinstance(node.get("inputs", {}), dict):
            return f"node {node_id!r} has inputs that are not an object"
    return ""
