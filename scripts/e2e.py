"""End-to-end check of the whole system over the campaigns API, in one command: `make e2e`.

Two runs, each against a real `sparklio serve` on 127.0.0.1 (a free port), stopped at the end:

1. The campaign run: a server in mock mode; the brief goes to POST /api/v1/campaigns, its
   events are followed live (each step printed as it finishes), every step's output is
   checked, and the report is fetched (report.json, .md, .html). With `--out DIR` the report
   as served and a self-contained one with the images (campaign.html, images/) go into DIR.
2. The restart run: a campaign in live mode against a fake Ollama, a real server on
   127.0.0.1 answering schema-valid JSON (tests/fakes/campaign.py). Once two steps have
   finished and the third waits on the model, the server and all its processes are killed
   with SIGKILL, as a crash would, and started again on the same SPARKLIO_HOME. The campaign
   must finish, and the fake's own record of the calls it answered must show that no finished
   step's call was made again: only the call the kill cut off is asked again.

    .venv/bin/python scripts/e2e.py [--brief PATH_OR_TEXT] [--out DIR] [--no-restart]
    .venv/bin/python scripts/e2e.py --real      # the campaign run with your own models

The campaign run shares your SPARKLIO_HOME, database and .env, as `sparklio serve` would,
in mock mode whatever .env says (LLM_ROUTING_FILE applies: its mock routes).
`--real`, or GENERATOR_MODE=live in the environment, runs it in live mode on your routing
(LLM_ROUTING_FILE, .env) and real models, and skips the restart run, which would pay for a
call twice. The restart run uses none of your settings: a temporary SPARKLIO_HOME with its
SQLite databases, its own routing file, the fake for every model call and mock images.

`--brief` takes a YAML/JSON file with keys `brief`, optional `product_facts`, `brand_guide`
and `words_to_avoid`, any other file as plain text, or the brief's text itself; by default
examples/brief_ko.yaml, else a built-in Korean brief. Each check prints a PASS or FAIL line.

Exit codes: 0 every check passed; 1 a step failed or a check did not pass; 2 a gateway did
not start (or the brief could not be read).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# this checkout's `sparklio`, and its tests' fake Ollama, whatever the folder it runs from
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from sparklio.agents.base import StepRecord  # noqa: E402
from sparklio.agents.pipeline import BriefFile, Campaign, load_brief  # noqa: E402
from sparklio.agents.report import collect_images, write_report  # noqa: E402
from sparklio.core.config import Settings, load_settings  # noqa: E402
from sparklio.exceptions import BriefError, GatewayError  # noqa: E402
from sparklio.services.auth import local_token_for  # noqa: E402
from sparklio.services.clients.campaign_client import CampaignGatewayClient  # noqa: E402
from sparklio.services.clients.media_client import MediaGatewayClient  # noqa: E402
from tests.gateway_process import process_tree  # noqa: E402

DEFAULT_BRIEF_FILE = ROOT / "examples" / "brief_ko.yaml"
BUILTIN_BRIEF = (
    "다온 녹차의 봄 신제품 '제주 첫물 녹차'를 출시합니다. 바쁜 오후에 잠깐의 여유를 찾는 "
    "25~39세 직장인이 대상입니다. 제주에서 4월에 딴 첫물 잎만 쓰고 설탕을 넣지 않았다는 점을 "
    "알리고, 인스타그램과 네이버 검색 광고, 카카오톡 채널로 온라인몰 첫 구매를 늘리고 싶습니다. "
    "톤은 차분하고 따뜻하게, 과장 없이. 납품물: 채널별 카피와 캠페인 이미지 2~3장."
)
HOST = "127.0.0.1"
HEALTH_TIMEOUT = 90.0  # seconds for a server to answer /health (25 s seen on a busy machine)
LIVE_TIMEOUT = httpx.Timeout(180.0, connect=5.0)  # the live budget is 120 s per call
MOCK_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
MOCK_TARGET_S = 2.0  # a mock campaign's own time, from its start to `done`
RESTART_CUT_TIMEOUT = 60.0  # seconds for the restart run's campaign to reach its third step
RESTART_FINISH_TIMEOUT = 120.0  # seconds for it to finish once the server is up again
LOG_TAIL_LINES = 30

#: The steps the restart run lets finish before the kill, and the one it cuts.
BEFORE_KILL = ["brief", "brand"]
CUT_STEP = "strategist"

EXIT_OK, EXIT_FAILED, EXIT_NO_SERVER = 0, 1, 2


class ServerStartError(Exception):
    """The gateway exited or did not answer /health in time; `log` is the tail of its log."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Check:
    """One check of what a run produced."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Outcome:
    """What a run produced: its checks, or the failure that stopped it."""

    title: str
    checks: list[Check] = field(default_factory=list)
    campaign: Campaign | None = None
    duration_s: float | None = None  # the campaign's own time, as the server reports it
    error: str | None = None
    failed_step: str | None = None
    server_log: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)


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


def request_body(brief: BriefFile) -> dict[str, Any]:
    """POST /api/v1/campaigns's body for the brief."""
    return brief.model_dump(mode="json", exclude_none=True)


