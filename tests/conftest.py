"""Fixtures: the gateway on the embedded default and on real PostgreSQL + Redis.

Tests that use ``app`` run once per backend. Every test gets its own writable database and its
own Redis key prefix; tests never see each other's data. When the services do not answer the
tests fail (never skip): CI must count them.

What is built once per session and what each test gets:

- The embedded instance folder (SQLite ledger migrated and seeded with the demo data, signing
  keys, instance secret) is built once through the real code path (``Gateway`` + ``seed``) into
  a template folder; each test gets a copy of those files in its own ``tmp_path`` (modes kept:
  folders 0700, files 0600), and the gateway starts on it as on any existing instance.
- PostgreSQL: a template schema is migrated (``db.upgrade``) and seeded once. A test's schema
  comes from a small pool of schemas migrated by ``db.upgrade`` too (creating tables costs
  ~0.25 s on PostgreSQL here, more than most tests); before a test gets one, the pool checks
  that its structure is untouched since it was migrated (else it is dropped and replaced),
  deletes every row of every table and copies the template's rows in (sequences reset), in one
  transaction. So each test starts on exactly the migrated, seeded schema and is its only user
  until it ends. Tests that need an empty schema of their own (migrations, DDL) use
  ``pg_schema``: created for the test, dropped after it.
- The demo requesters' private keys and the mock departments' records are parsed once (each
  test gets its own copy of the records, which a test may change), and Jinja compiles each
  template once for all the apps of the session.
"""
from __future__ import annotations

import copy
import functools
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import jinja2
import psycopg
import pytest
import redis

from gateway import create_app
from gateway.clock import Clock
from gateway.config import Config
from gateway.demo.seed import seed

from .flow import Flow

PG_DSN = os.environ.get("CDEG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CDEG_TEST_REDIS", "redis://127.0.0.1:6379/0")
ISSUER = "http://gateway.test"
BACKENDS = ["embedded", "services"]
TEMPLATE_ENV = "test"           # the templates hold what ``seed`` writes for this environment
# One key-encryption key for every test gateway: the templates' ledgers (copied into each test's
# instance, or a pooled PostgreSQL schema) hold data keys wrapped by it (gateway/identifiers.py)
TEST_DATA_KEY = "dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM"


def _services_or_fail():
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL ({PG_DSN}) and Redis ({REDIS_URL}) must answer for the "
                    f"services tests; start them (see README). {type(exc).__name__}: {exc}")


def schema_url(schema: str) -> str:
    url = PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_schema():
    """A fresh, empty PostgreSQL schema of the test's own, dropped after it; answers the
    SQLAlchemy URL that uses it."""
    _services_or_fail()
    schema = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema_url(schema)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- templates built once per session ---------------------------------------------------------

_SESSION_DIR: list[Path] = []      # set by the session fixture below; templates live inside
_FRESH: set[str] = set()           # what build_app may take as migrated and seeded, once


@pytest.fixture(scope="session", autouse=True)
def _session_templates():
    folder = Path(tempfile.mkdtemp(prefix="cdeg-test-templates-"))
    _SESSION_DIR.append(folder)
    yield
    if _schema_pool.cache_info().currsize:
        _schema_pool().close()
    shutil.rmtree(folder, ignore_errors=True)


def _session_dir() -> Path:
    if not _SESSION_DIR:    # imported outside a pytest session (a helper script)
        _SESSION_DIR.append(Path(tempfile.mkdtemp(prefix="cdeg-test-templates-")))
    return _SESSION_DIR[0]


@functools.cache
def _instance_template() -> Path:
    """An embedded instance folder as the gateway leaves it after its first start and
    ``seed``: cdeg.sqlite3 at the newest revision with the demo data, keys/, secret.key."""
    from gateway.instance import Gateway
    folder = _session_dir() / "instance"
    gw = Gateway(Config(instance_dir=folder, issuer=ISSUER, env=TEMPLATE_ENV,
                        data_key=TEST_DATA_KEY))
    try:
        seed(gw)
    finally:
        gw.close()      # the last connection checkpoints the WAL into cdeg.sqlite3
    return folder


def _copy_instance(template: Path, instance: Path, *, ledger: bool) -> None:
    """The template's files into a new instance folder, modes kept (0700 folders, 0600
    files): keys and secret always, the SQLite ledger (with its -wal/-shm if any) if asked."""
    instance.mkdir(mode=0o700, parents=True)
    os.chmod(instance, 0o700)
    for entry in template.iterdir():
        if entry.name.startswith("cdeg.sqlite3") and not ledger:
            continue
        if entry.is_dir():
            shutil.copytree(entry, instance / entry.name, copy_function=shutil.copy2)
        else:
            shutil.copy2(entry, instance / entry.name)


