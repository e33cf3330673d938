"""The `sparklio` command: serve the gateway, show routes, make a call."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import httpx
import typer
from rich.console import Console
from rich.table import Table

from sparklio.core.config import Settings, load_settings
from sparklio.core.files import write_private
from sparklio.exceptions import BriefError, ConfigError, GatewayError
from sparklio.services.llm.providers.base import OutputMode

app = typer.Typer(
    help="Sparklio: the one gateway every model call of the marketing studio goes through.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc), 2)


def configure_logging(level: str) -> None:
    """One line per step: `12:00:01 → copywriter.channel_copy via mock/mock-v1`."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-5s %(name)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # a campaign's steps call the gateway in-process through httpx: the gateway logs each
    # call already, so httpx's own line per request would only repeat it
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def shown_key(key: str, where: str, on_terminal: bool) -> str:
    """An API key as printed: whole on a terminal; anywhere else (a log file, a pipe) only its
    prefix (key listings show it too) and where the whole key is."""
    if on_terminal:
        return key
    from sparklio.services.auth import PREFIX_LENGTH

    return f"{key[:PREFIX_LENGTH]}...(whole key in {where})"


def curl_example(host: str, port: int, key: str | None = None) -> str:
    """A ready-to-paste curl line that asks the gateway for schema-valid JSON."""
    body = {
        "role": "copywriter",
        "task": "channel_copy",
        "payload": {
            "product": "Dawon green tea",
            "channel": "instagram",
            "audience": "office workers who want a calm afternoon",
        },
        "output_schema": {
            "type": "object",
            "properties": {
                "headline": {"type": "string", "maxLength": 30},
                "body": {"type": "string"},
                "cta": {"type": "string"},
                "hashtags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
            },
            "required": ["headline", "body", "cta", "hashtags"],
        },
    }
    return (
        f"curl -s http://{host}:{port}/api/v1/llm/generate "
        f"-H 'Authorization: Bearer {key or '<API key: sparklio create-test-users>'}' "
        f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'"
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes; with REDIS_URL they share endpoint limits and breakers.",
        ),
    ] = 1,
) -> None:
    """Serve the gateway's HTTP API (docs at /docs)."""
    from sparklio import serving
    from sparklio.api.deps import services_of
    from sparklio.main import create_app
    from sparklio.services import telemetry

    settings = _settings()
    configure_logging(settings.log_level)
    telemetry.use_multiprocess(settings.home)  # each worker writes metrics /metrics adds up
    try:
        # migrations run in a child process: the server then never imports Alembic (~10 MB);
        # a database that cannot be reached yet is migrated in the background once it answers
        api = create_app(settings, migrate_in_child=True)
    except ConfigError as exc:
        _fail(str(exc), 2)
    mode = services_of(api).gateway.router.mode
    found = member_key(settings)
    # this line goes to stderr: the server's log when not on a terminal
    key = shown_key(*found, on_terminal=sys.stderr.isatty()) if found else None
    err.print(
        f"Sparklio gateway in [bold]{mode}[/] mode on http://{host}:{port} (docs: /docs). "
        f"Try:\n{curl_example(host, port, key)}\n"
        f"{studio_line(host, port, settings, on_terminal=sys.stderr.isatty())}",
        highlight=False,
        soft_wrap=True,
    )
    if workers > 1 and not settings.redis_url:
        err.print(
            f"{workers} workers without REDIS_URL: each keeps its own endpoint limits and "
            "breakers (a limit of 2 becomes 2 per worker). Set REDIS_URL to share them.",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    serving.serve(api, settings, host, port, workers)


@app.command()
def worker() -> None:
    """Run queued campaigns beside `sparklio serve`, on the same database (DATABASE_URL:
    PostgreSQL to share it across machines). Ctrl-C stops; the campaigns it was running are
    resumed by the next worker started here."""
    import asyncio

    from sparklio import worker as worker_process
    from sparklio.main import create_app

    settings = _settings()
    configure_logging(settings.log_level)
    try:
        api = create_app(settings, migrate_in_child=True)
    except ConfigError as exc:
        _fail(str(exc), 2)

    def ready(executor: str) -> None:
        err.print(
            f"Sparklio worker {executor} runs queued campaigns (at most "
            f"{settings.campaign_worker_concurrency} here, {settings.campaign_concurrency} in "
            "all). Ctrl-C stops it.",
            highlight=False,
            soft_wrap=True,
        )

    asyncio.run(worker_process.run(api, ready))


@app.command()
def config(
    name: Annotated[str | None, typer.Argument(help="One setting, e.g. generator_mode.")] = None,
) -> None:
    """Show the effective settings (from the environment and .env); secrets are masked."""
    values = _settings().model_dump(mode="json")
    if name is not None:
        key = name.lower()
        if key not in values:
            _fail(f"no setting {name!r}; known: {', '.join(sorted(values))}", 2)
        typer.echo(values[key] if values[key] is not None else "")
        return
    table = Table(title="Settings (environment and .env)")
    table.add_column("variable")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(key.upper(), "" if value is None else str(value))
    Console().print(table)


TEST_USERS_FILE = "test-users.json"


@app.command("create-test-users")
def create_test_users(
    quiet: Annotated[bool, typer.Option(help="Say nothing when they already exist.")] = False,
) -> None:
    """Create an admin and a member test user with an API key each (once; idempotent).

    The credentials are printed when they are created and kept, readable by you only, in
    SPARKLIO_HOME/test-users.json, so `make run` can show a working curl line later.
    """
    from sparklio.db.engine import database_url, make_engine, migrate, sessions
    from sparklio.services.auth import AuthService

    settings = _settings()

    async def create() -> list[Any]:
        engine = make_engine(database_url(settings))
        try:
            return await AuthService(settings, sessions(engine)).ensure_test_users()
        finally:
            await engine.dispose()

    try:
        migrate(database_url(settings))
        created = asyncio.run(create())
    except ConfigError as exc:
        _fail(str(exc), 2)
    path = settings.home / TEST_USERS_FILE
    if not created:
        if not quiet:
            err.print(f"The test users already exist; their credentials are in {path}.",
                      highlight=False)  # fmt: skip
        return
    records = [
        {"email": c.email, "password": c.password, "role": c.role, "api_key": c.api_key}
        for c in created
    ]
    existing = json.loads(path.read_text()) if path.is_file() else []
    # made 0600 from the start (not chmod-ed after): never readable by others, not for a moment
    write_private(path, json.dumps([*existing, *records], indent=2).encode())
    # plain lines, not a table: a table cuts long keys to fit the terminal
    if sys.stdout.isatty():
        typer.echo(f"Created test users (shown once; also in {path}, readable by you only):")
        for c in created:
            typer.echo(f"  {c.role:<6}  {c.email}  password: {c.password}  API key: {c.api_key}")
        return
    # not a terminal: a log file or a pipe would keep the passwords and keys
    typer.echo(f"Created test users; their passwords and API keys are in {path} (readable by "
               "you only), printed only on a terminal:")  # fmt: skip
    for c in created:
        typer.echo(f"  {c.role:<6}  {c.email}  API key: {shown_key(c.api_key, str(path), False)}")


def saved_test_users(settings: Settings) -> list[dict[str, str]]:
    """The test users `create-test-users` made (none when it has not run)."""
    try:
        users = json.loads((settings.home / TEST_USERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [u for u in users if isinstance(u, dict)] if isinstance(users, list) else []


def member_key(settings: Settings) -> tuple[str, str] | None:
    """GATEWAY_API_KEY, else the member test user's key from `create-test-users`, with where
    it was found."""
    if settings.gateway_api_key:
        return settings.gateway_api_key, "GATEWAY_API_KEY"
    users = saved_test_users(settings)
    key = next((u["api_key"] for u in users if u.get("role") == "member"), None)
    return None if key is None else (key, str(settings.home / TEST_USERS_FILE))


def studio_line(host: str, port: int, settings: Settings, *, on_terminal: bool) -> str:
    """Where the web studio is, and who can log in: the test users' emails, with their
    passwords on a terminal (elsewhere, a log would keep them: where they are instead)."""
    line = f"Studio: http://{host}:{port}/studio"
    users = saved_test_users(settings)
    if not users:
        return line
    path = settings.home / TEST_USERS_FILE
    logins = [f"{u.get('email')} / {u.get('password')}" if on_terminal else str(u.get("email"))
              for u in users]  # fmt: skip
    where = "" if on_terminal else f" (passwords in {path})"
    return f"{line}  log in as {', '.join(logins)}{where}"


db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database (DATABASE_URL, else SQLite in SPARKLIO_HOME) to the latest schema."""
    from sparklio.db.engine import current_revision, database_url, migrate

    url = database_url(_settings())
    try:
        migrate(url)
        typer.echo(f"database at revision {current_revision(url)}")
    except ConfigError as exc:
        _fail(str(exc), 2)


@app.command()
def routes() -> None:
    """Show the effective routing table for the current GENERATOR_MODE, and the endpoints
    it routes to with their health and load."""
    from sparklio.services.gateway.routing import load_routing_file, routing_path
    from sparklio.services.llm.gateway import LLMGateway
    from sparklio.services.llm.providers.registry import ProviderRegistry
    from sparklio.services.media.providers.registry import MediaRegistry

    settings = _settings()
    registry = ProviderRegistry()
    path = routing_path(settings.llm_routing_file)
    try:
        routing = load_routing_file(path, registry.names(), MediaRegistry().names())
        gateway = LLMGateway.build(settings, routing, path, registry, call_log=None)
    except ConfigError as exc:
        _fail(str(exc), 2)
    router = gateway.router
    table = Table(title=f"Routes in {router.mode} mode ({router.path})")
    for column in ("rule", "candidates (first is primary)", "options"):
        table.add_column(column)
    for row in router.table():
        candidates = row["candidates"]
        table.add_row(
            row["rule"],
            "\n".join(
                f"{c.get('provider') or '|'.join(c['endpoints'])}/{c['model']}" for c in candidates
            ),
            "\n".join(json.dumps(c["options"]) if c["options"] else "" for c in candidates),
        )
    console = Console()
    console.print(table)

    async def check() -> list[dict[str, Any]]:
        try:
            return await gateway.endpoints.report(router.models_by_endpoint(), within=5.0)
        finally:
            await gateway.aclose()

    endpoints = Table(title="Endpoints")
    for column in ("endpoint", "kind", "address", "health", "load"):
        endpoints.add_column(column)
    for row in asyncio.run(check()):
        health = "ok" if row["available"] else "down"
        limit = row["max_concurrency"] or "∞"
        endpoints.add_row(
            row["name"],
            row["kind"],
            row["base_url"] or "in-process",
            f"{health}{': ' + row['message'] if row['message'] else ''}",
            f"{row['circuit']}, {row['in_flight']}/{limit} busy, {row['waiting']} waiting",
        )
    console.print(endpoints)


@asynccontextmanager
async def gateway_connection(
    url: str | None, *, streaming: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """What the gateway clients need to reach a gateway: the one at `url`, or, without one,
    a whole Sparklio in this process, logged in as the local user (this run holds
    SPARKLIO_HOME), closed on the way out (with the campaigns it ran: DBOS is destroyed).
    Yields the clients' keyword arguments. `streaming`: in-process answers stream as the app
    sends them (server-sent events arrive live), not whole at the end."""
    if url is not None:
        yield {"base_url": url}
        return
    from sparklio.api.deps import services_of
    from sparklio.main import close_app, create_app

    api = create_app(_settings())
    try:
        from sparklio.services.clients.asgi import StreamingASGITransport

        key = await services_of(api).auth.local_token()
        transport = StreamingASGITransport(api) if streaming else httpx.ASGITransport(app=api)
        yield {"base_url": "http://sparklio.local", "api_key": key, "transport": transport}
    finally:  # no lifespan runs in-process: close the providers and the database here
        await close_app(api)


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{what} is not valid JSON: {exc}", 2)


@app.command()
def generate(
    role: Annotated[str, typer.Option(help="Who asks, e.g. copywriter.")],
    task: Annotated[str, typer.Option(help="What for, e.g. channel_copy.")],
    payload: Annotated[str, typer.Option(help="The data, as a JSON object.")] = "{}",
    mode: Annotated[str, typer.Option(help="json or text.")] = "json",
    schema: Annotated[
        Path | None, typer.Option(help="File with the JSON Schema of the answer.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Call a running gateway at this URL instead of one in-process."),
    ] = None,
) -> None:
    """Make one call and print the response JSON."""
    from sparklio.services.clients.llm_client import LLMGatewayClient

    data = _load_json(payload, "--payload")
    output_schema = None
    if schema is not None:
        try:
            output_schema = _load_json(schema.read_text(encoding="utf-8"), f"--schema {schema}")
        except OSError as exc:
            _fail(f"--schema {schema}: {exc.strerror}", 2)
    if mode not in ("json", "text"):
        _fail(f"--mode must be json or text (got {mode!r})", 2)

    async def call() -> dict[str, Any]:
        async with (
            gateway_connection(url) as connection,
            LLMGatewayClient(**connection) as client,
        ):
            response = await client.generate(
                role=role,
                task=task,
                payload=data,
                schema=output_schema,
                mode=cast(OutputMode, mode),  # checked above
            )
            return response.model_dump()

    try:
        result = asyncio.run(call())
    except ConfigError as exc:
        _fail(str(exc), 2)
    except GatewayError as exc:
        _fail(f"{exc.type} ({exc.status}): {exc.message}", 1)
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2))


class CampaignFailed(Exception):
    """The campaign ended without a report: failed at a step, or cancelled."""


@app.command()
def campaign(
    brief: Annotated[str, typer.Option(help="A brief file (.yaml, .json or text) or the text.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the report.")] = None,
    gateway: Annotated[
        str | None, typer.Option(help="Use a running gateway at this URL, not one in-process.")
    ] = None,
) -> None:
    """Run the six agents on a brief and write campaign.json, campaign.md and campaign.html.

    The campaign runs through the campaigns API (POST /api/v1/campaigns) of a gateway in this
    process or of the one at --gateway; its steps show as they start and finish."""
    from sparklio.agents.brief_file import load_brief

    try:
        data = load_brief(brief)
    except BriefError as exc:
        _fail(f"--brief: {exc}", 2)
    body: dict[str, Any] = {"brief": data.brief, "product_facts": data.product_facts,
                            "words_to_avoid": data.words_to_avoid}  # fmt: skip
    for key in ("brand_guide", "channels", "variants"):
        if getattr(data, key) is not None:
            body[key] = getattr(data, key)
    folder = out or Path("campaigns") / time.strftime("%Y%m%d-%H%M%S")
    console = Console()
    started: dict[str, str] = {}  # the campaign's id once the gateway has taken it
    try:
        result, paths = asyncio.run(_run_campaign(body, folder, gateway, console, started))
    except KeyboardInterrupt:
        _interrupted(started.get("id"), gateway, started.get("ended"))
    except CampaignFailed as exc:
        _fail(str(exc), 1)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except GatewayError as exc:
        if exc.status == 422:  # the brief file's content, refused: name what was wrong
            _fail(f"--brief: {exc.message}", 2)
        _fail(f"{exc.type} ({exc.status}): {exc.message}", 1)
    table = Table(title=f"Campaign: {result.brief.product} ({result.status})")
    for column in ("step", "provider/model", "ms", "tokens", "attempts"):
        table.add_column(column)
    for step in result.steps:
        table.add_row(
            step.step,
            f"{step.provider}/{step.model}",
            f"{step.latency_ms:.0f}",
            str(step.prompt_tokens + step.completion_tokens),
            str(len(step.attempts)),
        )
    console.print(table)
    console.print(
        f"pipeline {result.pipeline_ms:.0f} ms; report: {paths.html} "
        f"(also {paths.markdown.name} and {paths.data.name})",
        highlight=False,
    )


def _interrupted(campaign_id: str | None, url: str | None, ended: str | None) -> NoReturn:
    """Ctrl-C: the campaign is durable, so say where it goes on and how to stop it. On a
    server it goes on running; in-process it stops with this process and resumes at its
    unfinished step when Sparklio next starts on this SPARKLIO_HOME. Exit 130, as a shell
    does for SIGINT. `ended`: the campaign's last event, when it had come."""
    if campaign_id is None:
        err.print("interrupted before the gateway said it took the campaign (GET "
                  "/api/v1/campaigns lists it if it did)", highlight=False)  # fmt: skip
    elif ended is not None:
        err.print(f"interrupted; campaign {campaign_id} had ended ({ended}): GET "
                  f"/api/v1/campaigns/{campaign_id}/report.html", highlight=False)  # fmt: skip
    elif url is not None:
        base = f"{url.rstrip('/')}/api/v1/campaigns/{campaign_id}"
        auth = '-H "Authorization: Bearer $GATEWAY_API_KEY"'
        err.print(
            f"stopped following campaign {campaign_id}: it goes on running on {url}.\n"
            f"  follow it:  curl -N {auth} {base}/events\n"
            f"  cancel it:  curl -X POST {auth} {base}/cancel\n"
            f"  its report: {base}/report.html once it is done",
            highlight=False,
            soft_wrap=True,
        )
    else:
        home = _settings().home
        base = f"/api/v1/campaigns/{campaign_id}"
        err.print(
            f"stopped campaign {campaign_id}, which ran in this process. It is kept in {home} "
            "and resumes at its unfinished step when Sparklio next starts there:\n"
            f"  resume it:  sparklio serve   (then follow it: GET {base}/events)\n"
            f"  cancel it:  POST {base}/cancel on that server",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(130)


#: How often, and how long apart, a broken event stream is followed on (a server restart).
FOLLOW_ATTEMPTS = 30
FOLLOW_PAUSE = 2.0


async def _run_campaign(
    body: dict[str, Any], folder: Path, url: str | None, console: Console, started: dict[str, str]
) -> Any:
    from sparklio.agents.pipeline import Campaign
    from sparklio.agents.report import collect_images, write_report
    from sparklio.exceptions import (
        GatewayConnectionError,
        GatewayResponseError,
        UpstreamTimeoutError,
    )
    from sparklio.services.clients.campaign_client import CampaignGatewayClient
    from sparklio.services.clients.media_client import MediaGatewayClient

    timeout = httpx.Timeout(600.0, connect=5.0)
    async with (
        gateway_connection(url, streaming=True) as connection,
        CampaignGatewayClient(**connection, timeout=timeout) as campaigns,
        MediaGatewayClient(**connection, timeout=timeout) as media,
    ):
        with console.status("starting the campaign", spinner="dots") as status:
            campaign_id = started["id"] = (await campaigns.start(body))["id"]
            console.print(f"campaign {campaign_id}", highlight=False)
            last: dict[str, Any] | None = None
            failed_step: tuple[str, str] | None = None
            seen: int | None = None
            attempts = 0
            while last is None:
                try:
                    async for event in campaigns.events(campaign_id, seen):
                        seen = event["id"]
                        kind, step = event["type"], event.get("step")
                        if kind == "step_started":
                            status.update(f"{step} (running)")
                            console.print(f"→ {step}", highlight=False)
                        elif kind == "step_finished":
                            console.print(f"✓ {step}", highlight=False)
                        elif kind == "step_failed":
                            failed_step = (step or "?", str(event["data"].get("error", "")))
                            console.print(f"✗ {step}", highlight=False)
                        elif kind in ("done", "failed", "cancelled"):
                            last = event
                            started["ended"] = kind
                except (GatewayConnectionError, GatewayResponseError, UpstreamTimeoutError):
                    # the server went away mid-campaign (a restart): the campaign is durable,
                    # so follow on after the last event seen
                    attempts += 1
                    if attempts > FOLLOW_ATTEMPTS:
                        raise
                    status.update(f"reconnecting to the gateway ({attempts})")
                    await asyncio.sleep(FOLLOW_PAUSE)
            if last["type"] == "cancelled":
                raise CampaignFailed(f"campaign {campaign_id} was cancelled")
            if last["type"] == "failed":
                if failed_step is not None:
                    step, error = failed_step
                    error = re.sub(r"^step \S+ failed: ", "", error)
                    raise CampaignFailed(f"the campaign stopped at step {step}: {error}")
                message = last["data"].get("message", "unknown error")
                raise CampaignFailed(f"the campaign failed: {message}")
            status.update("downloading the report and images")
            result = Campaign.model_validate(await campaigns.report(campaign_id))
            # the server's report.html has no images inline: the report is written here, from
            # report.json and the images, as one self-contained page
            images = await collect_images(media, result)
        return result, write_report(result, folder, images)


if __name__ == "__main__":  # pragma: no cover
    app()
