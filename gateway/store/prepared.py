"""The data path's statements on PostgreSQL, prepared on the pool's own psycopg connections.

A data call makes two statements (the live grant's read, then the release's one-statement
write). Through SQLAlchemy's execution layer each costs about 450 µs of CPU; the same statement
prepared on the psycopg connection about 100 µs. So these two run here: the connection is
checked out of the engine's pool (``Engine.raw_connection``: the same pool, the same limits,
returned as any other checkout), in autocommit, each statement prepared once per connection
(``prepare=True``) and then sent by name. The SQL text is compiled once from the SQLAlchemy
statements the rest of the code uses, so there is one definition of each.

Errors are the gateway's as everywhere else (``db.translate``): a lost connection is
``DatabaseUnavailable`` (503) and, as SQLAlchemy does on a disconnect, every connection of
that pool's generation is replaced at its next checkout; a lost race is ``Contention``. SQLite (the embedded default) does not come here.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

import psycopg
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

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


class Prepared:
    """Autocommit statements on the engine's pooled psycopg connections."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor]:
        try:
            fairy = self.engine.raw_connection()
        except (psycopg.Error, DBAPIError) as exc:   # no connection to be had: down
            raise _mapped(getattr(exc, "orig", exc), lost=True) from exc
        raw: psycopg.Connection = fairy.driver_connection
        try:
            raw.autocommit = True        # each statement its own transaction
            with raw.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            lost = raw.closed or self.engine.dialect.is_disconnect(exc, raw, None)
            if lost:   # as SQLAlchemy does: every connection of this one's generation is stale
                self.engine.pool._invalidate(fairy, exc)
            mapped = _mapped(exc, lost=lost)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            if not raw.closed:
                raw.autocommit = False   # as the pool's other users expect it
            fairy.close()

    def one(self, statement: Statement, given: Mapping) -> tuple | None:
        with self.cursor() as cur:
            return cur.execute(statement.sql, statement.params(given), prepare=True).fetchone()
