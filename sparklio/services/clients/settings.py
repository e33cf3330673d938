"""Where the clients find the gateway: GATEWAY_BASE_URL and GATEWAY_API_KEY, from the
environment or `.env` (the environment wins), read the way the server reads its settings.

The clients' own class, so that a program that only calls the gateway loads none of the
server's settings (nor fails on one of them it does not use).
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sparklio.exceptions import ConfigError

#: Where `make run` (and `sparklio serve`) listen by default.
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class ClientSettings(BaseSettings):
    """The clients' settings, by environment variable name (case-insensitive)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    gateway_base_url: str = DEFAULT_BASE_URL
    gateway_api_key: str | None = None


def load_client_settings() -> ClientSettings:
    """Read the clients' settings; a bad value is a ConfigError naming the variable."""
    try:
        return ClientSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"Invalid setting: {problems}. Fix it in the environment or .env."
        ) from None


__all__ = ["DEFAULT_BASE_URL", "ClientSettings", "load_client_settings"]
