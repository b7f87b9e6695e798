"""SQL tables (SQLAlchemy Core) and the engine: SQLite embedded, PostgreSQL in deployments.

Times are integer seconds since the epoch (UTC) so both engines compare them the same way.
JSON columns hold small lists and documents; values of personal data are never stored here,
only item ids (the e-ME store and the departments hold the data).
"""
from __future__ import annotations

import os

from sqlalchemy import (JSON, BigInteger, Column, ForeignKey, Index, Integer, MetaData, String,
                        Table, create_engine, event, text)
from sqlalchemy.engine import Engine, make_url

metadata = MetaData()

requesters = Table(
    "requesters", metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("name_zh", String(200)),
    Column("kind", String(16), nullable=False),            # department | fi
    Column("jwks", JSON, nullable=False),                  # public keys only
    Column("redirect_uris", JSON, nullable=False),
    Column("policy", JSON),                                # validated policy document
    Column("webhook_url", String(500)),
    Column("created_at", BigInteger, nullable=False),
)

citizens = Table(
    "citizens", metadata,
    Column("subject_id", String(32), primary_key=True),    # internal; never shown to requesters
    Column("hkid", String(12), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
)

consents = Table(
    "consents", metadata,
    Column("consent_id", String(40), primary_key=True),
    Column("client_id", String(64), ForeignKey("requesters.client_id"), nullable=False),
    Column("subject_id", String(32), ForeignKey("citizens.subject_id")),
    Column("status", String(16), nullable=False),
    Column("purpose", String(100), nullable=False),
    Column("data_items", JSON, nullable=False),
    Column("access", String(16), nullable=False),          # once | ongoing
    Column("duration", String(32)),                        # ISO 8601 duration, as asked
    Column("authorization_details", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger),
    Column("expires_at", BigInteger),
    Column("ended_at", BigInteger),
    Index("ix_consents_subject", "subject_id"),
)

pushed_requests = Table(
    "pushed_requests", metadata,
    Column("request_uri", String(120), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("consent_id", String(40), ForeignKey("consents.consent_id"), nullable=False),
    Column("redirect_uri", String(500), nullable=False),
    Column("state", String(500)),
    Column("code_challenge", String(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger),
)

authorization_codes = Table(
    "authorization_codes", metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("consent_id", String(40), ForeignKey("consents.consent_id"), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", String(500), nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger),
)

tokens = Table(
    "tokens", metadata,
    Column("token_id", String(64), primary_key=True),      # access: jti; refresh: sha256 of it
    Column("kind", String(8), nullable=False),             # access | refresh
    Column("consent_id", String(40), ForeignKey("consents.consent_id"), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("code_hash", String(64)),                       # the code that led to it
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Index("ix_tokens_code", "code_hash"),
    Index("ix_tokens_consent", "consent_id"),
)

audit_entries = Table(
    "audit_entries", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(32), nullable=False),              # RFC 3339 UTC
    Column("event", String(32), nullable=False),
    Column("client_id", String(64)),
    Column("subject", String(64)),                         # pairwise pseudonym, never an HKID
    Column("consent_id", String(40)),
    Column("items", JSON, nullable=False),
    Column("route", String(32)),
    Column("outcome", String(32), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_consent", "consent_id"),
)

audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("prev_hash", String(64)),    # the predecessor of ``hash`` (kept by release_sql)
)

GENESIS_HASH = "0" * 64

# PostgreSQL's SQLSTATEs for a transaction that lost to a concurrent one: it did nothing and
# may simply be run again (deadlock_detected, serialization_failure).
CONTENTION_SQLSTATES = frozenset({"40P01", "40001"})


def is_contention(exc: BaseException) -> bool:
    """True when ``exc`` is a transaction that lost a race (not a database that is down)."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in CONTENTION_SQLSTATES


def _private_sqlite_file(url: str) -> None:
    """The ledger holds HKIDs: its file is the gateway user's alone (0600) before SQLite first
    opens it, and SQLite gives its ``-wal``/``-shm``/``-journal`` files the database file's mode.
    An instance made before this is tightened too."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(path + suffix):
            os.chmod(path + suffix, 0o600)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            # SQLAlchemy's documented recipe: take the write lock at BEGIN, so two writers
            # queue on the busy timeout instead of failing to upgrade a read lock
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):  # pragma: no cover - trivial
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pre-ping (a round trip per checkout): a connection lost with a database restart
    # fails one request with 503, SQLAlchemy then invalidates the pool and the next one works.
    return create_engine(url, pool_size=5, max_overflow=10, pool_recycle=1800,
                         hide_parameters=True)


def reader(engine: Engine) -> Engine:
    """The same pool in autocommit: a single-statement read is one round trip, with no
    BEGIN/ROLLBACK around it. Only for reads that need no transaction."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def upgrade(engine: Engine) -> None:
    """Create the schema (idempotent) and the audit chain's head row."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM audit_head")).scalar() == 0:
            conn.execute(audit_head.insert().values(id=1, seq=0, hash=GENESIS_HASH))
