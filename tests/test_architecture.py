"""The work order's rules, checked on the code itself."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sparklio"
AGENTS = PACKAGE / "agents"
#: What an agent may import from Sparklio: the gateway clients, the wire types and errors
#: they speak, and the agents' own models.
ALLOWED = ("sparklio.agents", "sparklio.services.clients", "sparklio.exceptions", "sparklio.wire")
#: Model-server libraries and HTTP clients: agents reach models through the gateway only.
FORBIDDEN = (
    "httpx",
    "aiohttp",
    "requests",
    "urllib3",
    "openai",
    "anthropic",
    "ollama",
    "llama_cpp",
    "transformers",
    "litellm",
)


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_agents_import_only_the_gateway_clients_and_their_own_models() -> None:
    files = sorted(AGENTS.glob("*.py"))
    assert len(files) >= 7  # the six agents and the pipeline
    problems = []
    for path in files:
        for name in imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN:
                problems.append(f"{path.name} imports {name}")
            if top == "sparklio" and not _within(name, ALLOWED):
                problems.append(f"{path.name} imports {name}, not a gateway client")
    assert problems == []


def test_the_check_itself_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad_agent.py"
    bad.write_text("import httpx\nfrom sparklio.services.llm.providers.ollama import X\n")
    assert imports(bad) == ["httpx", "sparklio.services.llm.providers.ollama"]


def test_no_model_name_in_python_code() -> None:
    """Model names live in the routing file and catalogue, never in code (tests aside)."""
    pattern = re.compile(
        r"[\"'](qwen[0-9.:a-z-]*|llama[0-9.]+[:a-z0-9-]*|gpt-[0-9a-z.-]+|claude-[a-z0-9.-]+|"
        r"smollm[0-9a-z.-]*|gemma[0-9a-z.:-]*|sd_xl[\w.-]*|v1-5[\w.-]*)[\"']",
        re.IGNORECASE,
    )
    hits = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in (ROOT / "sparklio").rglob("*.py")
        for match in pattern.finditer(path.read_text(encoding="utf-8"))
    ]
    assert hits == []


# -- the never-arrows: which part of Sparklio may import which --------------------------------


@dataclass(frozen=True)
class Module:
    source: str
    is_package: bool = False


def _within(name: str, packages: tuple[str, ...]) -> bool:
    """Whether module `name` is one of `packages` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def our_modules() -> dict[str, Module]:
    """Every module of the package, by its dotted name."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = Module(path.read_text(encoding="utf-8"), is_package)
    return modules


def sparklio_imports(name: str, module: Module) -> set[str]:
    """What of ours module `name` imports, wherever in the file (in functions and
    TYPE_CHECKING blocks too), relative imports resolved; `from a import b` counts as `a` and
    `a.b`, since b may be a module."""
    found: set[str] = set()
    package = name.split(".") if module.is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(module.source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            imported = ".".join([*base, *([node.module] if node.module else [])])
            found.add(imported)
            found.update(f"{imported}.{alias.name}" for alias in node.names)
    return {m for m in found if _within(m, ("sparklio",))}


@dataclass(frozen=True)
class Rule:
    """Modules within `scope` may import only what `allowed` accepts."""

    name: str
    scope: tuple[str, ...]
    allowed: Callable[[str], bool]
    #: a module that breaks the rule and one that keeps it, for the checker's own test
    bad: tuple[str, str]
    good: tuple[str, str]


def _from_the_package(imported: str) -> bool:
    """`sparklio` itself or a name it re-exports (the clients and the exceptions): not one of
    its modules, such as `from sparklio import services`."""
    top, _, name = imported.partition(".")
    path = PACKAGE / name
    is_module = bool(name) and (path.with_suffix(".py").is_file() or path.is_dir())
    return top == "sparklio" and "." not in name and not is_module


def _only(*packages: str) -> Callable[[str], bool]:
    return lambda imported: _within(imported, packages)


def _never(*packages: str, files: tuple[str, ...] = ()) -> Callable[[str], bool]:
    """Anything but `packages` and the modules named `files` (gateway.py, router.py)."""

    def allowed(imported: str) -> bool:
        last = imported.rsplit(".", 1)[-1]
        path = ROOT.joinpath(*imported.split(".")).with_suffix(".py")
        return not _within(imported, packages) and not (last in files and path.is_file())

    return allowed


RULES = [
    Rule(
        "agents reach models through the clients only",
        ("sparklio.agents",),
        lambda imported: _within(imported, ALLOWED) or _from_the_package(imported),
        ("sparklio.agents.bad", "from sparklio import services, LLMGatewayClient"),
        ("sparklio.agents.good", "from sparklio import LLMGatewayClient, wire"),
    ),
    Rule(
        "clients import wire types, exceptions and their own modules only",
        ("sparklio.services.clients",),
        _only("sparklio.services.clients", "sparklio.wire", "sparklio.exceptions"),
        ("sparklio.services.clients.bad", "from sparklio.core.config import load_settings"),
        ("sparklio.services.clients.good", "from .base import X\nfrom sparklio.wire import Y"),
    ),
    Rule(
        "wire types import the exceptions only",
        ("sparklio.wire",),
        _only("sparklio.wire", "sparklio.exceptions"),
        ("sparklio.wire.bad", "from ..services.llm.providers.base import LLMProviderResponse"),
        ("sparklio.wire.good", "from .llm import NAME_PATTERN\nimport sparklio.exceptions"),
    ),
    Rule(
        "services never import the API",
        ("sparklio.services",),
        _never("sparklio.api"),
        ("sparklio.services.bad", "def f():\n    from sparklio.api import errors"),
        ("sparklio.services.good", "from sparklio.db.models import MediaJobRow"),
    ),
    Rule(
        "core imports nothing of ours but the exceptions",
        ("sparklio.core",),
        _only("sparklio.core", "sparklio.exceptions"),
        ("sparklio.core.bad", "from sparklio.exceptions import X\nfrom sparklio import services"),
        ("sparklio.core.good", "from sparklio.exceptions import X\nfrom . import files"),
    ),
    Rule(
        "providers know no endpoint, database, gateway or router of ours",
        ("sparklio.services.llm.providers", "sparklio.services.media.providers"),
        _never("sparklio.api", "sparklio.db", files=("gateway", "router", "attempts", "endpoints")),
        ("sparklio.services.llm.providers.bad", "from sparklio.services.llm import router"),
        ("sparklio.services.llm.providers.good", "from sparklio.services.gateway.http import X"),
    ),
]


def violations(rule: Rule, modules: Mapping[str, Module]) -> list[str]:
    return sorted(
        f"{name} imports {imported}"
        for name, module in modules.items()
        if _within(name, rule.scope)
        for imported in sparklio_imports(name, module)
        if not rule.allowed(imported)
    )


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_never_arrows(rule: Rule) -> None:
    modules = our_modules()
    assert any(_within(name, rule.scope) for name in modules)  # the rule checks something
    assert violations(rule, modules) == []


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_the_never_arrow_checker_catches_a_violation(rule: Rule) -> None:
    (bad, bad_source), (good, good_source) = rule.bad, rule.good
    assert violations(rule, {bad: Module(bad_source)}) != []
    assert violations(rule, {good: Module(good_source)}) == []


def test_relative_imports_resolve_from_modules_and_packages() -> None:
    from_module = sparklio_imports("sparklio.wire.llm", Module("from .media import X"))
    from_package = sparklio_imports("sparklio.wire", Module("from .media import X", True))
    up_two = sparklio_imports("sparklio.wire.llm", Module("from ..db import models"))
    assert from_module == from_package == {"sparklio.wire.media", "sparklio.wire.media.X"}
    assert up_two == {"sparklio.db", "sparklio.db.models"}


#: Still reads the old names through AppState's read-through (the lead moves it to the
#: services object with the CLI's in-process helper).


def app_state_reads(path: Path) -> list[str]:
    """Each `<x>.state.<name>` in the code, `request.state` (the request's own) aside."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "state"
            and not (isinstance(node.value.value, ast.Name) and node.value.value.id == "request")
        ):
            found.append(ast.unparse(node))
    return found