class _SchemaPool:
    """PostgreSQL schemas migrated by ``db.upgrade``, handed to one test at a time, each reset
    to the template's rows before it is handed out (see the module's docstring)."""

    def __init__(self):
        from sqlalchemy import inspect

        from gateway.instance import Gateway
        from gateway.store import db
        _services_or_fail()
        self.admin = psycopg.connect(PG_DSN, autocommit=True)
        self.admin.execute("SET max_parallel_workers_per_gather = 0")  # tiny catalog queries
        self.prefix = "t_" + uuid.uuid4().hex[:8]
        self.template = f"{self.prefix}_template"
        self.idle: list[str] = []
        self.made: list[str] = []
        self.fingerprints: dict[str, str] = {}
        self.admin.execute(f'CREATE SCHEMA "{self.template}"')
        self.made.append(self.template)
        gw = Gateway(Config(instance_dir=_session_dir() / "pg-template-instance", issuer=ISSUER,
                            data_key=TEST_DATA_KEY,
                            env=TEMPLATE_ENV, database_url=schema_url(self.template)))
        try:
            db.upgrade(gw.db)
            seed(gw)
            with gw.db.connect() as conn:
                ordered = [t for t, _ in inspect(conn).get_sorted_table_and_fkc_names() if t]
        finally:
            gw.close()
        sequences = self.admin.execute(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s",
            (self.template,)).fetchall()
        self.reset_sql = "; ".join(
            ["BEGIN", "SET LOCAL lock_timeout = '10s'"]
            + [f'DELETE FROM "{{s}}"."{t}"' for t in reversed(ordered)]
            + [f'INSERT INTO "{{s}}"."{t}" SELECT * FROM "{self.template}"."{t}"'
               for t in ordered]
            + [f"SELECT setval('\"{{s}}\".\"{name}\"', {last or 1}, {last is not None})"
               for name, last in sequences]
            + ["COMMIT"])
        self._counter = 0

    def _fingerprint(self, schema: str) -> str:
        """The schema's structure: tables, sequences, columns, indexes, constraints, defaults,
        triggers (a test's DDL or TRUNCATE changes it; DELETE and VACUUM do not)."""
        return self.admin.execute("""
            WITH rel AS MATERIALIZED (
              SELECT oid, relname, relkind, relfilenode, relnatts, relrowsecurity
                FROM pg_class WHERE relnamespace = %(s)s::regnamespace)
            SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
              SELECT concat_ws('/', 'c', oid, relname, relkind, relfilenode, relnatts,
                               relrowsecurity) AS x FROM rel
              UNION ALL
              SELECT concat_ws('/', 'a', a.attrelid, a.attname, a.atttypid, a.atttypmod,
                               a.attnotnull, a.attisdropped, a.atthasdef)
                FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0
              UNION ALL
              SELECT concat_ws('/', 'k', k.oid, k.conname, k.contype)
                FROM rel JOIN pg_constraint k ON k.conrelid = rel.oid
              UNION ALL
              SELECT concat_ws('/', 'd', d.oid) FROM rel JOIN pg_attrdef d ON d.adrelid = rel.oid
              UNION ALL
              SELECT concat_ws('/', 't', t.oid) FROM rel JOIN pg_trigger t ON t.tgrelid = rel.oid
            ) q""", {"s": schema}).fetchone()[0]

    def _new_schema(self) -> str:
        from gateway.store import db
        self._counter += 1
        schema = f"{self.prefix}_{self._counter}"
        self.admin.execute(f'CREATE SCHEMA "{schema}"')
        self.made.append(schema)
        engine = db.make_engine(schema_url(schema))
        try:
            db.upgrade(engine)
        finally:
            engine.dispose()
        self.fingerprints[schema] = self._fingerprint(schema)
        return schema

    def acquire(self) -> str:
        while self.idle:
            schema = self.idle.pop()
            if self._fingerprint(schema) != self.fingerprints[schema]:
                continue            # a test changed its structure: never handed out again
            try:
                self.admin.execute(self.reset_sql.replace("{s}", schema))
            except psycopg.Error:   # rows held by something still running: leave it be
                self.admin.execute("ROLLBACK")
                continue
            return schema
        schema = self._new_schema()
        self.admin.execute(self.reset_sql.replace("{s}", schema))
        return schema

    def release(self, schema: str) -> None:
        self.idle.append(schema)

    def close(self) -> None:
        try:
            self.admin.execute("SET lock_timeout = '10s'")
            for schema in self.made:
                try:
                    self.admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                except psycopg.Error:   # held by a connection a test left open
                    pass
        finally:
            self.admin.close()


@functools.cache
def _schema_pool() -> _SchemaPool:
    return _SchemaPool()


