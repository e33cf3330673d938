"""The one way Sparklio's parts open a Redis client (REDIS_URL): every command bounded by a
timeout and never retried, so a Redis that does not answer costs a call at most `timeout`
and the part goes on with its own in-memory state; and the URL as it may be shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparklio.exceptions import ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis


def redis_client(url: str, *, timeout: float, **options: Any) -> Redis:
    """A redis-py asyncio client for `url` whose socket waits at most `timeout` seconds and
    which never retries; ConfigError for a URL that is not a Redis URL. `options` go to
    `Redis.from_url` (e.g. decode_responses)."""
    from redis.asyncio import Redis  # imported only when Redis is configured
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    try:
        return Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, **options,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL is not a Redis URL: {exc}") from None


def without_password(url: str) -> str:
    """`url` with its credentials replaced by `***` (what may be shown or logged)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"