def test_only_the_dependencies_read_the_app_state() -> None:
    """Endpoints, dependencies and handlers reach what create_app built through the aliases
    and `services_of` of sparklio.api.deps, never through `app.state` themselves."""
    hits = sorted(
        f"{path.relative_to(ROOT)}: {read}"
        for path in (ROOT / "sparklio").rglob("*.py")
        for read in app_state_reads(path)
    )
    # install_services stores it, services_of reads it
    assert hits == ["sparklio/api/deps.py: app.state.services"] * 2


def test_the_app_state_check_itself_sees_a_read(tmp_path: Path) -> None:
    code = tmp_path / "endpoint.py"
    code.write_text("gw = request.app.state.gateway\nid = request.state.request_id\n")
    assert app_state_reads(code) == ["request.app.state.gateway"]


def test_api_modules_import_no_helpers_from_each_other() -> None:
    """Endpoint modules take shared helpers from the modules whose job they are."""
    allowed = ("sparklio.api.deps", "sparklio.api.auth", "sparklio.api.responses",
               "sparklio.api.errors", "sparklio.api.budgets", "sparklio.api.session")  # fmt: skip
    endpoints = sorted((ROOT / "sparklio" / "api" / "v1" / "endpoints").glob("*.py"))
    assert len(endpoints) >= 5
    problems = [
        f"{path.name} imports {name}"
        for path in endpoints
        for name in imports(path)
        if name.startswith("sparklio.api") and not name.startswith(allowed)
    ]
    problems += [f"errors.py imports {name}" for name in imports(ROOT / "sparklio/api/errors.py")
                 if name == "sparklio.api.middleware"]  # fmt: skip
    assert problems == []