@pytest.fixture
def pg_seeded_schema():
    """A PostgreSQL schema at the newest revision holding the demo data, the test's alone
    while it runs; answers its SQLAlchemy URL."""
    pool = _schema_pool()
    schema = pool.acquire()
    url = schema_url(schema)
    _FRESH.add(url)
    yield url
    _FRESH.discard(url)
    pool.release(schema)


class _CompiledTemplates(jinja2.BytecodeCache):
    """Jinja's compiled templates, shared by every app of the session: each test builds its own
    Flask app (and so its own Jinja environment), all with the same settings and the same
    template files; a template's source checksum guards each entry."""

    def __init__(self):
        self.codes: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        code = self.codes.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket) -> None:
        self.codes[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = _CompiledTemplates()


def share_compiled_templates(app) -> None:
    app.jinja_env.bytecode_cache = COMPILED_TEMPLATES


@functools.cache
def _department_records() -> dict:
    from connectors.mock.departments import Departments
    return Departments().data


def departments(store: Path | None = None):
    """The mock departments with their records (parsed once; each gateway its own copy), e-ME
    edits kept in ``store`` as the embedded gateway keeps them in its instance folder."""
    from connectors.mock.departments import Departments
    return Departments(copy.deepcopy(_department_records()), store)


@pytest.fixture
def redis_prefix():
    prefix = f"cdeg-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for pattern in (prefix + "*", f"rq:*{prefix}*"):  # ours, and RQ's registries of our queue
        for key in client.scan_iter(match=pattern, count=500):
            client.delete(key)


def make_config(tmp_path, backend: str, request, **overrides) -> Config:
    values = {"instance_dir": tmp_path / "instance", "issuer": ISSUER, "env": "test",
              "data_key": TEST_DATA_KEY}
    if backend == "services":
        values["database_url"] = request.getfixturevalue("pg_seeded_schema")
        values["redis_url"] = REDIS_URL
        values["redis_prefix"] = request.getfixturevalue("redis_prefix")
        values["jobs_inline"] = True
    values.update(overrides)
    return Config(**values)


def prepare_instance(config: Config) -> bool:
    """Lay the session's templates into a new instance folder: keys and secret, and for the
    embedded ledger the migrated, seeded SQLite file. True when the database the config names
    already holds the migrated, seeded template (copied here, or a pooled schema not yet used
    by this test), so neither ``db.upgrade`` nor ``seed`` has anything to do."""
    instance = Path(config.instance_dir)
    if config.env != TEMPLATE_ENV or (instance.exists() and any(instance.iterdir())):
        return False        # not what the templates hold, or an instance already made
    embedded = config.database_url is None
    _copy_instance(_instance_template(), instance, ledger=embedded)
    if embedded:
        return True
    if config.database_url in _FRESH:
        _FRESH.discard(config.database_url)     # a second app on it in this test seeds again
        return True
    return False


def build_app(config: Config, clock: Clock | None = None):
    from gateway.store import db
    ready = prepare_instance(config)
    if config.database_url and not ready:
        engine = db.make_engine(config.sqlalchemy_url)
        try:
            db.upgrade(engine)
        finally:
            engine.dispose()
    from gateway.instance import EME_STORE
    app = create_app(config, clock=clock or Clock(),
                     departments=departments(Path(config.instance_dir) / EME_STORE))
    app.testing = True
    share_compiled_templates(app)
    if not ready:
        seed(app.extensions["cdeg"])
    return app


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def app(tmp_path, backend, request, clock):
    application = build_app(make_config(tmp_path, backend, request), clock)
    yield application
    application.extensions["cdeg"].close()


@pytest.fixture
def embedded_app(tmp_path, request, clock):
    application = build_app(make_config(tmp_path, "embedded", request), clock)
    yield application
    application.extensions["cdeg"].close()


@pytest.fixture
def gw(app):
    return app.extensions["cdeg"]


@pytest.fixture
def flow(app):
    return Flow(app)


@pytest.fixture
def embedded_flow(embedded_app):
    return Flow(embedded_app)


@pytest.fixture
def services_app(tmp_path, request, clock):
    """PostgreSQL and Redis only: for what exists on that backend alone (prepared statements,
    the grant cache)."""
    application = build_app(make_config(tmp_path, "services", request), clock)
    yield application
    application.extensions["cdeg"].close()


@pytest.fixture
def pg_flow(services_app):
    return Flow(services_app)


@pytest.fixture
def departments_server():
    """The mock department services as their own HTTP server (what `cdeg departments serve`
    runs); answers its base URL."""
    import threading

    from werkzeug.serving import make_server

    from connectors.mock.departments import create_app as departments_app
    server = make_server("127.0.0.1", 0, departments_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
