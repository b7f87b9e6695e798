"""Every SQL statement a gateway sends, whichever way: through SQLAlchemy, or prepared on
psycopg by ``gateway/store/prepared.py`` (which SQLAlchemy's events do not see)."""
from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event


@contextmanager
def statements_sent(gw, monkeypatch):
    """A list that fills with each statement's text, whitespace folded, lower case."""
    seen: list[str] = []

    def folded(text: str) -> None:
        seen.append(" ".join(text.split()).lower())

    def through_sqlalchemy(conn, cursor, text, *args):
        folded(text)

    if gw.prepared is not None:
        one = gw.prepared.one

        def prepared_one(statement, given):
            folded(statement.sql)
            return one(statement, given)
        monkeypatch.setattr(gw.prepared, "one", prepared_one)
    event.listen(gw.db.engine, "before_cursor_execute", through_sqlalchemy)
    try:
        yield seen
    finally:
        event.remove(gw.db.engine, "before_cursor_execute", through_sqlalchemy)
