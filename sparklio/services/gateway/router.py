"""The Router: picks the candidates for a (role, task) in the current generator mode, for
model calls and images alike (the LLM's adds its task catalogue: services/llm/router.py).

Precedence: an exact role and task beats role + '*', which beats '*' + task, which beats
'*' + '*', which beats the mode's `default`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic

from sparklio.core.config import GeneratorMode
from sparklio.exceptions import ConfigError, RouteNotFoundError
from sparklio.services.gateway.routing import WILDCARD, C, ModeRoutes, models_by_endpoint


@dataclass(frozen=True, slots=True)
class Route(Generic[C]):
    """The outcome of routing: the rule that matched and its candidates, primary first."""

    rule: str
    candidates: tuple[C, ...]
    #: seconds its answers stay in the response cache (the routing file's cache_ttl, of the
    #: rule, else of the mode); None: CACHE_TTL
    cache_ttl: float | None = None


class Router(Generic[C]):
    """Routes (role, task) to candidates for one generator mode of a routing section
    (`modes` for model calls, `media.modes` for images)."""

    def __init__(
        self,
        modes: Mapping[Any, ModeRoutes[C]],
        mode: GeneratorMode,
        *,
        path: Path | None = None,
        section: str = "modes",
    ) -> None:
        routes = modes.get(mode)
        if routes is None:
            raise ConfigError(
                f"The routing file has no section for GENERATOR_MODE={mode!r} under "
                f"'{section}'; it has: {', '.join(modes) or 'none'}."
            )
        self.mode = mode
        self.path = path
        self._routes: ModeRoutes[C] = routes
        self._rules: dict[tuple[str, str], Route[C]] = {
            # a rule's cache_ttl, else its mode's (None: CACHE_TTL)
            (rule.role, rule.task): Route(
                rule.name,
                tuple(rule.candidates),
                rule.cache_ttl if rule.cache_ttl is not None else routes.cache_ttl,
            )
            for rule in routes.rules
        }
        self._default: Route[C] | None = (
            Route("default", tuple(routes.default), routes.cache_ttl) if routes.default else None
        )

    def models_by_endpoint(self) -> dict[str, list[str]]:
        """The endpoints (or kinds) this mode routes to, with their models."""
        return models_by_endpoint([self._routes])

    def route(self, role: str, task: str) -> Route[C]:
        """The route for (role, task); RouteNotFoundError when nothing covers it."""
        rules = self._rules
        route = (
            rules.get((role, task))
            or rules.get((role, WILDCARD))
            or rules.get((WILDCARD, task))
            or rules.get((WILDCARD, WILDCARD))
            or self._default
        )
        if route is None:
            known = [r.rule for r in self._rules.values()]
            raise RouteNotFoundError(
                f"No route for {role}/{task} in {self.mode} mode: no rule matches and there is "
                f"no default. Known routes: {', '.join(known) or 'none'}.",
                details={"role": role, "task": task, "known": known},
            )
        return route

    def candidates(self) -> list[C]:
        """Every candidate of this mode, in the file's order (repeats included)."""
        found: list[C] = list(self._routes.default or [])
        for rule in self._routes.rules:
            found.extend(rule.candidates)
        return found

    def known_tasks(self) -> list[str]:
        """'role/task' for every rule."""
        return [route.rule for route in self._rules.values()]

    def table(self) -> list[dict[str, Any]]:
        """The effective routing table of this mode, most specific rules first."""

        def specificity(item: tuple[tuple[str, str], Route[C]]) -> tuple[int, tuple[str, str]]:
            (role, task), _ = item
            return (role == WILDCARD) * 2 + (task == WILDCARD), (role, task)

        rows = [
            (route.rule, role, task, route.candidates)
            for (role, task), route in sorted(self._rules.items(), key=specificity)
        ]
        if self._default is not None:
            rows.append(("default", WILDCARD, WILDCARD, self._default.candidates))
        return [
            {
                "rule": rule,
                "role": role,
                "task": task,
                "candidates": [c.model_dump(exclude_none=True) for c in candidates],
            }
            for rule, role, task, candidates in rows
        ]
