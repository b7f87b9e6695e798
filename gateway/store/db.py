"""SQL tables (SQLAlchemy Core) and the engine: SQLite embedded, PostgreSQL in deployments.

Times are integer seconds since the epoch (UTC) so both engines compare them the same way.
JSON columns hold small lists and documents; values of personal data are never stored here,
only item ids (the e-ME store and the departments hold the data).

Alembic owns the schema: every schema change is a new revision in
``gateway/store/migrations/versions`` (the tables here say what the code expects, the revisions
how a database gets there); ``tests/test_migrations.py`` holds the two together on both engines.
``upgrade(engine)`` is the one way a database is migrated (``cdeg db upgrade``, and the embedded
SQLite at every start).
"""
from __future__ import annotations

import functools
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import (JSON, BigInteger, Column, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, UniqueConstraint, create_engine, event, inspect, text)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from gateway.errors import Contention, DatabaseUnavailable

from gateway.config import ConfigError

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
    Column("callback_urls", JSON),                         # an FI's allowed CDI callback URLs
)

citizens = Table(
    "citizens", metadata,
    Column("subject_id", String(32), primary_key=True),    # internal; never shown to requesters
    Column("hkid", String(12), unique=True),               # only before sealing (legacy): null
    Column("created_at", BigInteger, nullable=False),
    Column("hkid_index", String(64)),                      # HMAC of the HKID (gateway/identifiers)
    Column("hkid_sealed", Text),                           # AES-GCM of the HKID under a data key
    UniqueConstraint("hkid_index", name="uq_citizens_hkid_index"),
)

data_keys = Table(
    "data_keys", metadata,                                 # wrapped by the KEK (never in here)
    Column("key_id", String(64), primary_key=True),
    Column("purpose", String(8), nullable=False),          # data | index
    Column("wrapped", Text, nullable=False),
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
    Column("notice_digest", String(80)),                   # sha256 of the consent screen shown
    Column("notice", JSON),                                # what it showed (no values)
    Column("event_delivery", String(16)),                  # revocation event: pending | notified
    Column("event_attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("next_event_at", BigInteger),                   # pending: when to try (a lease too)
    Column("event_error", String(200)),
    Index("ix_consents_subject", "subject_id"),
    Index("ix_consents_status_expiry", "status", "expires_at"),   # the expiry sweep
    Index("ix_consents_event_delivery", "event_delivery", "next_event_at"),
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
    Index("ix_pushed_requests_consent", "consent_id"),   # the expiry sweep's unanswered requests
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
    "audit_entries", metadata,                             # the transparency log's entries
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),                            # order of insertion, not of the log
    Column("shard", Integer, nullable=False),
    Column("leaf_index", BigInteger),                      # given by the sequencer; null until
    Column("consent_id", String(40)),
    Column("event", String(32), nullable=False),
    Column("entry", Text, nullable=False),                 # canonical JSON: the entry's bytes
    Column("leaf_hash", String(64), nullable=False),       # hex SHA-256(0x00 || entry)
    UniqueConstraint("shard", "leaf_index", name="uq_audit_leaf"),
    Index("ix_audit_consent", "consent_id"),
    Index("ix_audit_pending", "shard", "leaf_index", "id"),   # the sequencer's next batch, in order
)

log_nodes = Table(
    "log_nodes", metadata,                                 # perfect subtrees above the leaves
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("level", Integer, primary_key=True, autoincrement=False),   # 1: two leaves
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("span_end", BigInteger, nullable=False),        # leaves covered end before this
    Index("ix_log_nodes_order", "shard", "span_end", "level"),   # verify streams in this order
)

log_heads = Table(
    "log_heads", metadata,                                 # each shard's tree, moved only by
    Column("shard", Integer, primary_key=True, autoincrement=False),   # its sequencer
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", String(64), nullable=False),
    Column("integrated_at", BigInteger, nullable=False),
)

log_checkpoints = Table(
    "log_checkpoints", metadata,                           # signed by a key outside the database
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("iat", BigInteger, nullable=False),
    Column("jws", Text, nullable=False),
)

