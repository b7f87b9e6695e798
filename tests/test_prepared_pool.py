"""The data path's own PostgreSQL connections (gateway/store/prepared.py): reused, bounded,
recycled, thrown away with the server that dropped them, never shared across a fork."""
from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest
from sqlalchemy import create_engine, literal, select, text
from sqlalchemy.exc import OperationalError

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


def _gone(backend: int) -> None:
    """The server process of a connection the pool closed has ended (within 5 s)."""
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        for _ in range(100):
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                 (backend,)).fetchone():
                return
            time.sleep(0.05)
    pytest.fail(f"backend {backend} is still connected: the pool left it open")


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
        _gone(first)                          # closed, not left open
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


def test_a_connection_idle_longer_than_max_idle_is_replaced(engine):
    pool = Prepared(engine, max_idle=0.05)
    try:
        first = _backend(pool)
        assert _backend(pool) == first        # used again at once: kept
        time.sleep(0.1)
        assert _backend(pool) != first        # idle too long: a firewall may have cut it
        _gone(first)
    finally:
        pool.close()


@pytest.mark.parametrize("left", ["open", "failed"])
def test_a_transaction_left_on_a_connection_is_never_handed_to_the_next_user(pool, left):
    """A release must be its own committed transaction: a connection given back inside one
    (open, or failed and waiting for a rollback) is closed, not pooled."""
    with pool.cursor() as cur:
        cur.execute("BEGIN")
        first = cur.execute("SELECT pg_backend_pid()").fetchone()[0]
        if left == "failed":
            with pytest.raises(psycopg.errors.DivisionByZero):
                cur.execute("SELECT 1 / 0")
    assert pool.idle() == 0
    with pool.cursor() as cur:
        assert cur.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert cur.execute("SELECT pg_backend_pid()").fetchone()[0] != first


def test_an_error_that_is_not_the_databases_closes_the_connection(pool):
    first = _backend(pool)
    with pytest.raises(KeyError):
        with pool.cursor() as cur:
            cur.execute("SELECT 1")
            raise KeyError("a caller's own bug, mid-use")
    assert pool.idle() == 0 and _backend(pool) != first


def test_the_engine_meeting_a_dead_server_drops_this_pools_idle_connections(pool, engine):
    first = _backend(pool)
    assert pool.idle() == 1
    with engine.connect() as conn:
        engines = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (engines,))
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))        # the engine meets it first
    assert pool.idle() == 0
    assert _backend(pool) != first


def test_a_closed_pool_keeps_nothing_given_back_later(pool):
    with pool.cursor():
        pool.close()
    assert pool.idle() == 0


def test_a_forked_child_never_uses_or_closes_its_parents_connections(pool):
    parent = _backend(pool)
    child = os.fork()
    if child == 0:                            # the child: its own connection, the parent's kept
        try:
            mine = _backend(pool)
            pool.close()                      # and closing its pool ends only its own
            os._exit(0 if mine != parent else 1)
        except BaseException:                 # noqa: BLE001 - a child must never return
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _backend(pool) == parent           # still open: the child did not end it
