"""`sparklio worker`: a process that runs queued campaigns and serves no HTTP.

It builds the same app as `sparklio serve` (the steps reach the models through its gateway,
in-process) and launches DBOS on the same database, where it takes campaigns from the queue
as the queue's concurrency allows; the server and every worker share that limit. A worker
stopped (Ctrl-C, SIGTERM) leaves its campaigns pending; the next worker in its slot (see
sparklio.services.campaigns.executors) resumes them at their unfinished step.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from fastapi import FastAPI

from sparklio.api.deps import services_of
from sparklio.main import close_app


async def run(app: FastAPI, on_ready: Callable[[str], None]) -> None:
    """Run campaigns until SIGINT or SIGTERM; `on_ready(executor_id)` once they are taken up
    (when the database answers: a worker started before it waits for it)."""
    services = services_of(app)
    campaigns = services.campaigns
    campaigns.role = "worker"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def launch() -> None:
        await campaigns.start()
        # the image jobs this slot left unfinished resume here too (campaigns' images)
        await services.media.recover()
        if campaigns.executor is not None:
            on_ready(campaigns.executor.id)

    try:
        await services.call_log.start()
        services.db_monitor.after_migrations(launch)
        services.db_monitor.start()
        await services.gateway.start()
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await close_app(app)