# -- servers ----------------------------------------------------------------------------------


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


#: libc, loaded before any fork (a forked child must not dlopen: another thread may hold its lock)
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def _die_with_this_script() -> None:
    """In the server's process before it starts: SIGTERM it when this script dies, however
    it dies (a test's timeout kills the script, not the servers it started). Linux only; the
    signal comes when the thread that started it ends, so servers start on the main thread."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Server:
    """A `sparklio serve` process on 127.0.0.1, in its own process group."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    health: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    async def stop(self) -> None:
        """Terminate, then kill if it does not stop."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            await self.kill()

    async def kill(self) -> list[int]:
        """SIGKILL the server and every process it started, at once, as a crash of the machine
        would (granian's workers would otherwise get a SIGTERM and shut down cleanly); the pids
        it killed."""
        pids = kill_tree(self.proc.pid)
        await asyncio.to_thread(self.proc.wait, 10)
        return pids


def kill_tree(pid: int) -> list[int]:
    """SIGKILL to `pid`'s process group (it leads one) and to each of its descendants."""
    pids = process_tree(pid) if Path("/proc").is_dir() else [pid]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for each in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    return pids


def spawn(
    url: str, args: list[str], env: dict[str, str], cwd: Path | None, log_path: Path
) -> Server:
    """Start `args` with its output in `log_path`, in a process group of its own (for the
    restart run's kill), dying with this script. Called on the main thread (see above)."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_this_script,
        )
    return Server(url=url, proc=proc, log_path=log_path)


async def wait_healthy(server: Server, limit_s: float) -> dict[str, Any]:
    """/health's answer once the server gives it; ServerStartError if it exits or does not
    answer within `limit_s` seconds."""
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(base_url=server.url, timeout=2.0) as http:
        while True:
            code = server.proc.poll()
            if code is not None:
                raise ServerStartError(f"the gateway exited with code {code} before it was ready")
            try:
                response = await http.get("/health")
                if response.status_code == 200:
                    data: dict[str, Any] = response.json()
                    return data
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise ServerStartError(f"the gateway did not answer /health within {limit_s:g} s")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def gateway_server(
    env: dict[str, str], cwd: Path | None = None, log_dir: Path | None = None
) -> AsyncIterator[Server]:
    """`sparklio serve` on a free port, stopped on the way out whatever happens. Its log goes
    to a file in `log_dir` (a pipe nobody reads would stall it)."""
    port = free_port()
    args = [sys.executable, "-m", "sparklio.cli", "serve", "--host", HOST, "--port", str(port)]
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with contextlib.ExitStack() as stack:
        folder = log_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="e2e-")))
        log_path = folder / f"gateway-{port}.log"
        server = spawn(f"http://{HOST}:{port}", args, env | {"PYTHONPATH": path}, cwd, log_path)
        try:
            try:
                server.health = await wait_healthy(server, HEALTH_TIMEOUT)
            except ServerStartError as exc:
                exc.log = server.log_tail()
                raise
            yield server
        finally:
            await server.stop()


# -- following a campaign ---------------------------------------------------------------------


@dataclass
class Follower:
    """A campaign's events as they arrive, each finished step printed as it finishes."""

    console: Console
    started: float = field(default_factory=time.perf_counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def last_id(self) -> int | None:
        return self.events[-1]["id"] if self.events else None

    def steps(self, kind: str) -> list[str]:
        """The steps of the events of `kind` (step_started, step_finished...), in order."""
        return [e["step"] for e in self.events if e["type"] == kind]

    async def follow(self, campaigns: CampaignGatewayClient, campaign_id: str) -> dict[str, Any]:
        """Read the events (after the last one seen) up to the campaign's last; that one."""
        async for event in campaigns.events(campaign_id, self.last_id):
            self.events.append(event)
            self.show(event)
        return self.events[-1]

    def show(self, event: dict[str, Any]) -> None:
        at = f"  {time.perf_counter() - self.started:7.2f}s  "
        kind, step, data = event["type"], event.get("step"), event.get("data") or {}
        if kind == "step_finished":
            records = [StepRecord.model_validate(r) for r in data.get("records", [])]
            models = ", ".join(dict.fromkeys(f"{r.provider}/{r.model}" for r in records))
            tokens = sum(r.prompt_tokens + r.completion_tokens for r in records)
            detail = f"  ({models}, {tokens} tokens)" if records else ""
            self.console.print(Text(f"{at}✓ {step}{detail}{self.note}"), soft_wrap=True)
        elif kind == "step_failed":
            line = f"{at}✗ {step}: {data.get('error', '')}"
            self.console.print(Text(line, style="red"), soft_wrap=True)
        elif kind in ("done", "failed", "cancelled"):
            self.console.print(Text(f"{at}{kind}", style="dim"), soft_wrap=True)


def event_checks(events: list[dict[str, Any]]) -> list[Check]:
    """The stream as a user reads it: in order, each step started then finished, once."""
    ids = [e["id"] for e in events]
    kinds = [e["type"] for e in events]
    in_order = ids == sorted(set(ids)) and kinds[:2] == ["queued", "started"]
    twice = [s for s in dict.fromkeys(e["step"] for e in events if e.get("step"))
             if [e["type"] for e in events if e.get("step") == s]
             != ["step_started", "step_finished"]]  # fmt: skip
    no_output = [e["step"] for e in events
                 if e["type"] == "step_finished" and e["data"].get("output") is None]  # fmt: skip
    finished = sum(k == "step_finished" for k in kinds)
    return [
        Check("events in order", in_order and kinds[-1:] == ["done"],
              f"{len(events)} events, {kinds[0] if kinds else '-'} .. "
              f"{kinds[-1] if kinds else '-'}"),
        Check("each step started and finished once", not twice,
              f"not so for: {', '.join(twice)}" if twice else f"{finished} steps"),
        Check("each finished step carries its output", not no_output,
              f"no output: {', '.join(no_output)}" if no_output else f"{finished} outputs"),
    ]  # fmt: skip


# -- the campaign run -------------------------------------------------------------------------


async def campaign_run(
    server: Server, brief: BriefFile, mode: str, out: Path | None, console: Console
) -> Outcome:
    """A campaign over the API, followed live, then the checks (and the report when asked)."""
    outcome = Outcome(f"campaign run ({mode} mode)")
    timeout = LIVE_TIMEOUT if mode == "live" else MOCK_TIMEOUT
    # a key from the environment, else the local user's token: this script shares the
    # server's SPARKLIO_HOME and database, as `sparklio campaign` in-process would
    key = os.environ.get("GATEWAY_API_KEY") or await local_token_for(load_settings())
    follower = Follower(console)
    connection = {"base_url": server.url, "api_key": key, "timeout": timeout}
    async with (
        CampaignGatewayClient(**connection) as campaigns,
        MediaGatewayClient(**connection) as media,
    ):
        try:
            campaign_id = (await campaigns.start(request_body(brief)))["id"]
            console.print(Text(f"e2e: campaign {campaign_id} started"), soft_wrap=True)
            follower.started = time.perf_counter()
            last = await follower.follow(campaigns, campaign_id)
            if last["type"] != "done":
                failed = [e for e in follower.events if e["type"] == "step_failed"]
                outcome.failed_step = failed[-1]["step"] if failed else None
                outcome.error = str(
                    failed[-1]["data"].get("error") if failed else last["data"] or last["type"]
                )
                return outcome
            outcome.duration_s = (await campaigns.get(campaign_id)).get("duration_s")
            data = await campaigns.report(campaign_id)
            outcome.campaign = campaign = Campaign.model_validate(data)
            reports = {
                kind: await campaigns.report_text(campaign_id, kind) for kind in ("md", "html")
            }
        except GatewayError as exc:
            outcome.error = f"{exc.type} ({exc.status}): {exc.message}"
            return outcome
        outcome.checks = event_checks(follower.events)
        product = campaign.brief.product
        outcome.checks += [
            Check("report.md names the product", product in reports["md"], repr(product)),
            Check("report.html is a page", "<html" in reports["html"],
                  f"{len(reports['html']):,} characters"),
        ]  # fmt: skip
        outcome.checks += await check_campaign(media, campaign, mode)
        if mode == "mock":
            took = outcome.duration_s
            outcome.checks.append(
                Check("campaign time", took is not None and took < MOCK_TARGET_S,
                      f"{took:.2f} s from start to done (target < {MOCK_TARGET_S:g} s)"
                      if took is not None else "the server gave no duration")
            )  # fmt: skip
        if out is not None:
            served = reports | {"json": json.dumps(data, ensure_ascii=False, indent=2)}
            outcome.checks.append(await save_report(media, campaign, served, out))
    return outcome


async def check_campaign(media: MediaGatewayClient, campaign: Campaign, mode: str) -> list[Check]:
    """Checks of the report beyond what the pipeline already validated."""
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


async def save_report(
    media: MediaGatewayClient, campaign: Campaign, served: dict[str, str], out: Path
) -> Check:
    """Into `out`: the report as served (report.json, .md, .html, without images) and one
    that holds its images (campaign.json, .md, .html and images/)."""
    try:
        images = await collect_images(media, campaign)
        paths = write_report(campaign, out, images)
        for kind, text in served.items():
            (out / f"report.{kind}").write_text(text, encoding="utf-8")
    except Exception as exc:  # a check that failed, not a crash: the run still reports
        return Check("report written", False, f"{type(exc).__name__}: {exc}")
    return Check("report written", True, f"{paths.html} ({len(paths.images)} images)")


# -- the restart run --------------------------------------------------------------------------


def isolated_env(home: Path, routes: Path, ollama: str) -> dict[str, str]:
    """The restart run's environment: none of the user's Sparklio settings (a DATABASE_URL,
    a cache, another routing would change what is tested), only its own."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    return env | {
        "SPARKLIO_HOME": str(home),
        "GENERATOR_MODE": "live",
        "LLM_ROUTING_FILE": str(routes),
        "OLLAMA_BASE_URL": ollama,
        "LOG_LEVEL": "warning",
    }


@contextlib.contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ as `env` for the block: Settings read it once, when made."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def until(condition: Callable[[], bool], limit_s: float, what: str) -> None:
    """Wait for `condition`; TimeoutError naming `what` after `limit_s` seconds."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {limit_s:g} s")
        await asyncio.sleep(0.02)


async def restart_run(brief: BriefFile, console: Console) -> Outcome:
    """A live campaign against the fake Ollama, its server killed with SIGKILL once two steps
    have finished and the third waits on the model, then started again: see the docstring."""
    from tests.fakes.base import Held, Reply  # the fakes come with the tests (make install-dev)
    from tests.fakes.campaign import ROUTES, MockOllama

    outcome = Outcome("restart run (live mode, fake Ollama, kill -9 mid-campaign)")
    gate = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="sparklio-e2e-restart-") as tmp:
        folder = Path(tmp)
        home, routes = folder / "home", folder / "routes.yaml"
        routes.write_text(ROUTES, encoding="utf-8")
        async with MockOllama() as fake:
            # the first two steps' calls are answered; the third is held until after the kill
            fake.then(Reply(), Reply(), Held(Reply(), gate))
            env = isolated_env(home, routes, fake.url)
            follower = Follower(console)
            try:
                async with gateway_server(env, cwd=folder, log_dir=folder) as server:
                    console.print(Text(f"e2e: gateway up at {server.url} (live mode; every "
                                       f"model call goes to the fake Ollama at {fake.url})"),
                                  soft_wrap=True)  # fmt: skip
                    with environ(env):  # the server's settings: its home and database
                        settings = Settings(_env_file=None)
                    token = await local_token_for(settings)
                    campaign_id, cut = await run_until_cut(server, token, brief, fake, follower)
                    outcome.checks.append(cut)
                    if not cut.ok:
                        outcome.server_log = server.log_tail()
                        return outcome
                    pids = await server.kill()
                    gone = await asyncio.to_thread(wait_gone, pids)
                    outcome.checks.append(
                        Check("SIGKILL stopped every server process", not gone,
                              f"still running: {gone}" if gone else f"pids {pids}")
                    )  # fmt: skip
                    console.print(
                        Text(f"e2e: killed the gateway (SIGKILL to {len(pids)} processes) "
                             f"while {CUT_STEP} waited on the model", style="bold"),
                        soft_wrap=True,
                    )  # fmt: skip
                gate.set()  # the held call's client is gone: nobody reads its answer
                async with gateway_server(env, cwd=folder, log_dir=folder) as server:
                    console.print(
                        Text(f"e2e: gateway started again at {server.url} on the same "
                             f"SPARKLIO_HOME; following from event {follower.last_id}",
                             style="bold"),
                        soft_wrap=True,
                    )  # fmt: skip
                    follower.note = "  (after the restart)"
                    outcome.checks += await finish_after_restart(
                        server, token, campaign_id, follower, fake
                    )
                    if not outcome.ok:
                        outcome.server_log = server.log_tail()
            except (GatewayError, TimeoutError) as exc:  # (ServerStartError goes up: exit 2)
                outcome.error = f"{type(exc).__name__}: {exc}"
                outcome.failed_step = (follower.steps("step_started") or [None])[-1]
    return outcome


