"""The live-consent rule's Python and SQL forms agree on every status and edge of expiry, on
SQLite and on PostgreSQL (gateway/consent/liveness.py is the rule's one home)."""
from __future__ import annotations

import itertools

import pytest
from sqlalchemy import bindparam, select, text

from gateway.consent import liveness
from gateway.consent.lifecycle import Status
from gateway.store import db

NOW = 1_800_000_000
EXPIRIES = [None, NOW - 1, NOW, NOW + 1]
CASES = list(itertools.product([s.value for s in Status], EXPIRIES))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite" \
        else request.getfixturevalue("pg_schema")
    eng = db.make_engine(url)
    db.upgrade(eng)
    with eng.begin() as conn:
        conn.execute(db.requesters.insert().values(client_id="c", name="C", kind="department",
                                                   jwks={"keys": []}, redirect_uris=[],
                                                   created_at=0))
        for i, (status, expires) in enumerate(CASES):
            conn.execute(db.consents.insert().values(
                consent_id=f"cns_{i}", client_id="c", status=status, purpose="p",
                data_items=[], access="ongoing", authorization_details=[], created_at=0,
                expires_at=expires))
    yield eng
    eng.dispose()


def _ids(conn, where, **params) -> set[str]:
    return set(conn.execute(select(db.consents.c.consent_id).where(where), params).scalars())


def test_python_and_sql_agree_on_which_consents_are_live(engine):
    expected = {f"cns_{i}" for i, (status, expires) in enumerate(CASES)
                if liveness.is_live({"status": status, "expires_at": expires}, NOW)}
    assert expected == {f"cns_{i}" for i, (s, e) in enumerate(CASES)
                        if s == "approved" and e == NOW + 1}
    with engine.connect() as conn:
        assert _ids(conn, liveness.live_clause(db.consents, NOW)) == expected
        assert _ids(conn, liveness.live_clause(db.consents, bindparam("now")), now=NOW) == expected
        assert _ids(conn, text(liveness.LIVE_SQL), now=NOW) == expected
        lapsed = {f"cns_{i}" for i, (status, _) in enumerate(CASES)
                  if status == "approved"} - expected
        assert _ids(conn, liveness.lapsed_clause(db.consents, NOW)) == lapsed
        parts = [_ids(conn, part) for part in liveness.lapsed_parts(db.consents, NOW)]
        assert set().union(*parts) == lapsed and sum(map(len, parts)) == len(lapsed)  # disjoint


@pytest.mark.parametrize("status, expires", CASES)
def test_status_now_counts_a_lapsed_approval_as_expired(status, expires):
    shown = liveness.status_now({"status": status, "expires_at": expires}, NOW)
    if status == "approved":
        assert shown == ("approved" if expires == NOW + 1 else "expired")
    else:
        assert shown == status
