"""End-to-end check of the whole system, in one command: `make e2e`.

Starts a real gateway (`python -m sparklio.cli serve`) on a free port, runs the campaign
pipeline through it over HTTP (LLMGatewayClient and MediaGatewayClient), checks every step's
output, prints a table of the steps and stops the server. With `--out DIR` it also writes the
campaign report (campaign.json, .md, .html and the images) into DIR.

    .venv/bin/python scripts/e2e.py [--brief PATH_OR_TEXT] [--out DIR]
    GENERATOR_MODE=live .venv/bin/python scripts/e2e.py

GENERATOR_MODE comes from the environment (default: mock). `--brief` takes a YAML/JSON file
with keys `brief`, optional `product_facts` and `brand_guide`, any other file as plain text,
or the brief's text itself; by default examples/brief_ko.yaml, else a built-in Korean brief.

Exit codes: 0 every check passed; 1 a step failed or a check did not pass; 2 the gateway did
not start (or the brief could not be read).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sparklio.agents.base import StepRecord
from sparklio.agents.pipeline import BriefFile, Campaign, load_brief, run_campaign
from sparklio.agents.report import collect_images, write_report
from sparklio.core.config import load_settings
from sparklio.exceptions import AgentError, BriefError, GatewayError
from sparklio.services.auth import local_token_for
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BRIEF_FILE = ROOT / "examples" / "brief_ko.yaml"
BUILTIN_BRIEF = (
    "다온 녹차의 봄 신제품 '제주 첫물 녹차'를 출시합니다. 바쁜 오후에 잠깐의 여유를 찾는 "
    "25~39세 직장인이 대상입니다. 제주에서 4월에 딴 첫물 잎만 쓰고 설탕을 넣지 않았다는 점을 "
    "알리고, 인스타그램과 네이버 검색 광고, 카카오톡 채널로 온라인몰 첫 구매를 늘리고 싶습니다. "
    "톤은 차분하고 따뜻하게, 과장 없이. 납품물: 채널별 카피와 캠페인 이미지 2~3장."
)
HOST = "127.0.0.1"
HEALTH_TIMEOUT = 60.0  # seconds for the server to answer /health
LIVE_TIMEOUT = httpx.Timeout(180.0, connect=5.0)  # the live budget is 120 s per call
MOCK_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
MOCK_TARGET_S = 5.0
LOG_TAIL_LINES = 30

EXIT_OK, EXIT_FAILED, EXIT_NO_SERVER = 0, 1, 2


class ServerStartError(Exception):
    """The gateway exited or did not answer /health in time; `log` is the tail of its log."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Check:
    """One check of the pipeline's output."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Server:
    """A running gateway."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    health: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


@dataclass
class Outcome:
    """What the run produced: the campaign and checks, or the failure."""

    campaign: Campaign | None = None
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    failed_step: str | None = None
    started_steps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.campaign is not None and all(c.ok for c in self.checks)


# -- the brief --------------------------------------------------------------------------------


def brief_for(arg: str | None) -> BriefFile:
    """The brief from --brief (a file or the text itself), else the default."""
    if arg is None:
        return (
            load_brief(str(DEFAULT_BRIEF_FILE))
            if DEFAULT_BRIEF_FILE.is_file()
            else BriefFile(brief=BUILTIN_BRIEF)
        )
    return load_brief(arg)


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(the log is empty)"