async def run_until_cut(
    server: Server, token: str, brief: BriefFile, fake: Any, follower: Follower
) -> tuple[str, Check]:
    """Start the campaign and follow it until two steps have finished and the third's call
    waits at the fake; its id, and whether it got there so."""
    async with CampaignGatewayClient(base_url=server.url, api_key=token,
                                     timeout=LIVE_TIMEOUT) as campaigns:  # fmt: skip
        campaign_id = (await campaigns.start(request_body(brief)))["id"]
        follower.console.print(Text(f"e2e: campaign {campaign_id} started"), soft_wrap=True)
        follower.started = time.perf_counter()
        following = asyncio.create_task(follower.follow(campaigns, campaign_id))

        def at_cut() -> bool:
            if following.done():  # it ended (or failed) before the cut: no point waiting
                return True
            return (
                follower.steps("step_finished") == BEFORE_KILL
                and follower.steps("step_started")[-1:] == [CUT_STEP]
                and fake.calls == len(BEFORE_KILL) + 1
            )

        try:
            await until(at_cut, RESTART_CUT_TIMEOUT, f"the campaign's {CUT_STEP} step")
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, GatewayError):
                await following
    finished = follower.steps("step_finished")
    ok = finished == BEFORE_KILL and follower.steps("step_started")[-1:] == [CUT_STEP]
    detail = (f"{', '.join(finished)} finished; {CUT_STEP} in flight (call "
              f"{fake.calls} at the fake)") if ok else (
              f"finished {finished}, started {follower.steps('step_started')}, "
              f"{fake.calls} calls at the fake")  # fmt: skip
    return campaign_id, Check(f"cut after {len(BEFORE_KILL)} finished steps", ok, detail)


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still running after `timeout` seconds (none, once a SIGKILL did its work)."""
    deadline = time.monotonic() + timeout
    while (running := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running


async def finish_after_restart(
    server: Server, token: str, campaign_id: str, follower: Follower, fake: Any
) -> list[Check]:
    """Follow the campaign on the restarted server from the last event seen to its end, then
    check it against its events and the fake's record of the calls it answered."""
    held = fake.model_calls()[len(BEFORE_KILL)].raw  # the call the kill cut off
    before = [r.raw for r in fake.model_calls()[: len(BEFORE_KILL)]]
    async with CampaignGatewayClient(base_url=server.url, api_key=token,
                                     timeout=LIVE_TIMEOUT) as campaigns:  # fmt: skip
        async with asyncio.timeout(RESTART_FINISH_TIMEOUT):
            last = await follower.follow(campaigns, campaign_id)
        campaign = await campaigns.get(campaign_id)
        report = Campaign.model_validate(await campaigns.report(campaign_id)) \
            if campaign["status"] == "succeeded" else None  # fmt: skip
        events: list[dict[str, Any]] = [e async for e in campaigns.events(campaign_id)]
    started = [e["step"] for e in events if e["type"] == "step_started"]
    finished = [e["step"] for e in events if e["type"] == "step_finished"]
    again = [s for s in BEFORE_KILL if started.count(s) != 1 or finished.count(s) != 1]
    twice = sorted({s for s in finished if finished.count(s) > 1})
    bodies = [r.raw for r in fake.model_calls()]
    repeated = [i + 1 for i, body in enumerate(bodies) if body != held and bodies.count(body) > 1]
    answered_again = [s for s, body in zip(BEFORE_KILL, before, strict=True)
                      if bodies.count(body) != 1]  # fmt: skip
    return [
        Check("campaign finished after the restart",
              last["type"] == "done" and campaign["status"] == "succeeded",
              f"last event {last['type']}, status {campaign['status']}"
              + (f", review {report.status}" if report else "")),
        Check("no finished step ran again", not again and not twice,
              f"started again: {again}, finished twice: {twice}" if again or twice
              else f"{', '.join(BEFORE_KILL)} once each; {len(finished)} steps finished once"),
        Check("the fake Ollama got no finished step's call twice", not answered_again
              and not repeated,
              f"asked again: {answered_again or repeated}" if answered_again or repeated
              else f"{len(bodies)} calls, {len(set(bodies))} different"),
        Check("the fake Ollama got only the cut call again", bodies.count(held) == 2
              and len(bodies) == len(set(bodies)) + 1,
              f"the {CUT_STEP} call {bodies.count(held)} times; "
              f"{len(bodies) - len(set(bodies))} repeats in all"),
    ]  # fmt: skip


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


