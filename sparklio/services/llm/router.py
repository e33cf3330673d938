"""The LLM router: the shared Router over the routing file's `modes`, held to its task
catalogue (`tasks`), so a call for a task nobody serves is a 404 that lists the known ones."""

from __future__ import annotations

from pathlib import Path

from sparklio.core.config import GeneratorMode
from sparklio.exceptions import RouteNotFoundError
from sparklio.services.gateway.router import Route, Router
from sparklio.services.gateway.routing import Candidate, RoutingFile

__all__ = ["LLMRouter", "Route"]


class LLMRouter(Router[Candidate]):
    """Routes (role, task) to LLM candidates in one generator mode."""

    def __init__(self, routing: RoutingFile, mode: GeneratorMode, *, path: Path | None = None):
        super().__init__(routing.modes, mode, path=path)
        self.catalogue = routing.tasks

    def route(self, role: str, task: str) -> Route[Candidate]:
        if self.catalogue is not None and task not in self.catalogue.get(role, ()):
            raise RouteNotFoundError(
                f"Unknown role/task {role}/{task}: the routing file lists no such task. "
                f"Known tasks: {', '.join(self.known_tasks())}.",
                details={"role": role, "task": task, "known": self.known_tasks()},
            )
        return super().route(role, task)

    def known_tasks(self) -> list[str]:
        """'role/task' for every task in the catalogue, or the rules when there is none."""
        if self.catalogue is not None:
            return [f"{r}/{t}" for r, tasks in self.catalogue.items() for t in tasks]
        return super().known_tasks()