release_keys = Table(
    "release_keys", metadata,                              # a release recorded once per key
    Column("key", String(200), primary_key=True),          # e.g. a CDI query id
    Column("consent_id", String(40), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

outbox = Table(
    "outbox", metadata,                                    # work asked for by a transaction,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),                            # relayed once it has committed
    Column("job", String(64), nullable=False),             # a name in gateway/jobs/registry.py
    Column("args", JSON, nullable=False),                  # ids only, never personal data
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("relayed_at", BigInteger),                      # handed to RQ (or run inline)
    Column("claimed_at", BigInteger),                      # a run started (a lease)
    Column("done_at", BigInteger),
    Column("attempts", Integer, nullable=False, default=0),
    Column("request_id", String(32)),                      # of the request that asked (logs)
    Index("ix_outbox_pending", "relayed_at"),
)

cdi_queries = Table(
    "cdi_queries", metadata,                               # an FI's queries through the CDI bridge
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("client_id", String(64), nullable=False),       # the FI that signed the query
    Column("query_id", String(100), nullable=False),       # the FI's idempotency key
    Column("digest", String(64), nullable=False),          # what was asked: token, items, callback
    Column("consent_id", String(40), nullable=False),
    Column("token_id", String(64), nullable=False),        # the access token's jti (verified)
    Column("token_exp", BigInteger, nullable=False),
    Column("items", JSON),                                 # item ids asked for; null: all consented
    Column("callback_url", String(2000)),                  # one of the FI's registered URLs
    Column("status", String(16), nullable=False),          # queued | running | done | failed
    Column("error", JSON),                                 # {"code", "detail"} when failed
    Column("result", Text),                                # the JWE; purged once collected
    Column("created_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("collected_at", BigInteger),                    # first fetched (GET) or delivered
    Column("purged_at", BigInteger),
    Column("delivery", String(16)),                        # pending | delivered | failed | null
    Column("delivery_attempts", Integer, nullable=False, default=0),
    Column("next_delivery_at", BigInteger),                # pending: when to try (a lease too)
    Column("delivery_error", String(200)),
    UniqueConstraint("client_id", "query_id", name="uq_cdi_query"),
    Index("ix_cdi_delivery", "delivery", "next_delivery_at"),
    Index("ix_cdi_finished", "finished_at"),
    Index("ix_cdi_collected", "collected_at"),
)

GENESIS_HASH = "0" * 64

# PostgreSQL's SQLSTATEs for a transaction that lost to a concurrent one: it did nothing and
# may simply be run again (deadlock_detected, serialization_failure).
CONTENTION_SQLSTATES = frozenset({"40P01", "40001"})


# SQLSTATEs of a database that is not answering or cannot take the statement now: connection
# exception, operator intervention (shutdown, statement timeout), insufficient resources, a
# lock not obtained in time, a read-only standby after a failover. SQLite's, named in words.
_DOWN_SQLSTATES = ("08", "57P", "53", "57014", "55P03", "25006")
_SQLITE_DOWN = ("database is locked", "database table is locked", "unable to open database",
                "disk i/o error", "database or disk is full", "readonly database")


def _first_line(orig: BaseException | None, fallback: str) -> str:
    """The driver's first line (never the SQL or its parameters)."""
    words = str(orig).strip().splitlines() if orig is not None else []
    return words[0] if words else fallback


def _is_down(orig: BaseException | None, words: str, disconnect: bool) -> bool:
    if disconnect:
        return True
    if isinstance(orig, psycopg.OperationalError) and orig.sqlstate is None:
        return True   # no answer at all: a refused (re)connect, a connection lost mid-way
    sqlstate = getattr(orig, "sqlstate", None) or ""
    return sqlstate.startswith(_DOWN_SQLSTATES) or \
        any(phrase in words.lower() for phrase in _SQLITE_DOWN)


def translate(orig: BaseException | None, *, disconnect: bool, fallback: str = "error"):
    """The gateway's error for a driver's (None: not the gateway's to map): a lost race is
    ``Contention`` (run again by ``Gateway.in_transaction``), a database that does not answer or
    refuses a connection ``DatabaseUnavailable`` (503). Shared by the engine's hook and the
    prepared statements of ``store/prepared.py``, which reach psycopg without SQLAlchemy."""
    words = _first_line(orig, fallback)
    if getattr(orig, "sqlstate", None) in CONTENTION_SQLSTATES:
        mapped = Contention()
    elif _is_down(orig, words, disconnect):
        mapped = DatabaseUnavailable()
    else:
        return None
    mapped.operator_detail = f"database: {words}"   # not for response bodies
    return mapped


def _map_errors(engine: Engine) -> None:
    """SQLAlchemy's errors become the gateway's where they arise, once. Anything ``translate``
    leaves — an integrity error a caller expects, a missing table a migration looks for, a
    bug — stays as it is."""
    @event.listens_for(engine, "handle_error", retval=True)
    def _translate(context):
        exc = context.sqlalchemy_exception
        mapped = translate(getattr(exc, "orig", None), fallback=type(exc).__name__,
                           disconnect=context.is_disconnect or context.connection is None)
        if mapped is not None:
            mapped.__cause__ = exc
        return mapped


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


def _journal_mode_wal(cur, patience: float = 15.0) -> None:
    """WAL is kept in the file once set. Setting it on a new file needs the exclusive lock,
    and SQLite answers "database is locked" at once (no busy wait) when another connection
    of a process starting at the same moment holds a lock: so it waits here, as long as the
    busy timeout would."""
    deadline = time.monotonic() + patience
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            _journal_mode_wal(cur)
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

        _map_errors(engine)
        return engine
    # No pre-ping (a round trip per checkout): a connection lost with a database restart
    # fails one request with 503, SQLAlchemy then invalidates the pool and the next one works.
    engine = create_engine(url, pool_size=5, max_overflow=10, pool_recycle=1800,
                           hide_parameters=True)
    _map_errors(engine)
    return engine


def reader(engine: Engine) -> Engine:
    """The same pool in autocommit: a single-statement read is one round trip, with no
    BEGIN/ROLLBACK around it. Only for reads that need no transaction."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001_baseline"      # the schema that create_all made before Alembic took over
# pg_advisory_xact_lock(MIGRATION_LOCK, hashtext(current_schema())): one migrator per schema
MIGRATION_LOCK = 0x43444547     # "CDEG"


class SchemaError(ConfigError):
    """The database holds a schema the migrations cannot take over (or a newer one)."""


def alembic_config(url: str | None = None, connection: Connection | None = None):
    """Alembic configured in code (no alembic.ini), with the migrations inside the package, so
    an installed gateway migrates itself. ``connection``: run on it, inside its transaction."""
    from alembic.config import Config as AlembicConfig
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts():
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return _scripts().get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision by one autocommit SELECT (no transaction, no lock); None when
    there is no ``alembic_version`` table (an empty database or one made before Alembic)."""
    try:
        with reader(engine).connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:
        return None
    return rows[0] if len(rows) == 1 else None


def upgrade(engine: Engine) -> str:
    """Bring the database (an engine from :func:`make_engine`) to the newest revision and
    answer that revision.

    At head it costs one SELECT and takes no lock, so every worker may call it at start.
    Otherwise it migrates inside one transaction that first takes the migration lock — on
    PostgreSQL an advisory transaction lock for the schema, on SQLite the write lock that
    ``make_engine`` takes at BEGIN (IMMEDIATE) — and looks again under it: of processes
    starting together one migrates, the others wait and find the work done. DDL is
    transactional on both engines, so a failed migration leaves nothing half-made. A database
    made before Alembic (its tables, no ``alembic_version``) is stamped at the baseline when its
    tables are the baseline's; any other mix is refused (:class:`SchemaError`)."""
    head = head_revision()
    if current_revision(engine) == head:
        return head
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    with _migration_lock(engine) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return head
        if current is not None and not _known(current):
            raise SchemaError(f"database: at schema revision "
                              f"{current!r}, which this gateway does not know (a newer release "
                              f"migrated it)")
        config = alembic_config(connection=conn)
        if current is None and _made_before_alembic(conn):
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
    return head


def _known(revision: str) -> bool:
    from alembic.util import CommandError
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


@contextmanager
def _migration_lock(engine: Engine):
    with engine.connect() as conn:
        sqlite_fks = conn.dialect.name == "sqlite"
        if sqlite_fks:
            # SQLite rebuilds a table to change a column; the rows that point at it would
            # fail their foreign keys mid-way. Off for the migration (it can only be switched
            # outside a transaction), checked after, on again for the connection's next use.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():      # SQLite: BEGIN IMMEDIATE, the database's write lock
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:lock, "
                                      "hashtext(coalesce(current_schema(), '')))"),
                                 {"lock": MIGRATION_LOCK})
                yield conn
                if sqlite_fks:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise SchemaError(f"database: the migration left {len(broken)} rows "
                                          f"whose foreign keys do not hold")
        finally:
            if sqlite_fks and not conn.invalidated:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")


def _shape(conn: Connection, names) -> dict:
    """What adoption compares: each table's columns (name, nullable) and primary key."""
    found = inspect(conn)
    return {name: {"columns": sorted((c["name"], bool(c["nullable"]))
                                     for c in found.get_columns(name)),
                   "primary_key": sorted(found.get_pk_constraint(name)["constrained_columns"])}
            for name in sorted(names)}


@functools.cache
def _baseline_shape() -> dict:
    """The baseline revision's tables, as the revision itself builds them (in a scratch
    in-memory SQLite), so adoption does not depend on today's models."""
    from alembic import command
    scratch = create_engine("sqlite://")
    try:
        with scratch.begin() as conn:
            command.upgrade(alembic_config(connection=conn), BASELINE)
            names = set(inspect(conn).get_table_names()) - {"alembic_version"}
            return _shape(conn, names)
    finally:
        scratch.dispose()


def _made_before_alembic(conn: Connection) -> bool:
    """True for a database that ``create_all`` made before Alembic: it holds every table of the
    baseline as the baseline has it (and is then stamped there, its data kept). False for a
    database holding none of them. Anything between is refused."""
    baseline = _baseline_shape()
    present = set(inspect(conn).get_table_names()) & set(baseline)
    if not present:
        return False
    if present != set(baseline):
        raise SchemaError(f"database: holds some of the gateway's tables "
                          f"but not {', '.join(sorted(set(baseline) - present))}, and no "
                          f"alembic_version; it cannot be migrated")
    differ = [name for name, shape in _shape(conn, present).items() if shape != baseline[name]]
    if differ:
        raise SchemaError(f"database: its tables {', '.join(differ)} differ "
                          f"from the baseline schema and there is no alembic_version; it "
                          f"cannot be migrated")
    if conn.execute(text("SELECT count(*) FROM audit_head")).scalar() == 0:
        conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :genesis)"),
                     {"genesis": GENESIS_HASH})   # as the pre-Alembic upgrade() made it
    return True