def report(outcome: Outcome, console: Console) -> None:
    """A run's checks, one PASS or FAIL line each, and its failure if it stopped."""
    console.print(Text(f"{outcome.title}:", style="bold"))
    for c in outcome.checks:
        style = "green" if c.ok else "bold red"
        line = f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}"
        console.print(Text(line, style=style), soft_wrap=True)
    if outcome.error is not None:
        step = outcome.failed_step or "?"
        console.print(
            Text(f"  FAIL  {outcome.title}: FAILED at step {step}: {outcome.error}",
                 style="bold red"),
            soft_wrap=True,
        )  # fmt: skip
    if outcome.server_log:
        console.print(Text("--- gateway log (tail) ---"))
        console.print(Text(outcome.server_log), soft_wrap=True)


def make_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: wide enough that no row wraps
        console = Console(highlight=False, width=max(console.width, 140))
    return console


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--real",
        action="store_true",
        help="run the campaign in live mode on your routing and models (also when "
        "GENERATOR_MODE=live is in the environment); no restart run",
    )
    parser.add_argument(
        "--no-restart", action="store_true", help="skip the restart run (kill -9 mid-campaign)"
    )
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace, brief: BriefFile, console: Console) -> int:
    """Both runs; the exit code."""
    wall_start = time.perf_counter()
    real = args.real or os.environ.get("GENERATOR_MODE", "").lower() == "live"
    env = dict(os.environ) | {"GENERATOR_MODE": "live" if real else "mock"}
    console.print(
        Text(f"e2e: starting the gateway (GENERATOR_MODE={env['GENERATOR_MODE']}); "
             f"brief: {args.brief or DEFAULT_BRIEF_FILE.name}"),
        soft_wrap=True,
    )  # fmt: skip
    outcomes: list[Outcome] = []
    try:
        async with gateway_server(env) as server:
            mode = str(server.health.get("generator_mode", env["GENERATOR_MODE"]))
            console.print(
                Text(f"e2e: gateway up at {server.url} in {mode} mode after "
                     f"{time.perf_counter() - wall_start:.2f} s"),
                soft_wrap=True,
            )  # fmt: skip
            first = await campaign_run(server, brief, mode, args.out, console)
            if not first.ok:
                first.server_log = server.log_tail()
        outcomes.append(first)
        if first.campaign is not None:
            console.print(steps_table(first.campaign.steps, mode))
        report(first, console)
        if real or args.no_restart:
            why = "--real: it would pay for a call twice" if real else "--no-restart"
            console.print(Text(f"e2e: restart run skipped ({why})", style="dim"))
        else:
            console.print(Text("\ne2e: restart run: a live campaign against a fake Ollama, "
                               "its gateway killed with SIGKILL mid-campaign"),
                          soft_wrap=True)  # fmt: skip
            second = await restart_run(brief, console)
            outcomes.append(second)
            report(second, console)
    except ServerStartError as exc:
        console.print(Text(f"e2e: FAILED: {exc}", style="bold red"), soft_wrap=True)
        console.print(Text("--- gateway log (tail) ---"))
        console.print(Text(exc.log or "(no log)"), soft_wrap=True)
        return EXIT_NO_SERVER

    wall_s = time.perf_counter() - wall_start
    summary = "; ".join(
        f"{o.title} {sum(c.ok for c in o.checks)}/{len(o.checks)} checks passed"
        + ("" if o.error is None else f", stopped at step {o.failed_step}")
        for o in outcomes
    )
    if all(o.ok for o in outcomes):
        console.print(Text(f"e2e passed: {summary}; total wall time {wall_s:.2f} s",
                           style="bold green"), soft_wrap=True)  # fmt: skip
        return EXIT_OK
    console.print(Text(f"e2e FAILED: {summary}; total wall time {wall_s:.2f} s",
                       style="bold red"), soft_wrap=True)  # fmt: skip
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = make_console()
    try:
        brief = brief_for(args.brief)
    except BriefError as exc:
        console.print(Text(f"e2e: bad --brief: {exc}", style="bold red"), soft_wrap=True)
        return EXIT_NO_SERVER
    return asyncio.run(run_all(args, brief, console))


if __name__ == "__main__":
    sys.exit(main())
