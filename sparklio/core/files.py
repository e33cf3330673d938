"""Files under SPARKLIO_HOME are their owner's only: folders 0700, files 0600.

They hold the database, the JWT secret, test users' passwords and keys, call records and
generated images. Files are created with their mode (`os.open`), never chmod-ed afterwards,
so there is no moment when another user could open them; a folder or database left looser
by an older version is tightened when the gateway next starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

log = logging.getLogger("sparklio.files")


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter, made (with missing parents) if need be."""
    if not path.is_dir():
        if not path.parent.exists():
            private_dir(path.parent)
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            path.mkdir(mode=PRIVATE_DIR)
    _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """`path` as an existing file only its owner can read (made empty if missing)."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    _tighten(path, PRIVATE_FILE)
    return path


def open_private(path: Path, flags: int) -> int:
    """`os.open(path, flags | O_CREAT)` with a new file made 0600 (and its folder 0700)."""
    private_dir(path.parent)
    return os.open(path, flags | os.O_CREAT, PRIVATE_FILE)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, atomically: a reader sees the old file or the new one."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _tighten(path: Path, mode: int) -> None:
    """Take group and other permissions off `path` when it is ours and has some."""
    status = path.stat()
    if status.st_mode & 0o077 and status.st_uid == os.getuid():
        path.chmod(mode)
        log.info("%s was readable by other users: now mode %o", path, mode)
