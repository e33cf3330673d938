"""Settings, read from the environment and `.env` (see `.env.example` for every name)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sparklio.exceptions import ConfigError

GeneratorMode = Literal["mock", "live"]


class Settings(BaseSettings):
    """Everything configurable, by its environment variable name (case-insensitive)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    generator_mode: GeneratorMode = "mock"

    llm_routing_file: Path | None = Field(
        default=None, description="Routing file to use instead of the shipped one."
    )
    prompts_dir: Path | None = Field(
        default=None, description="Folder whose templates override the shipped prompts."
    )
    llm_timeout: float = Field(default=120.0, gt=0, description="Seconds per provider attempt.")
    llm_deadline: float = Field(default=300.0, gt=0, description="Seconds per call, all tries.")
    llm_max_retries: int = Field(default=2, ge=0, description="Retries per candidate.")
    llm_backoff_base: float = Field(default=0.25, ge=0)
    llm_backoff_max: float = Field(default=4.0, ge=0)
    llm_retry_after_max: float = Field(default=10.0, ge=0)
    llm_max_queue: int = Field(default=64, ge=0, description="Calls waiting per endpoint.")
    llm_breaker_failures: int = Field(default=5, ge=1)
    llm_breaker_cooldown: float = Field(default=30.0, ge=0)
    allow_remote_calls: bool = Field(
        default=True, description="False refuses model calls to hosts other than loopback."
    )
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    server_header_timeout: float = Field(
        default=10.0, gt=0, le=60, description="Seconds a client has to send its headers."
    )
    server_body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a client has to send its request body."
    )
    server_max_header_bytes: int = Field(
        default=32_768, ge=8192, description="Largest request head (line and headers); 431."
    )
    server_max_connections: int = Field(
        default=1000, ge=1, description="Connections served at once; more wait to be accepted."
    )

    ollama_base_url: str = "http://localhost:11434"
    ollama_timeout: float = Field(default=120.0, gt=0)
    ollama_keep_alive: str = "30m"
    ollama_max_concurrency: int = Field(default=2, ge=1)

    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    openai_timeout: float = Field(default=60.0, gt=0)
    openai_max_concurrency: int = Field(default=64, ge=1)

    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_api_key: SecretStr | None = None
    anthropic_timeout: float = Field(default=60.0, gt=0)
    anthropic_max_concurrency: int = Field(default=16, ge=1)
    comfyui_base_url: str = "http://localhost:8188"
    comfyui_timeout: float = Field(default=300.0, gt=0)
    comfyui_max_concurrency: int = Field(default=1, ge=1)
    workflows_dir: Path | None = Field(
        default=None, description="Folder of ComfyUI workflow templates beside the shipped ones."
    )
    campaign_concurrency: int = Field(
        default=8, ge=1, le=1000,
        description="Campaigns run at once, across the server and every `sparklio worker` "
        "on its database (the rest wait in the queue).",
    )  # fmt: skip
    campaign_worker_concurrency: int = Field(
        default=4, ge=1, le=1000,
        description="Campaigns one process (the server or a worker) runs at once.",
    )  # fmt: skip
    campaigns_in_server: bool = Field(
        default=True,
        description="False: `sparklio serve` only queues campaigns; `sparklio worker` runs them.",
    )
    media_max_queue: int = Field(default=100, ge=0, description="Image jobs waiting per endpoint.")
    media_max_wait: float = Field(default=300.0, ge=0, description="Longest ?wait= honoured.")

    gateway_base_url: str = "http://127.0.0.1:8000"
    gateway_api_key: str | None = None

    llamacpp_threads: int | None = Field(default=None, ge=1, description="Default: all cores.")
    llamacpp_n_ctx: int = Field(default=2048, ge=128)
    llamacpp_preload: bool = False
    llamacpp_timeout: float = Field(default=300.0, gt=0)
    llamacpp_max_concurrency: int = Field(default=1, ge=1)

    database_url: str | None = Field(
        default=None, description="Default: SQLite at SPARKLIO_HOME/sparklio.db."
    )
    jwt_secret: SecretStr | None = Field(
        default=None, description="Default: generated once and kept in SPARKLIO_HOME."
    )
    jwt_expiry_minutes: int = Field(default=60 * 12, ge=1)
    session_cookie_secure: bool = Field(
        default=False,
        description="Mark the studio's session cookie Secure even when the request is http "
        "(behind a TLS proxy that is not in FORWARDED_ALLOW_IPS).",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Proxies (IPs, CIDRs or *) whose X-Forwarded-For/Forwarded are believed.",
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        # checked here so a typo stops the server at start, not a login at 3 am
        for entry in filter(None, (part.strip() for part in value.split(","))):
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
        return value

    redis_url: str | None = Field(
        default=None,
        description="Keep the response cache in Redis (redis://host:6379/0), shared by every "
        "gateway process; unset: in memory, per process.",
    )
    redis_timeout: float = Field(
        default=0.1, gt=0, le=5,
        description="Seconds a Redis command may take; then the call goes on as a miss.",
    )  # fmt: skip
    cache_ttl: float = Field(
        default=3600.0, ge=0,
        description="Seconds a cached answer is kept, unless its route sets cache_ttl; 0: off.",
    )  # fmt: skip
    cache_max_entries: int = Field(
        default=10_000, ge=1, description="Answers the in-memory cache keeps (least recent go)."
    )
    cache_prefix: str = Field(
        default="sparklio:cache:", description="Prefix of the cache's keys in Redis."
    )
    redis_auth_prefix: str = Field(
        default="sparklio:auth:",
        description="Prefix of the keys and channel through which gateway processes share "
        "revocations and failed-login counts in Redis (with REDIS_URL).",
    )
    redis_media_prefix: str = Field(
        default="sparklio:media:",
        description="Prefix of the keys through which gateway processes share image jobs' live "
        "progress in Redis (with REDIS_URL).",
    )
    budget_prefix: str = Field(
        default="sparklio:budget:", description="Prefix of the limits' counters in Redis."
    )
    budget_redis_timeout: float = Field(
        default=1.0, gt=0, le=10,
        description="Seconds a limits script in Redis may take; then this worker counts on its "
        "own. Longer than REDIS_TIMEOUT: a busy worker must not give up on the shared counts.",
    )  # fmt: skip
    default_rpm: int | None = Field(
        default=None, ge=1, description="Requests per minute per user without its own; unset: none."
    )
    default_tpm: int | None = Field(
        default=None, ge=1, description="Tokens per minute per user without its own; unset: none."
    )
    default_usd_per_day: float | None = Field(
        default=None, ge=0, description="USD a user may spend per UTC day without its own limit."
    )
    default_usd_per_month: float | None = Field(
        default=None, ge=0, description="USD a user may spend per UTC month without its own."
    )
    budget_max_tokens: int = Field(
        default=1024, ge=1,
        description="Completion tokens a call without max_tokens is reserved for, priced, "
        "before it runs (the difference is given back after).",
    )  # fmt: skip
    guard_prefix: str = Field(
        default="sparklio:guard:",
        description="Prefix of the keys in Redis (REDIS_URL) that hold each endpoint's "
        "concurrency slots, waiting line and circuit breaker, shared by every process.",
    )
    guard_timeout: float = Field(
        default=1.0, gt=0, le=5,
        description="Seconds a shared guard's Redis command may take; then that call uses "
        "this process's own limit and breaker (longer than REDIS_TIMEOUT: giving up on Redis "
        "here lets an endpoint's limit be exceeded, where the cache only misses).",
    )  # fmt: skip

    call_log_buffer: int = Field(default=10_000, ge=1)
    metrics_public: bool = Field(
        default=False,
        description="True: GET /metrics answers anyone (scraped on a private network); "
        "false: only admins (an admin API key or token).",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="Export traces over OTLP/HTTP to this collector (http://host:4318); "
        "unset: no traces.",
    )
    db_probe_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between two checks that the database answers.",
    )

    sparklio_home: Path = Path("~/.sparklio")
    log_level: str = "info"

    @property
    def home(self) -> Path:
        """The state directory, with `~` expanded."""
        return self.sparklio_home.expanduser()


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a bad value into a ConfigError that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            f" (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ConfigError(
            f"Invalid setting: {problems}. Fix it in the environment or .env."
        ) from None
