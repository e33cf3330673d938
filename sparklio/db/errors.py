"""Telling a database outage apart from a bug, in one place.

A database that is down, restarting or refusing connections shows up as different exceptions
depending on the driver and the moment: SQLAlchemy's OperationalError/InterfaceError wrapping
asyncpg's or sqlite3's errors, a bare OSError (connection refused) or a TimeoutError from the
connect timeout. Callers that must keep working through an outage (the call log, the credential
touch) and the API's error handlers ask `is_outage(exc)`; `outage_error(exc)` is the 503 a
user gets for it.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from sparklio.exceptions import DatabaseUnavailableError

#: Exceptions that mean "the database cannot be reached now", not "the query is wrong".
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database is unreachable (rather than a bad query or a bug)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OUTAGE_ERRORS):
        return True
    # asyncpg raises its own classes for a server that shuts down mid-query
    name = type(exc).__name__
    return name in {"ConnectionDoesNotExistError", "CannotConnectNowError",
                    "ConnectionFailureError", "AdminShutdownError"}  # fmt: skip


def describe(exc: BaseException) -> str:
    """The first line of an error, for `/health` and the log (SQLAlchemy's run long)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: the database did not answer in time"
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]


def outage_error(exc: BaseException | None = None) -> DatabaseUnavailableError:
    """The 503 a user gets while the database is down."""
    reason = f" ({type(exc).__name__})" if exc is not None else ""
    return DatabaseUnavailableError(
        f"The database is unavailable{reason}; nothing was changed. Retry in a few seconds."
    )


__all__ = ["OUTAGE_ERRORS", "describe", "is_outage", "outage_error"]
