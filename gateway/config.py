"""One configuration object, read from ``CDEG_*`` environment variables and validated once.

Flask's ``from_prefixed_env`` is not used directly because several values need defaults that
depend on each other (the issuer on the host and port, the SQLite file on the instance folder).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable."""


ACCESS_TOKEN_TTL = 600          # seconds; RFC 9068 tokens live at most 10 minutes
AUTHORIZATION_CODE_TTL = 60     # seconds, single use
PUSHED_REQUEST_TTL = 90         # seconds a request_uri from /oauth/par lives
CLIENT_ASSERTION_MAX_TTL = 300  # a client assertion's exp at most 5 minutes ahead
CLOCK_SKEW = 60                 # iat / nbf at most this far in the future


@dataclass(frozen=True)
class Config:
    env: str = "demo"                      # "production" disables demo data and demo codes
    instance_dir: Path = Path("instance")
    issuer: str = "http://127.0.0.1:8000"
    database_url: str | None = None       # None: SQLite in the instance folder
    redis_url: str | None = None          # None: the in-process stand-in
    redis_prefix: str = "cdeg:"
    departments_url: str | None = None    # None: mock departments answer in-process
    secret_key: str | None = None         # sessions and pairwise subjects; generated in demo mode
    jobs_inline: bool | None = None       # default: inline when Redis is the stand-in
    max_body_bytes: int = 64 * 1024
    session_idle_seconds: int = 15 * 60
    client_rate_per_minute: int = 120_000     # data API calls per requester
    oauth_rate_per_minute: int = 6_000        # PAR, token, revoke, introspect calls per requester
    login_rate_per_minute: int = 20           # login attempts per address
    connector_timeout: tuple[float, float] = (2.0, 5.0)
    extra: dict = field(default_factory=dict)

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
                          ("CDEG_SECRET_KEY", "secret_key")):
            if env.get(name):
                values[key] = env[name]
        for name, key in (("CDEG_CLIENT_RATE_PER_MINUTE", "client_rate_per_minute"),
                          ("CDEG_OAUTH_RATE_PER_MINUTE", "oauth_rate_per_minute"),
                          ("CDEG_LOGIN_RATE_PER_MINUTE", "login_rate_per_minute")):
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
