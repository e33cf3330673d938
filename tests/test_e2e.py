"""scripts/e2e.py end to end, as `make e2e` runs it: real gateway servers, a campaign over the
campaigns API in mock mode, and a live campaign whose server is killed with SIGKILL midway
and started again (against a fake Ollama on 127.0.0.1)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.gateway_process import health

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
# a user's live routing whose models are the mock: what --real runs on, without paying
LIVE_ON_MOCK = """
    version: 1
    modes:
      live:
        default:
          - {provider: mock, model: mock-v1}
    media:
      modes:
        live:
          default:
            - {provider: mock, model: mock-image-v1}
"""
#: seconds for a whole run: three server starts took 25 s each on a busy 2-core machine
RUN_LIMIT = 200


def run_e2e(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the script from an empty folder (so no .env is read), in mock mode unless `env`
    says otherwise."""
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k != "LLM_ROUTING_FILE"}
    environ.update(GENERATOR_MODE="mock", SPARKLIO_HOME=str(tmp_path / "home"),
                   ALLOW_REMOTE_CALLS="false", **env)  # fmt: skip
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_LIMIT,
        check=False,
    )


def write(tmp_path: Path, routing: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(routing).lstrip(), encoding="utf-8")
    return path


def steps_table(stdout: str) -> dict[str, str]:
    """The steps table's rows: step -> result (step, role/task, provider, model, latency,
    tokens, attempts, result)."""
    rows = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]
    return {row[0]: row[-1] for row in rows if len(row) == 8}


def checks(stdout: str) -> dict[str, str]:
    """The PASS/FAIL lines: check -> PASS or FAIL."""
    found = re.findall(r"^  (PASS|FAIL)  ([^:]+):", stdout, re.MULTILINE)
    return {name: verdict for verdict, name in found}


def gateway_ports(stdout: str) -> list[int]:
    return [int(port) for port in re.findall(r"gateway (?:up|started again) at "
                                             r"http://127\.0\.0\.1:(\d+)", stdout)]  # fmt: skip


@pytest.mark.timeout(RUN_LIMIT + 20)
def test_a_campaign_over_the_api_passes_and_a_kill_9_mid_campaign_repeats_no_step(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    result = run_e2e(tmp_path, "--brief", BRIEF, "--out", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    # the campaign run: each step printed as it finished, then the table of every step
    assert re.search(r"✓ brief  \(mock/mock-v1, \d+ tokens\)", result.stdout), output
    steps = steps_table(result.stdout)
    for step in ("brief", "brand", "strategist", "concepts", "review", "image:1"):
        assert steps.get(step) == "passed", f"{step!r} not passed in:\n{output}"
    assert any(name.startswith("copywriter:") for name in steps), output
    assert set(steps.values()) == {"passed"}, output
    verdicts = checks(result.stdout)
    for name in ("events in order", "each step started and finished once",
                 "report.md names the product", "image for concept 1", "campaign time",
                 "report written"):  # fmt: skip
        assert verdicts.get(name) == "PASS", f"{name!r} in:\n{output}"
    assert (out / "campaign.html").is_file() and list((out / "images").glob("*.png")), output
    assert {"report.json", "report.md", "report.html"} <= {p.name for p in out.iterdir()}

    # the restart run: cut after two steps, SIGKILL, started again, finished from the record
    assert "killed the gateway (SIGKILL" in result.stdout, output
    assert "(after the restart)" in result.stdout, output
    for name in ("cut after 2 finished steps", "SIGKILL stopped every server process",
                 "campaign finished after the restart", "no finished step ran again",
                 "the fake Ollama got no finished step's call twice",
                 "the fake Ollama got only the cut call again"):  # fmt: skip
        assert verdicts.get(name) == "PASS", f"{name!r} in:\n{output}"
    assert "FAIL" not in output
    assert "e2e passed" in result.stdout

    # every server it started has stopped with it
    ports = gateway_ports(result.stdout)
    assert len(ports) == 3, output
    assert [health(port, timeout=1) for port in ports] == [None] * 3


@pytest.mark.timeout(RUN_LIMIT + 20)
def test_failing_step_exits_1_and_names_it(tmp_path: Path) -> None:
    routing = write(tmp_path, NO_STRATEGIST)
    result = run_e2e(tmp_path, "--brief", BRIEF, "--no-restart", LLM_ROUTING_FILE=str(routing))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FAILED at step strategist" in output
    assert "route_not_found" in output
    assert "✓ brand" in result.stdout and "✗ strategist" in result.stdout, output
    assert "e2e FAILED" in result.stdout


@pytest.mark.timeout(RUN_LIMIT + 20)
def test_a_gateway_that_does_not_start_exits_2_with_its_log(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-routing.yaml"
    result = run_e2e(tmp_path, "--brief", BRIEF, LLM_ROUTING_FILE=str(missing))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "e2e: FAILED: the gateway exited" in result.stdout, output
    assert "gateway log (tail)" in result.stdout and "no-such-routing.yaml" in result.stdout


@pytest.mark.timeout(RUN_LIMIT + 20)
def test_real_runs_the_campaign_on_the_users_live_routing_and_skips_the_restart(
    tmp_path: Path,
) -> None:
    routing = write(tmp_path, LIVE_ON_MOCK)
    result = run_e2e(tmp_path, "--brief", BRIEF, "--real", LLM_ROUTING_FILE=str(routing))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "in live mode" in result.stdout and "Pipeline steps (live mode)" in result.stdout
    assert "restart run skipped (--real" in result.stdout
    assert "killed the gateway" not in result.stdout
    assert len(gateway_ports(result.stdout)) == 1
