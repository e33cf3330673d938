"""Which executor this process is to DBOS: a name no live process shares, and the same name
as the process it replaces.

DBOS recovers, at launch, the unfinished workflows of its own executor id. Two live processes
with one id would each resume the other's campaigns (and pay for their steps twice); a process
with a fresh id each start would never resume those of the one it replaces. So each process
claims the lowest free slot of its role on this host among the processes on the same
database, `<host>:<role>-<n>`, by holding a lock file in a folder of the host's temp dir named
after that database (per user: `/tmp/sparklio-executors-<uid>/<database digest>/worker-2.lock`),
whatever its SPARKLIO_HOME: the kernel lets the lock go however the process ends, and the next
process of that role on this host and database takes the slot, and with it the workflows left
pending there. A process on another database never holds a slot up (their workflows are apart).
Hosts are told apart by their names, so hosts sharing one database need distinct host names.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: Slots looked at before giving up (a host runs a handful of workers, not hundreds).
MAX_SLOTS = 256


@dataclass
class Executor:
    """A claimed executor id; `release` lets the slot go (closing the process does too)."""

    id: str
    _lock: IO[str] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def lock_folder() -> Path:
    """Where this host's slots are held (one folder per user: others may not write there)."""
    return Path(tempfile.gettempdir()) / f"sparklio-executors-{os.getuid()}"


def claim(role: str, database: str, folder: Path | None = None) -> Executor:
    """The lowest free `<host>:<role>-<n>` slot of this host on `database` (DBOS's system
    database URL), held until released."""
    folder = (folder or lock_folder()) / hashlib.sha256(database.encode()).hexdigest()[:16]
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    host = socket.gethostname()
    for slot in range(1, MAX_SLOTS + 1):
        lock = open(folder / f"{role}-{slot}.lock", "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        return Executor(f"{host}:{role}-{slot}", lock)
    raise RuntimeError(f"all {MAX_SLOTS} {role} slots of {folder} are held by live processes")
