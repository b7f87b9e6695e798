"""One configuration object, read from ``CDEG_*`` environment variables and validated once.

Flask's ``from_prefixed_env`` is not used directly because several values need defaults that
depend on each other (the issuer on the host and port, the SQLite file on the instance folder).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class Config:
    """Every setting, TTL and limit of the gateway (seconds and counts), in one place."""
    env: str = "demo"                      # "production" disables demo data and demo codes
    instance_dir: Path = Path("instance")
    issuer: str = "http://127.0.0.1:8000"
    database_url: str | None = None       # None: SQLite in the instance folder
    redis_url: str | None = None          # None: the in-process stand-in
    redis_prefix: str = "cdeg:"
    departments_url: str | None = None    # None: mock departments answer in-process
    secret_key: str | None = None         # sessions and pairwise subjects; generated in demo mode
    data_key: str | None = None           # the KEK that wraps the data keys (gateway/identifiers)
    data_key_previous: str | None = None  # the KEK before, while `cdeg keys rotate-data` runs
    metrics_token: str | None = None      # /metrics needs it as a Bearer (set: anywhere; unset:
                                          # demo mode only)
    jobs_inline: bool | None = None       # default: inline when Redis is the stand-in
    max_body_bytes: int = 64 * 1024
    session_idle_seconds: int = 15 * 60
    client_rate_per_minute: int = 120_000     # data API calls per requester
    oauth_rate_per_minute: int = 6_000        # PAR, token, revoke, introspect calls per requester
    login_rate_per_minute: int = 20           # login attempts per address
    cdi_rate_per_minute: int = 6_000          # CDI query messages and polls per FI
    client_rate_lease_max: int = 16           # data API calls one process may take from Redis at
    client_rate_lease_ms: int = 50            # once, kept at most this long (rate_limits.py); 1: none
    connector_timeout: tuple[float, float] = (2.0, 5.0)
    # OAuth and tokens
    access_token_ttl: int = 600               # RFC 9068 tokens live at most 10 minutes (SPEC 3)
    authorization_code_ttl: int = 60          # single use
    pushed_request_ttl: int = 90              # a request_uri from /oauth/par
    client_assertion_max_ahead: int = 300     # a client assertion's exp at most this far ahead
    clock_skew: int = 60                      # iat / nbf at most this far in the future
    # the mock iAM Smart login (gateway/mock_iam_smart.py explains the bounds)
    login_code_ttl: int = 300                 # a pending second-factor code
    login_code_attempts: int = 5              # checks of one pending code
    wrong_code_window: int = 15 * 60
    wrong_code_day: int = 24 * 60 * 60
    unmarked_wrong_codes: int = 10            # per citizen per window, browsers without its mark
    unmarked_wrong_codes_a_day: int = 50      # per citizen per day, the same browsers
    marked_wrong_codes: int = 5               # per citizen per window, each marked browser
    device_mark_ttl: int = 30 * 24 * 60 * 60
    # jobs (gateway/jobs/outbox.py)
    job_attempts: int = 5                     # a job that failed this often waits for an operator
    job_stale_after: int = 300                # relayed but not done by then: handed on again
    job_timeout: int = 120                    # an RQ worker's limit for one job
    job_relay_every: int = 5                  # cdeg worker relays the outbox this often
    # the transparency log (gateway/audit/)
    log_shards: int = 1                       # trees; a citizen's entries stay in one
    log_batch: int = 1000                     # entries a sequencer integrates per transaction
    log_every: int = 1                        # cdeg worker sequences this often (seconds)
    checkpoint_every: int = 2                 # a new signed checkpoint at most this often
    sweep_every: int = 600                    # and asks for the expiry sweep once a window
    # the CDI bridge (gateway/cdi/, gateway/jobs/cdi_query.py, gateway/jobs/callbacks.py)
    cdi_result_ttl: int = 24 * 60 * 60        # a sealed result is purged this long after it is ready
    cdi_collected_grace: int = 10 * 60        # ... or this long after the FI first collected it
    callback_attempts: int = 6                # deliveries tried before the callback is "failed"
    callback_backoff: float = 2.0             # seconds before the 2nd try, doubled each time after
    callback_timeout: tuple[float, float] = (2.0, 5.0)   # (connect, read) per try
    callback_every: float = 1.0               # how often a worker looks for callbacks due

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def demo(self) -> bool:
        return not self.production

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.instance_dir / 'cdeg.sqlite3').resolve()}"

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def inline_jobs(self) -> bool:
        return self.embedded_redis if self.jobs_inline is None else self.jobs_inline

    @property
    def retired_key_published(self) -> int:
        """How long a retired signing key stays in /jwks.json: what it signed must verify."""
        return self.access_token_ttl + 60

    @property
    def api_audience(self) -> str:
        return f"{self.issuer}/api"

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Config":
        env = os.environ if environ is None else environ
        values: dict = {}
        if "CDEG_ENV" in env:
            values["env"] = env["CDEG_ENV"].strip().lower()
        if "CDEG_INSTANCE_DIR" in env:
            values["instance_dir"] = Path(env["CDEG_INSTANCE_DIR"])
        for name, key in (("CDEG_ISSUER", "issuer"), ("CDEG_DATABASE_URL", "database_url"),
                          ("CDEG_REDIS_URL", "redis_url"), ("CDEG_REDIS_PREFIX", "redis_prefix"),
                          ("CDEG_DEPARTMENTS_URL", "departments_url"),
                          ("CDEG_SECRET_KEY", "secret_key"),
                          ("CDEG_METRICS_TOKEN", "metrics_token"),
                          ("CDEG_DATA_KEY", "data_key"),
                          ("CDEG_DATA_KEY_PREVIOUS", "data_key_previous")):
            if env.get(name):
                values[key] = env[name]
        for name, key in (("CDEG_CLIENT_RATE_PER_MINUTE", "client_rate_per_minute"),
                          ("CDEG_OAUTH_RATE_PER_MINUTE", "oauth_rate_per_minute"),
                          ("CDEG_LOGIN_RATE_PER_MINUTE", "login_rate_per_minute"),
                          ("CDEG_JOB_TIMEOUT", "job_timeout"),
                          ("CDEG_JOB_STALE_AFTER", "job_stale_after"),
                          ("CDEG_JOB_RELAY_EVERY", "job_relay_every"),
                          ("CDEG_CALLBACK_ATTEMPTS", "callback_attempts")):
            if env.get(name):
                try:
                    values[key] = int(env[name])
                except ValueError as exc:
                    raise ConfigError(f"{name}: must be a whole number") from exc
        if env.get("CDEG_JOBS_INLINE"):
            values["jobs_inline"] = env["CDEG_JOBS_INLINE"].lower() in ("1", "true", "yes")
        values.update(overrides)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.env not in ("demo", "development", "test", "production"):
            raise ConfigError(f"CDEG_ENV: unknown environment {self.env!r}")
        if not self.issuer.startswith(("http://", "https://")) or self.issuer.endswith("/"):
            raise ConfigError("CDEG_ISSUER: must be an http(s) URL without a trailing slash")
        if self.database_url is not None:
            try:
                url = make_url(self.database_url)
                url.get_dialect()
            except (ArgumentError, NoSuchModuleError, ValueError) as exc:
                raise ConfigError("CDEG_DATABASE_URL: not an SQLAlchemy URL this gateway can "
                                  "use (postgresql+psycopg://... or sqlite:///...)") from exc
        if self.redis_url is not None and not self.redis_url.startswith(
                ("redis://", "rediss://", "unix://")):
            raise ConfigError("CDEG_REDIS_URL: must start with redis://, rediss:// or unix://")
        for name in ("access_token_ttl", "authorization_code_ttl", "pushed_request_ttl",
                     "client_assertion_max_ahead", "clock_skew", "login_code_ttl",
                     "login_code_attempts", "wrong_code_window", "wrong_code_day",
                     "unmarked_wrong_codes", "unmarked_wrong_codes_a_day", "marked_wrong_codes",
                     "device_mark_ttl", "job_attempts", "job_stale_after", "job_timeout",
                     "job_relay_every", "sweep_every", "log_shards", "log_batch", "log_every",
                     "checkpoint_every", "client_rate_lease_max", "client_rate_lease_ms",
                     "client_rate_per_minute", "oauth_rate_per_minute", "login_rate_per_minute",
                     "cdi_result_ttl", "cdi_collected_grace", "callback_attempts",
                     "cdi_rate_per_minute"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}: must be a whole number of at least 1")
        if self.job_stale_after <= self.job_timeout:
            raise ConfigError("job_stale_after: must be longer than job_timeout, or a job still "
                              "running would be handed on again")
        if self.access_token_ttl > 600 or self.authorization_code_ttl > 60 \
                or not 60 <= self.pushed_request_ttl <= 600:
            raise ConfigError("access tokens live at most 600 s, codes 60 s, pushed requests "
                              "60 to 600 s (SPEC section 3)")
        if self.production:
            if not self.secret_key or len(self.secret_key) < 32:
                raise ConfigError("CDEG_SECRET_KEY: production needs a secret of at least 32 characters")
            if not self.issuer.startswith("https://"):
                raise ConfigError("CDEG_ISSUER: production needs an https issuer")
            if not self.database_url or not self.redis_url:
                raise ConfigError("CDEG_DATABASE_URL and CDEG_REDIS_URL: production needs both")
            if self.database_url.startswith("sqlite"):
                raise ConfigError("CDEG_DATABASE_URL: production needs PostgreSQL, not SQLite")
            if not self.departments_url:
                raise ConfigError("CDEG_DEPARTMENTS_URL: production needs the department "
                                  "services' base URL; the in-process mock departments answer "
                                  "in demo mode only")
            if not self.data_key:
                raise ConfigError("CDEG_DATA_KEY: production needs the key that wraps the data "
                                  "keys (32 bytes, base64url), kept outside the database")
