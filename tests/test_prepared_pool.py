"""The data path's own PostgreSQL connections (gateway/store/prepared.py): reused, bounded,
recycled, thrown away with the server that dropped them, never shared across a fork."""
from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest
from sqlalchemy import create_engine, literal, select, text

from gateway.errors import DatabaseUnavailable
from gateway.store.prepared import Prepared, compiled

from .conftest import PG_DSN, _services_or_fail

ONE = compiled(select(literal(1)))
BACKEND_PID = compiled(select(text("pg_backend_pid()")))


@pytest.fixture
def engine():
    _services_or_fail()
    made = create_engine(PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1))
    yield made
    made.dispose()


@pytest.fixture
def pool(engine):
    made = Prepared(engine, size=2, timeout=0.2)
    yield made
    made.close()


def _backend(pool: Prepared) -> int:
    return pool.one(BACKEND_PID, {})[0]


def test_one_connection_serves_call_after_call(pool):
    first = _backend(pool)
    assert [_backend(pool) for _ in range(5)] == [first] * 5
    assert pool.idle() == 1


def test_its_connections_are_in_autocommit_so_nothing_is_left_open(pool):
    pool.one(ONE, {})
    with pool.cursor() as cur:
        assert cur.connection.autocommit
        assert cur.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_caller_finding_every_connection_busy_waits_then_gets_503(pool):
    inside, release = threading.Event(), threading.Event()

    def hold():
        with pool.cursor():
            inside.set()
            release.wait(5)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
        assert inside.wait(5)
        inside.clear()
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        pool.one(ONE, {})
    assert time.monotonic() - started >= 0.2
    release.set()
    for holder in holders:
        holder.join(5)
    assert pool.one(ONE, {}) == (1,)        # the slots came back


def test_a_connection_older_than_its_recycle_age_is_replaced(engine):
    pool = Prepared(engine, recycle=0.05)
    try:
        first = _backend(pool)
        time.sleep(0.1)
        assert _backend(pool) != first
    finally:
        pool.close()


def test_a_statement_error_keeps_the_connection_but_a_lost_server_drops_them_all(pool, engine):
    first = _backend(pool)
    with pytest.raises(psycopg.errors.DivisionByZero):
        pool.one(compiled(select(text("1 / 0"))), {})
    assert _backend(pool) == first            # an error of the statement: the connection is fine

    with pool.cursor() as one, pool.cursor() as two:     # two idle connections, both to go
        backends = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (one, two)]
    assert pool.idle() == 2
    with engine.connect() as conn:            # the engine's pool holds one too
        engines_before = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with psycopg.connect(PG_DSN, autocommit=True) as admin:   # as a server restart would
        for backend in backends:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    with pytest.raises(DatabaseUnavailable):
        pool.one(ONE, {})                     # the first dead one met: 503, once
    assert pool.idle() == 0                   # the other went with it
    assert _backend(pool) not in backends     # the next call works, on a new connection
    with engine.connect() as conn:            # and the engine's were marked stale: replaced
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != engines_before


def test_a_forked_child_never_uses_or_closes_its_parents_connections(pool):
    parent = _backend(pool)
    child = os.fork()
    if child == 0:                            # the child: its own connection, the parent's kept
        try:
            os._exit(0 if _backend(pool) != parent else 1)
        except BaseException:                 # noqa: BLE001 - a child must never return
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _backend(pool) == parent           # still open: the child did not end it
