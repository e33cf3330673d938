"""scripts/e2e.py end to end: a real gateway server, the pipeline over HTTP, mock mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "e2e.py"
BRIEF = (
    "다온 녹차의 제주 첫물 녹차 출시. 대상은 오후의 여유를 찾는 30대 직장인. "
    "설탕 무첨가를 알리고 인스타그램과 카카오로 온라인몰 첫 구매를 늘리고 싶다. 톤은 차분하게."
)
# the catalogue lacks strategist/plan, so that step gets 404 route_not_found
NO_STRATEGIST = """
    version: 1
    tasks:
      brief: [analyze]
      brand: [profile]
      copywriter: [channel_copy, revise]
      vision_generator: [concepts]
      reviewer: [review]
    modes:
      mock:
        default:
          - {provider: mock, model: mock-v1}
    media:
      modes:
        mock:
          default:
            - {provider: mock, model: mock-image-v1}
"""


def run_e2e(
    tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the script from an empty folder (so no .env is read), in mock mode."""
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k != "LLM_ROUTING_FILE"}
    environ.update(GENERATOR_MODE="mock", SPARKLIO_HOME=str(tmp_path / "home"),
                   ALLOW_REMOTE_CALLS="false", **env)  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=50,
        check=False,
    )
    return result, time.perf_counter() - started


@pytest.mark.timeout(60)
def test_mock_run_passes_every_step(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result, took = run_e2e(tmp_path, "--brief", BRIEF, "--out", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # the steps table: step, role/task, provider, model, latency, tokens, attempts, result
    rows = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in result.stdout.splitlines()
        if line.startswith("│")
    ]
    steps = {row[0]: row[-1] for row in rows if len(row) == 8}
    for step in ("brief", "brand", "strategist", "concepts", "review", "image:1"):
        assert steps.get(step) == "passed", f"{step!r} not passed in:\n{output}"
    assert any(name.startswith("copywriter:") for name in steps), output
    assert set(steps.values()) == {"passed"}, output
    assert "FAILED" not in output
    assert "e2e passed" in result.stdout
    assert (out / "campaign.html").is_file() and list((out / "images").glob("*.png")), output
    assert took < 10, f"the mock e2e run took {took:.1f} s (target: 5 s)\n{output}"


@pytest.mark.timeout(60)
def test_failing_step_exits_1_and_names_it(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text(textwrap.dedent(NO_STRATEGIST).lstrip(), encoding="utf-8")
    result, _ = run_e2e(tmp_path, "--brief", BRIEF, LLM_ROUTING_FILE=str(routing))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FAILED at step strategist" in output
    assert "route_not_found" in output
