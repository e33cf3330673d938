"""A private PostgreSQL cluster for the test session: its own data dir, port and socket dir,
trust auth, fsync off, so a test may stop and restart the database under the code it tests.

`initdb` refuses to run as root: then the cluster runs as the `postgres` system user (through
`runuser`), with a data dir that user owns. Without PostgreSQL binaries the tests that need
it are skipped, or fail when `CI` is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparklio.db.engine import migrate

SUPERUSER = "postgres"
_CLUSTER = pytest.StashKey["PostgresCluster"]()


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl, else PATH's."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """One throwaway cluster: `start()`, `stop()`, `create_database()`, `destroy()`."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        # not pytest's tmp_path: it is private to root (0700), and the server may run as postgres
        self.dir = Path(tempfile.mkdtemp(prefix="sparklio-pg-"))
        self.data = self.dir / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, user="postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--no-instructions",
        )  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-k {self.dir} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  options, "start")  # fmt: skip

    def stop(self) -> None:
        """Stop at once: open connections are cut, as when a database server goes away."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> PostgresCluster:
    """The session's cluster, started once however many modules import this fixture (it is
    kept in the pytest config's stash and destroyed when the session ends)."""
    stash = request.config.stash
    if _CLUSTER not in stash:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            reason = "no PostgreSQL binaries (initdb) under /usr/lib/postgresql/*/bin or on PATH"
            if os.environ.get("CI"):
                pytest.fail(reason + "; CI must have them")
            pytest.skip(reason)
        cluster = PostgresCluster(bin_dir)
        request.config.add_cleanup(cluster.destroy)
        cluster.start()
        stash[_CLUSTER] = cluster
    return stash[_CLUSTER]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database of each kind: SQLite in tmp_path, a new PostgreSQL
    database in the private cluster."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sparklio.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        url = cluster.create_database()
    migrate(url)
    yield url


__all__ = ["PostgresCluster", "db_url", "find_bin_dir", "postgres"]