def wait_healthy(server: Server, timeout: float) -> dict[str, Any]:
    """/health's answer once the server gives it; ServerStartError if it exits or times out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=2.0) as http:
        while True:
            code = server.proc.poll()
            if code is not None:
                raise ServerStartError(f"the gateway exited with code {code} before it was ready")
            try:
                response = http.get("/health")
                if response.status_code == 200:
                    data: dict[str, Any] = response.json()
                    return data
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise ServerStartError(f"the gateway did not answer /health within {timeout:g} s")
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it does not stop."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextmanager
def gateway_server(env: dict[str, str], timeout: float = HEALTH_TIMEOUT) -> Iterator[Server]:
    """A gateway on a free port, stopped on the way out whatever happens."""
    port = free_port()
    args = [sys.executable, "-m", "sparklio.cli", "serve", "--host", HOST, "--port", str(port)]
    # a pipe nobody reads would stall the server: its log goes to a file
    with tempfile.TemporaryDirectory(prefix="sparklio-e2e-") as tmp:
        log_path = Path(tmp) / "gateway.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            server = Server(url=f"http://{HOST}:{port}", proc=proc, log_path=log_path)
            try:
                server.health = wait_healthy(server, timeout)
            except ServerStartError as exc:
                stop(proc)
                exc.log = log_tail(log_path)
                raise
            yield server
        finally:
            stop(proc)


# -- the run ----------------------------------------------------------------------------------


async def run(
    server: Server, brief: BriefFile, mode: str, out: Path | None, console: Console
) -> Outcome:
    """The pipeline over HTTP, then the checks (and the report when asked for)."""
    outcome = Outcome()
    started = time.perf_counter()

    def on_step(step: str, status: str) -> None:
        if status == "running":
            outcome.started_steps.append(step)
            console.print(
                Text(f"  {time.perf_counter() - started:7.2f}s  → {step}", style="dim"),
                soft_wrap=True,
            )

    timeout = LIVE_TIMEOUT if mode == "live" else MOCK_TIMEOUT
    # a key from the environment, else the local user's token: this script shares the
    # server's SPARKLIO_HOME and database, as an in-process run would
    key = os.environ.get("GATEWAY_API_KEY") or await local_token_for(load_settings())
    async with (
        LLMGatewayClient(base_url=server.url, api_key=key, timeout=timeout) as llm,
        MediaGatewayClient(base_url=server.url, api_key=key, timeout=timeout) as media,
    ):
        try:
            outcome.campaign = await run_campaign(
                llm,
                media,
                brief.brief,
                product_facts=brief.product_facts or None,
                brand_guide=brief.brand_guide,
                on_step=on_step,
            )
        except AgentError as exc:
            outcome.failed_step = exc.step
            outcome.error = f"{exc.error.type} ({exc.error.status}): {exc.error.message}"
            return outcome
        except GatewayError as exc:  # outside any step (should not happen)
            outcome.failed_step = outcome.started_steps[-1] if outcome.started_steps else None
            outcome.error = f"{exc.type} ({exc.status}): {exc.message}"
            return outcome
        outcome.checks = await check_campaign(media, outcome.campaign, mode)
        if out is not None:
            outcome.checks.append(await save_report(media, outcome.campaign, out))
    return outcome


async def check_campaign(media: MediaGatewayClient, campaign: Campaign, mode: str) -> list[Check]:
    """Checks beyond the models the pipeline already validated."""
    checks: list[Check] = []
    brief = campaign.brief
    checks.append(Check("brief has channels", bool(brief.channels), ", ".join(brief.channels)))

    copies = {c.channel: c for c in campaign.copies}
    for channel in dict.fromkeys(brief.channels):
        copy = copies.get(channel)
        if copy is None:
            checks.append(Check(f"copy for {channel}", False, "no copy for this channel"))
            continue
        empty = [f for f in ("headline", "body", "cta") if not getattr(copy, f).strip()]
        detail = f"empty: {', '.join(empty)}" if empty else f"headline {copy.headline!r}"
        checks.append(Check(f"copy for {channel}", not empty, detail))

    scores = ", ".join(f"{s.criterion} {s.score}" for s in campaign.review.scores)
    checks.append(Check("review has scores", bool(campaign.review.scores), scores or "no scores"))

    images = {image.concept: image for image in campaign.images}
    for index, concept in enumerate(campaign.concepts):
        name = f"image for concept {index + 1}"
        image = images.get(index)
        if image is None:
            checks.append(Check(name, False, f"no image for {concept.title!r}"))
            continue
        try:
            data = await media.download(image.asset_id)
        except GatewayError as exc:
            checks.append(Check(name, False, f"download failed: {exc.type}: {exc.message}"))
            continue
        checks.append(Check(name, *png_matches(data, image.width, image.height)))

    if mode == "mock":
        others = [f"{r.step}={r.provider or '?'}" for r in campaign.steps if r.provider != "mock"]
        checks.append(
            Check(
                "every step's provider is mock",
                not others,
                ", ".join(others) or f"{len(campaign.steps)} steps",
            )
        )
    return checks


def png_matches(data: bytes, width: int, height: int) -> tuple[bool, str]:
    """Whether the bytes open as a PNG of the size the asset reports."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            kind, size = img.format, img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return False, f"{len(data)} bytes do not open as an image: {exc}"
    if kind != "PNG":
        return False, f"a {kind} image, not a PNG"
    if size != (width, height):
        return False, f"{size[0]}x{size[1]} PNG, but the asset says {width}x{height}"
    return True, f"{width}x{height} PNG, {len(data):,} bytes"


async def save_report(media: MediaGatewayClient, campaign: Campaign, out: Path) -> Check:
    """The campaign report (json, markdown, html and images) written into `out`."""
    try:
        images = await collect_images(media, campaign)
        paths = write_report(campaign, out, images)
    except Exception as exc:  # a check that failed, not a crash: the run still reports
        return Check("report written", False, f"{type(exc).__name__}: {exc}")
    return Check("report written", True, f"{paths.html} ({len(paths.images)} images)")


# -- output -----------------------------------------------------------------------------------


