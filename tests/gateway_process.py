"""`sparklio serve` in a subprocess, for tests of what only the real server does."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent  # the checkout whose `sparklio` is tested
MARGIN = 20.0  # seconds on top of a limit before a test calls the limit broken


def sparklio_env(home: Path, **settings: str) -> dict[str, str]:
    """A Sparklio process's environment: this one's without Sparklio settings, mock mode."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SERVER_", "GENERATOR_", "DATABASE_", "LLM_", "GATEWAY_", "CAMPAIGN"))
    }
    env |= {"SPARKLIO_HOME": str(home), "GENERATOR_MODE": "mock", "LOG_LEVEL": "warning"}
    return env | settings


class Process:
    """A Sparklio command in a subprocess, its output in a log file (a pipe nobody reads
    would stall it), started from the checkout under test."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparklio.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Until `ready()`; RuntimeError with the output if the process ends or 90 s pass
        first (a start took 25 s on a busy 2-core machine)."""
        deadline = time.monotonic() + 90
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{what} did not start: {self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """`kill -9`: no shutdown of any kind, as a crash of its machine would."""
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        """SIGTERM, as a supervisor stops it; SIGKILL if it has not gone in 15 s."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


class Server(Process):
    """A `sparklio serve` process in mock mode on 127.0.0.1, with a temp SPARKLIO_HOME."""

    def __init__(self, home: Path, **settings: str) -> None:
        self.port = free_port()
        super().__init__(["serve", "--port", str(self.port)], sparklio_env(home, **settings),
                         home.parent / f"serve-{self.port}.log")  # fmt: skip
        self.wait_until(lambda: health(self.port) == 200, "sparklio serve")

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock


class Worker(Process):
    """A `sparklio worker` process (mock mode unless told), ready once it takes campaigns."""

    READY = "runs queued campaigns"

    def __init__(self, home: Path, **settings: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        super().__init__(["worker"], sparklio_env(home, **settings), home / "worker.log")
        self.wait_until(lambda: self.READY in self.output(), "sparklio worker")
        #: its executor id, as DBOS records it on the workflows it runs
        self.executor = self.output().split("Sparklio worker ", 1)[1].split()[0]


def health(port: int, timeout: float = 5.0) -> int | None:
    """The status of GET /health on a fresh connection, or None if it did not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            head = sock.recv(64)
    except OSError:
        return None
    return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else None


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (granian serves from worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo.extend(children.get(current, []))
    return tree


def kill_9(server: Server) -> None:
    """`kill -9` the server and its workers at once, as a crash of the machine would."""
    for pid in process_tree(server.proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.proc.wait(10)
    server.log.close()
