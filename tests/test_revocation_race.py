"""Revocation against concurrent readers, on the real PostgreSQL (and the embedded default).

Readers hammer ``GET /api/v1/data`` from several threads while the citizen revokes. The revoke
must always succeed, and once it has answered no read may succeed; in the audit log no release
of the consent may follow its revocation. A ``once`` consent read concurrently releases exactly
once; every other reader gets 401, never 503.
"""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from gateway.store.db import audit_entries

from .flow import ONCE_DETAIL, Flow

READERS = 3
ROUNDS = 6


def _reader(app, token: str, stop: threading.Event, statuses: list, after_revoke: threading.Event,
            late: list):
    client = app.test_client()
    while not stop.is_set():
        started_after = after_revoke.is_set()
        resp = client.get("/api/v1/data", headers={"Authorization": f"Bearer {token}"})
        statuses.append(resp.status_code)
        if started_after and resp.status_code == 200:
            late.append(resp.get_json())


def _wait_until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the readers stalled"
        time.sleep(0.002)


def _events_of(gw, consent_id: str) -> list[str]:
    with gw.db.connect() as conn:
        return list(conn.execute(select(audit_entries.c.event)
                                 .where(audit_entries.c.consent_id == consent_id)
                                 .order_by(audit_entries.c.id)).scalars())


def test_revoke_always_wins_against_concurrent_readers(app):
    flow = Flow(app)
    for _ in range(ROUNDS):
        tokens = flow.tokens()
        consent_id = tokens["consent_id"]
        stop, revoked = threading.Event(), threading.Event()
        statuses: list[int] = []
        late: list = []
        threads = [threading.Thread(target=_reader,
                                    args=(app, tokens["access_token"], stop, statuses, revoked, late))
                   for _ in range(READERS)]
        for t in threads:
            t.start()
        _wait_until(lambda: statuses.count(200) >= READERS * 2)  # readers well under way
        resp = flow.revoke_as_citizen(consent_id)
        revoked.set()
        # readers keep going for a while after the revocation answered
        seen = len(statuses)
        _wait_until(lambda: len(statuses) >= seen + READERS * 3)
        stop.set()
        for t in threads:
            t.join()
        assert resp.status_code == 303, resp.get_data(as_text=True)
        assert late == [], "data was released after the revocation answered"
        assert set(statuses) <= {200, 401}, statuses
        events = _events_of(flow.gw, consent_id)
        assert "consent.revoked" in events
        assert "data.released" not in events[events.index("consent.revoked"):]
        assert flow.data(tokens["access_token"]).status_code == 401


@pytest.mark.parametrize("readers", [4])
def test_once_consent_read_concurrently_releases_exactly_once(app, readers):
    flow = Flow(app)
    for _ in range(3):
        tokens = flow.tokens(ONCE_DETAIL)
        barrier = threading.Barrier(readers)
        statuses: list[int] = []

        def read():
            client = app.test_client()
            barrier.wait()
            statuses.append(client.get("/api/v1/data", headers={
                "Authorization": f"Bearer {tokens['access_token']}"}).status_code)

        threads = [threading.Thread(target=read) for _ in range(readers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [401] * (readers - 1), statuses
        assert _events_of(flow.gw, tokens["consent_id"]).count("data.released") == 1


def _contention(sqlstate: str = "40P01"):
    """A lost race as the engine raises it (store/db.py maps the driver's SQLSTATE)."""
    from gateway.errors import Contention
    return Contention(f"database: lost a race ({sqlstate})")


def test_a_transaction_that_lost_a_race_is_run_again(gw):
    calls = []

    def work(conn):
        calls.append(1)
        if len(calls) < 3:
            raise _contention("40001" if len(calls) == 1 else "40P01")
        return "done"

    assert gw.in_transaction(work) == "done" and len(calls) == 3


def test_contention_outlasting_the_retries_is_not_called_the_database_being_down(flow, monkeypatch):
    tokens = flow.tokens()
    from gateway.consent import ledger

    def always_lose(*args, **kwargs):
        raise _contention()

    monkeypatch.setattr(ledger, "transition", always_lose)
    resp = flow.revoke_as_citizen(tokens["consent_id"])
    page = resp.get_data(as_text=True)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert "did not answer" not in page and "concurrent change" in page


def test_a_real_postgresql_deadlock_is_recognised_as_contention(pg_schema):
    """The retry above keys on Contention, which the engine raises for PostgreSQL's SQLSTATE of
    a lost race; check it with a deadlock made on purpose."""
    from sqlalchemy import text

    from gateway.errors import Contention
    from gateway.store import db

    engine = db.make_engine(pg_schema)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE pair (id int primary key)"))
        conn.execute(text("INSERT INTO pair VALUES (1), (2)"))
    both_hold_one = threading.Barrier(2)
    errors: list = []

    def lock(first: int, second: int):
        try:
            with engine.begin() as conn:
                conn.execute(text("SELECT id FROM pair WHERE id = :i FOR UPDATE"), {"i": first})
                both_hold_one.wait()
                conn.execute(text("SELECT id FROM pair WHERE id = :i FOR UPDATE"), {"i": second})
        except Contention as exc:
            errors.append(exc)

    threads = [threading.Thread(target=lock, args=(1, 2)), threading.Thread(target=lock, args=(2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert len(errors) == 1 and "deadlock detected" in errors[0].operator_detail  # mapped


def test_the_second_revocation_pass_does_not_wait_for_a_token_row_a_release_holds(app, backend):
    """While holding the consent row, revocation's second pass skips token rows another
    transaction holds (a release waiting for that consent row): waiting would deadlock."""
    from sqlalchemy import text

    from gateway.store.db import tokens as token_table
    from gateway.tokens import token_rows
    flow = Flow(app)
    first = flow.tokens()
    gw = flow.gw
    if backend == "embedded":  # SQLite has no row locks: the pass simply revokes everything
        with gw.transaction() as conn:
            token_rows.revoke_for_consent(conn, first["consent_id"], 1, skip_locked=True)
        assert flow.data(first["access_token"]).status_code == 401
        return
    held = gw.db.connect()
    held.begin()
    held.execute(select(token_table.c.token_id).where(
        token_table.c.consent_id == first["consent_id"], token_table.c.kind == "access")
        .with_for_update())
    try:
        with gw.transaction() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            token_rows.revoke_for_consent(conn, first["consent_id"], 1, skip_locked=True)
    finally:
        held.rollback()
        held.close()
    with gw.db.connect() as conn:
        kinds = {r.kind: r.revoked_at for r in conn.execute(select(token_table).where(
            token_table.c.consent_id == first["consent_id"]))}
    assert kinds["refresh"] == 1 and kinds["access"] is None  # skipped, not waited for