def steps_table(steps: list[StepRecord], mode: str) -> Table:
    table = Table(title=f"Pipeline steps ({mode} mode)")
    table.add_column("step", no_wrap=True)
    table.add_column("role/task", no_wrap=True)
    table.add_column("provider", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("latency ms", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("attempts", justify="right")
    table.add_column("result")
    for r in steps:
        tokens = f"{r.prompt_tokens}+{r.completion_tokens}" if r.prompt_tokens else "-"
        attempts = str(len(r.attempts) or 1)
        flags = [f for f, on in (("fallback", r.fallback), ("repaired", r.repaired)) if on]
        if flags:
            attempts += f" ({', '.join(flags)})"
        table.add_row(
            r.step,
            f"{r.role}/{r.task}",
            r.provider,
            r.model,
            f"{r.latency_ms:.1f}",
            tokens,
            attempts,
            "[green]passed[/]",
        )
    return table


def checks_table(checks: list[Check]) -> Table:
    table = Table(title="Checks")
    table.add_column("check", no_wrap=True)
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, "[green]passed[/]" if c.ok else "[bold red]FAILED[/]", c.detail)
    return table


def make_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: wide enough that no row wraps
        console = Console(highlight=False, width=max(console.width, 140))
    return console


def main(argv: list[str] | None = None) -> int:
    wall_start = time.perf_counter()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--brief",
        metavar="PATH_OR_TEXT",
        help="a brief file (YAML/JSON with brief, product_facts, brand_guide; or plain text) "
        "or the brief's text (default: examples/brief_ko.yaml, else a built-in Korean brief)",
    )
    parser.add_argument(
        "--out", type=Path, help="also write the campaign report (json, md, html) into this folder"
    )
    args = parser.parse_args(argv)
    console = make_console()

    try:
        brief = brief_for(args.brief)
    except BriefError as exc:
        console.print(Text(f"e2e: bad --brief: {exc}", style="bold red"), soft_wrap=True)
        return EXIT_NO_SERVER

    env = dict(os.environ)
    env["GENERATOR_MODE"] = env.get("GENERATOR_MODE") or "mock"
    console.print(
        Text(f"e2e: starting the gateway (GENERATOR_MODE={env['GENERATOR_MODE']}); "
             f"brief: {args.brief or DEFAULT_BRIEF_FILE.name}"),
        soft_wrap=True,
    )  # fmt: skip

    outcome: Outcome
    mode = env["GENERATOR_MODE"]
    server_log = ""
    try:
        with gateway_server(env) as server:
            mode = str(server.health.get("generator_mode", mode))
            console.print(
                Text(f"e2e: gateway up at {server.url} in {mode} mode after "
                     f"{time.perf_counter() - wall_start:.2f} s"),
                soft_wrap=True,
            )  # fmt: skip
            outcome = asyncio.run(run(server, brief, mode, args.out, console))
            if not outcome.ok:
                server_log = server.log_tail()
    except ServerStartError as exc:
        console.print(Text(f"e2e: FAILED: {exc}", style="bold red"), soft_wrap=True)
        console.print(Text("--- gateway log (tail) ---"))
        console.print(Text(exc.log or "(no log)"), soft_wrap=True)
        return EXIT_NO_SERVER
    wall_s = time.perf_counter() - wall_start

    if outcome.campaign is not None:
        console.print(steps_table(outcome.campaign.steps, mode))
    if outcome.checks:
        console.print(checks_table(outcome.checks))

    if outcome.error is not None:
        step = outcome.failed_step or "?"
        console.print(
            Text(f"e2e: FAILED at step {step}: {outcome.error}", style="bold red"), soft_wrap=True
        )
        console.print(Text(f"steps started: {', '.join(outcome.started_steps)}"), soft_wrap=True)
    if server_log:
        console.print(Text("--- gateway log (tail) ---"))
        console.print(Text(server_log), soft_wrap=True)

    pipeline = (
        f"{outcome.campaign.pipeline_ms / 1000:.2f} s" if outcome.campaign is not None else "-"
    )
    target = f" (target < {MOCK_TARGET_S:g} s)" if mode == "mock" else ""
    if outcome.ok:
        assert outcome.campaign is not None
        passed = sum(c.ok for c in outcome.checks)
        console.print(
            Text(f"e2e passed: {len(outcome.campaign.steps)} steps and {passed} checks passed "
                 f"({mode} mode, campaign {outcome.campaign.status}); pipeline {pipeline}, "
                 f"total wall time {wall_s:.2f} s{target}", style="bold green"),
            soft_wrap=True,
        )  # fmt: skip
        return EXIT_OK
    failed = [c.name for c in outcome.checks if not c.ok]
    what = f"checks failed: {', '.join(failed)}" if failed else f"step {outcome.failed_step}"
    console.print(
        Text(f"e2e FAILED ({what}); pipeline {pipeline}, total wall time {wall_s:.2f} s",
             style="bold red"),
        soft_wrap=True,
    )  # fmt: skip
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
