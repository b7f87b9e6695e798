"""The statements that must stay cheap at a million consents use an index (checked with
EXPLAIN on PostgreSQL, not by time): the expiry sweep, the live-grant read, a consent's log."""
from __future__ import annotations

from sqlalchemy import and_, or_, select, text

from gateway.consent import liveness
from gateway.consent.lifecycle import Status
from gateway.store import db
from gateway.store.db import audit_entries, consents, pushed_requests, tokens


def _plan(engine, statement) -> str:
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))   # an empty table would be scanned
        return "\n".join(conn.execute(text(f"EXPLAIN {compiled}")).scalars())


def test_the_expiry_sweep_reads_an_index_not_the_whole_table(pg_schema):
    engine = db.make_engine(pg_schema)
    db.upgrade(engine)
    now = 1_800_000_000
    sweep = (select(consents.c.consent_id)
             .outerjoin(pushed_requests, pushed_requests.c.consent_id == consents.c.consent_id)
             .where(or_(liveness.lapsed_clause(consents, now),
                        and_(consents.c.status == Status.REQUESTED.value,
                             pushed_requests.c.expires_at <= now)))
             .limit(500))
    plan = _plan(engine, sweep)
    engine.dispose()
    assert "ix_consents_status_expiry" in plan and "Seq Scan on consents" not in plan, plan


def test_the_live_grant_and_a_consents_log_are_index_lookups(pg_schema):
    engine = db.make_engine(pg_schema)
    db.upgrade(engine)
    grant = select(tokens.c.consent_id).where(tokens.c.token_id == "jti")
    log = select(audit_entries.c.entry).where(audit_entries.c.consent_id == "cns_x")
    pending = (select(audit_entries.c.id).where(audit_entries.c.shard == 0,
                                                audit_entries.c.leaf_index.is_(None))
               .order_by(audit_entries.c.id).limit(1000))
    plans = [_plan(engine, q) for q in (grant, log, pending)]
    engine.dispose()
    assert "tokens_pkey" in plans[0]
    assert "ix_audit_consent" in plans[1]
    assert "ix_audit_pending" in plans[2]
