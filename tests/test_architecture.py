"""The work order's rules, checked on the code itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT / "sparklio" / "agents"
#: What an agent may import from Sparklio: the gateway clients, the errors they raise, and
#: the agents' own models.
ALLOWED = ("sparklio.agents", "sparklio.services.clients", "sparklio.exceptions")
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
            if top == "sparklio" and not name.startswith(ALLOWED):
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


#: Still reads the old names through AppState's read-through (the lead moves it to the
#: services object with the CLI's in-process helper).
APP_STATE_PENDING = {"sparklio/cli.py"}


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
        if str(path.relative_to(ROOT)) not in APP_STATE_PENDING
        for read in app_state_reads(path)
    )
    assert hits == ["sparklio/api/deps.py: app.state.services"]


def test_the_app_state_check_itself_sees_a_read(tmp_path: Path) -> None:
    code = tmp_path / "endpoint.py"
    code.write_text("gw = request.app.state.gateway\nid = request.state.request_id\n")
    assert app_state_reads(code) == ["request.app.state.gateway"]


def test_api_modules_import_no_helpers_from_each_other() -> None:
    """Endpoint modules take shared helpers from the modules whose job they are."""
    allowed = ("sparklio.api.deps", "sparklio.api.auth", "sparklio.api.responses",
               "sparklio.api.errors")  # fmt: skip
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
