"""The data path's statements on PostgreSQL, prepared on psycopg connections of their own.

A data call makes one or two statements (the live grant's read, then the release's
one-statement write). Through SQLAlchemy's execution layer each costs about 450 µs of CPU; the
same statement prepared on a psycopg connection about 100 µs. So these run here, each prepared
once per connection (``prepare=True``) and then sent by name. The SQL text is compiled once
from the SQLAlchemy statements the rest of the code uses, so there is one definition of each.

The connections are this module's own, opened with the engine's own connection arguments
(``create_connect_args``: the same server, user and type adapters) and kept in autocommit —
each statement its own transaction, so nothing has to be reset between users and a connection
goes straight back to the idle list. A small pool: at most ``size`` open at once per process
(a caller waits up to ``timeout`` seconds for one, then gets ``DatabaseUnavailable``), the most
recently used taken first, none older than ``recycle`` seconds nor idle longer than
``max_idle`` (a firewall or the server may have dropped it unseen), none given back with a
transaction left open. After a fork the child starts with an empty pool: the parent's
connections are left to the parent (never closed from the child, which would end them).

Errors are the gateway's as everywhere else (``db.translate``): a lost connection is
``DatabaseUnavailable`` (503) and, as SQLAlchemy does on a disconnect, every idle connection is
thrown away too — this pool's and the engine's, whichever side met the dead server first — so
one request fails, not one per pooled connection; a lost race is ``Contention``. SQLite (the
embedded default) does not come here.
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import NoReturn

import psycopg
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ClauseElement

from gateway.errors import DatabaseUnavailable
from gateway.store import db

_DIALECT = postgresql.dialect(paramstyle="pyformat")


@dataclass(frozen=True)
class Statement:
    """A SQLAlchemy statement compiled once as psycopg's text (``%(name)s`` parameters), with
    the values of the literals it binds itself (``kind = 'access'``)."""
    sql: str
    fixed: Mapping

    def params(self, given: Mapping) -> dict:
        return {**self.fixed, **given}


def compiled(statement: ClauseElement) -> Statement:
    done = statement.compile(dialect=_DIALECT)
    return Statement(str(done), MappingProxyType(
        {k: v for k, v in done.params.items() if v is not None}))


def _mapped(exc: BaseException, *, lost: bool) -> BaseException:
    return db.translate(exc, disconnect=lost, fallback=type(exc).__name__) or exc


@dataclass(slots=True)
class _Held:
    """A pooled connection, the one cursor its statements use, when it was opened and when it
    was last given back."""
    conn: psycopg.Connection
    cursor: psycopg.Cursor
    opened: float
    used: float = 0.0


_POOLS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child starts every pool empty: the parent's connections (and any lock or slot
    a parent's thread held at the fork) stay the parent's. They are only forgotten here, never
    closed: psycopg ends a connection only in the process that opened it."""
    for pool in list(_POOLS):
        pool._start_empty()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Prepared:
    """Autocommit statements on a small pool of psycopg connections of their own."""

    def __init__(self, engine: Engine, *, size: int = 8, timeout: float = 30.0,
                 recycle: float = 1800.0, max_idle: float = 120.0):
        self.engine = engine
        self.size, self.timeout, self.recycle, self.max_idle = size, timeout, recycle, max_idle
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args = (args, {**kwargs, "autocommit": True})
        self._closed = False
        self._start_empty()
        _POOLS.add(self)

        @event.listens_for(engine, "handle_error")
        def _engine_lost_its_server(context):   # and the other way round
            if context.is_disconnect:
                self._drop_idle()

    def _start_empty(self) -> None:
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self._idle: list[_Held] = []

    def connect(self) -> psycopg.Connection:
        """A new connection, as the engine would open it, in autocommit."""
        args, kwargs = self._connect_args
        return psycopg.connect(*args, **kwargs)

    def one(self, statement: Statement, given: Mapping) -> tuple | None:
        """``statement`` with ``given`` as its own transaction: its first row (None: none)."""
        held = self._checkout()
        try:
            found = held.cursor.execute(statement.sql, statement.params(given),
                                        prepare=True).fetchone()
        except BaseException as exc:
            self._failed(held, exc)
        self._checkin(held)
        return found

    @contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor]:
        """A pooled connection's cursor, for statements of one's own (autocommit; a transaction
        left open on it is not handed to the next user: the connection is closed instead)."""
        held = self._checkout()
        try:
            yield held.cursor
        except BaseException as exc:
            self._failed(held, exc)
        self._checkin(held)

    def _checkout(self) -> _Held:
        if not self._slots.acquire(timeout=self.timeout):
            raise DatabaseUnavailable()        # every connection busy: 503, as the pool's wait
        try:
            now = time.monotonic()
            with self._lock:
                while self._idle:
                    held = self._idle.pop()
                    if not held.conn.closed and now - held.opened < self.recycle \
                            and now - held.used < self.max_idle:
                        return held
                    held.conn.close()          # too old, or idle long enough for a firewall
            try:                               # or the server to have dropped it unseen
                conn = self.connect()
            except psycopg.Error as exc:       # no connection to be had: down
                raise _mapped(exc, lost=True) from exc
            return _Held(conn, conn.cursor(), now)
        except BaseException:
            self._slots.release()
            raise

    def _reusable(self, held: _Held) -> bool:
        return not self._closed and not held.conn.closed and \
            held.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    def _checkin(self, held: _Held) -> None:
        try:
            if self._reusable(held):
                held.used = time.monotonic()
                with self._lock:
                    self._idle.append(held)
                    return
            held.conn.close()                  # a transaction left open, or the pool closed
        finally:
            self._slots.release()

    def _failed(self, held: _Held, exc: BaseException) -> NoReturn:
        """Give ``held`` back or throw it away after ``exc``; raise the gateway's error."""
        try:
            if not isinstance(exc, psycopg.Error):
                held.conn.close()              # whatever state it is in, it is not reused
                raise exc
            lost = held.conn.closed or held.conn.broken
            if lost:   # the server went away: the idle ones went with it, and the engine's
                held.conn.close()   # pooled ones too (replaced at their next checkout)
                self._drop_idle()
                self.engine.pool._invalidate(None, exc, _checkin=False)
            else:      # the statement's own error: the connection is fine if no transaction
                self._checkin(held)            # was left open (then it is closed)
                held = None
            mapped = _mapped(exc, lost=lost)
            if mapped is exc:
                raise exc
            raise mapped from exc
        finally:
            if held is not None:
                self._slots.release()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for held in idle:
            held.conn.close()

    def idle(self) -> int:
        """How many connections wait in the pool, open and unused."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when given back."""
        self._closed = True
        self._drop_idle()
