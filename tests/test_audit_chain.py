"""The audit chain: every change is one entry, and any tampering is found."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from gateway.audit.chain import BrokenChain, verify
from gateway.store.db import audit_entries, audit_head


def _events(gw) -> list[str]:
    with gw.db.connect() as conn:
        return list(conn.execute(select(audit_entries.c.event).order_by(audit_entries.c.seq)).scalars())


def test_story_is_written_to_the_chain_in_order(flow):
    tokens = flow.tokens()
    flow.data(tokens["access_token"])
    flow.revoke_as_citizen(tokens["consent_id"])
    assert _events(flow.gw) == ["consent.requested", "consent.approved", "token.issued",
                                "data.released", "consent.revoked"]
    with flow.gw.db.connect() as conn:
        assert verify(conn) == 5


@pytest.fixture
def chained(flow):
    tokens = flow.tokens()
    flow.data(tokens["access_token"])
    flow.revoke_as_citizen(tokens["consent_id"])
    return flow.gw


def _tamper(gw, statement):
    with gw.db.begin() as conn:
        conn.execute(statement)


def test_editing_an_entry_breaks_the_chain(chained):
    _tamper(chained, update(audit_entries).where(audit_entries.c.seq == 4)
            .values(items=["identity.name_en"]))
    with chained.db.connect() as conn, pytest.raises(BrokenChain) as err:
        verify(conn)
    assert err.value.seq == 4


def test_deleting_an_entry_breaks_the_chain(chained):
    _tamper(chained, delete(audit_entries).where(audit_entries.c.seq == 2))
    with chained.db.connect() as conn, pytest.raises(BrokenChain) as err:
        verify(conn)
    assert err.value.seq == 2


def test_truncating_the_tail_breaks_the_chain(chained):
    _tamper(chained, delete(audit_entries).where(audit_entries.c.seq == 5))
    with chained.db.connect() as conn, pytest.raises(BrokenChain):
        verify(conn)


def test_reordering_entries_breaks_the_chain(chained):
    _tamper(chained, update(audit_entries).where(audit_entries.c.seq == 3).values(seq=99))
    _tamper(chained, update(audit_entries).where(audit_entries.c.seq == 4).values(seq=3))
    _tamper(chained, update(audit_entries).where(audit_entries.c.seq == 99).values(seq=4))
    with chained.db.connect() as conn, pytest.raises(BrokenChain):
        verify(conn)


def test_rewriting_the_head_is_found(chained):
    _tamper(chained, update(audit_head).values(seq=4))
    with chained.db.connect() as conn, pytest.raises(BrokenChain):
        verify(conn)


def test_failed_change_writes_no_entry(flow):
    tokens = flow.tokens()
    before = _events(flow.gw)
    flow.data(tokens["access_token"], items="contact.email")
    flow.revoke_as_citizen("cns_does_not_exist")
    assert _events(flow.gw) == before


def test_one_statement_release_writes_nothing_for_a_revoked_consent(tmp_path, request, clock):
    """PostgreSQL's single-statement release: the consent check and the audit entry are one."""
    import jwt as pyjwt

    from gateway.audit.chain import release_sql

    from .conftest import build_app, make_config
    from .flow import Flow
    app = build_app(make_config(tmp_path, "services", request), clock)
    flow = Flow(app)
    tokens = flow.tokens()
    jti = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    fields = dict(client_id=flow.client_id, subject="s", consent_id=tokens["consent_id"],
                  items=["identity.hkid"], route="api")
    with flow.gw.reads.connect() as conn:
        assert release_sql(conn, clock.now(), jti, **fields) is not None
    flow.revoke_as_citizen(tokens["consent_id"])
    before = _events(flow.gw)
    with flow.gw.reads.connect() as conn:
        assert release_sql(conn, clock.now(), jti, **fields) is None
    assert _events(flow.gw) == before
    with flow.gw.db.connect() as conn:
        assert verify(conn) == len(before)
    app.extensions["cdeg"].close()
