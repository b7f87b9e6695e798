"""Fixtures: the gateway on the embedded default and on real PostgreSQL + Redis.

Tests that use ``app`` run once per backend. The services backend isolates itself: its own
PostgreSQL schema and its own Redis key prefix per test, both removed afterwards. When the
services do not answer the tests fail (never skip): CI must count them.
"""
from __future__ import annotations

import os
import uuid

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


def _services_or_fail():
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL ({PG_DSN}) and Redis ({REDIS_URL}) must answer for the "
                    f"services tests; start them (see README). {type(exc).__name__}: {exc}")


@pytest.fixture
def pg_schema():
    """A fresh PostgreSQL schema; answers the SQLAlchemy URL that uses it."""
    _services_or_fail()
    schema = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_prefix():
    prefix = f"cdeg-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for pattern in (prefix + "*", f"rq:*{prefix}*"):  # ours, and RQ's registries of our queue
        for key in client.scan_iter(match=pattern, count=500):
            client.delete(key)


def make_config(tmp_path, backend: str, request, **overrides) -> Config:
    values = {"instance_dir": tmp_path / "instance", "issuer": ISSUER, "env": "test"}
    if backend == "services":
        values["database_url"] = request.getfixturevalue("pg_schema")
        values["redis_url"] = REDIS_URL
        values["redis_prefix"] = request.getfixturevalue("redis_prefix")
        values["jobs_inline"] = True
    values.update(overrides)
    return Config(**values)


def build_app(config: Config, clock: Clock | None = None):
    from gateway.store import db
    if config.database_url:
        db.upgrade(db.make_engine(config.sqlalchemy_url))
    app = create_app(config, clock=clock or Clock())
    app.testing = True
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
