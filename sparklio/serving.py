"""`sparklio serve`'s HTTP server: granian, with limits for slow and hostile clients.

uvicorn has no header size cap with httptools and no header read timeout at all, so one
client could make it hold a 32 MB header, and 2,000 connections trickling header bytes were
held as long as they kept trickling (issue 10). granian (hyper) closes a connection whose
headers do not arrive within SERVER_HEADER_TIMEOUT (idle keep-alive connections too),
answers 431 to a header larger than SERVER_MAX_HEADER_BYTES without reading the rest, and
accepts at most SERVER_MAX_CONNECTIONS connections at once (more wait in the listen
backlog). The body read timeout is the app's (RequestContextMiddleware), as granian has none.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from sparklio.core.config import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

# the app factory named in granian's process title and logs; `load_app` builds it
TARGET = "sparklio.main:create_app"


class _Preloaded:
    """The app `serve` built, which a forked worker inherits instead of building its own:
    its memory is then shared with the parent (gc.freeze keeps it so). A worker started
    by `spawn` (Python 3.14's default) finds nothing here and builds the app itself."""

    app: FastAPI | None = None
    #: the `serve` process, which the worker must not outlive
    parent: int | None = None


def load_app(target: str) -> FastAPI:
    """The app, in granian's worker process (granian calls this with TARGET)."""
    _die_with_parent(_Preloaded.parent or os.getppid())
    if _Preloaded.app is not None:
        return _Preloaded.app
    from sparklio.cli import configure_logging
    from sparklio.main import create_app

    settings = load_settings()
    configure_logging(settings.log_level)  # a spawned worker starts with no logging set up
    app = create_app(settings, migrate_db=False)
    freeze_heap()
    return app


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when the `serve` process dies, however it
    dies: a `kill -9` of `sparklio serve` left its worker serving on the port, orphaned
    (seen in tests/test_db_outage.py). SIGTERM lets the worker shut down as usual and write
    its call records. Linux only (prctl); elsewhere a supervisor stops the process group."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def freeze_heap() -> None:
    """Everything built so far lives as long as the process: freeze it out of the collector's
    scans (and, before a fork, out of copy-on-write) and collect less often. Measured in
    bench/gateway_overhead.py (STYLE.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def server_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """granian's options for these settings."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    return {
        "address": host,
        "port": port,
        "interface": Interfaces.ASGI,
        # HTTP/1.1 only: HTTP/2 has limits of its own (16 MB header frames by default)
        "http": HTTPModes.http1,
        "websockets": False,
        "backlog": max(128, settings.server_max_connections),
        "backpressure": settings.server_max_connections,
        "http1_settings": HTTP1Settings(
            header_read_timeout=round(settings.server_header_timeout * 1000),
            max_buffer_size=settings.server_max_header_bytes,
        ),
        "log_level": _granian_level(settings.log_level),
        # granian's own lines go through the root logger, in the gateway's format
        "log_dictconfig": {"loggers": {"_granian": {"propagate": True}}},
        "log_access": False,  # one log line per call comes from the gateway itself
        "workers_kill_timeout": 5,
        "respawn_failed_workers": True,
    }


def _granian_level(level: str) -> Any:
    from granian.log import LogLevels

    try:
        return LogLevels(level.lower())
    except ValueError:
        return LogLevels.info


def serve(app: FastAPI, settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve `app` until SIGINT or SIGTERM, in `workers` granian worker processes.

    One worker serves the app built here. Several build their own each (`load_app`): an
    app holds connections, tasks and the campaign runner's state, which forked copies
    would share the file descriptors of. Their endpoint limits and breakers are shared
    only through REDIS_URL; without it each worker has its own (`serve` says so)."""
    from granian.server import Server

    _Preloaded.app = app if workers == 1 else None
    _Preloaded.parent = os.getpid()
    freeze_heap()
    options = {**server_options(settings, host, port), "workers": workers}
    Server(TARGET, **options).serve(target_loader=load_app)
