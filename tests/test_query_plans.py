"""The statements that must stay cheap at a million consents use an index (checked with
EXPLAIN on PostgreSQL, not by time): the expiry sweep, the live-grant read, a consent's log,
and what the operations ``benchmarks/million.py`` times send — the citizen's page, a
revocation's tokens, the sequencer's frontier — the latter captured as the code sends them."""
from __future__ import annotations

from sqlalchemy import event, select, text

from gateway.audit import entries
from gateway.config import Config
from gateway.consent import citizen_view
from gateway.demo.seed import DEMO_CITIZEN_HKID, seed
from gateway.instance import Gateway
from gateway.jobs.sweeps import expire_consents, stale_consents
from gateway.store import db
from gateway.store.db import audit_entries, citizens, consents, log_nodes, tokens


def _plan(engine, statement) -> str:
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))   # an empty table would be scanned
        return "\n".join(conn.execute(text(f"EXPLAIN {compiled}")).scalars())


def test_the_expiry_sweep_reads_an_index_not_the_whole_table(pg_schema):
    engine = db.make_engine(pg_schema)
    db.upgrade(engine)
    plan = _plan(engine, stale_consents(1_800_000_000, 500))
    engine.dispose()
    assert "ix_consents_status_expiry" in plan and "ix_pushed_requests_consent" in plan, plan
    assert "Seq Scan" not in plan, plan


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


# -- the statements the operations of benchmarks/million.py send, captured as they are sent ---

ISSUER = "http://gateway.test"


def _sent(gw, work) -> list[tuple[str, dict]]:
    """The statements ``work()`` sends through the gateway's engine, with their parameters."""
    seen = []

    def keep(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany:
            seen.append((statement, parameters))

    event.listen(gw.db.engine, "before_cursor_execute", keep)
    try:
        work()
    finally:
        event.remove(gw.db.engine, "before_cursor_execute", keep)
    return seen


def _sent_plan(engine, statement: str, parameters, *, seqscan: bool = False) -> str:
    with engine.connect() as conn:
        if not seqscan:
            conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement,
                                                                parameters))


def _gateway(pg_schema, tmp_path):
    engine = db.make_engine(pg_schema)
    db.upgrade(engine)
    engine.dispose()
    gw = Gateway(Config(instance_dir=tmp_path / "instance", issuer=ISSUER, env="test",
                        database_url=pg_schema, jobs_inline=False))   # no sequencer after commit
    seed(gw)
    return gw


def _demo_consent(gw, now: int) -> tuple[str, str]:
    """An approved ongoing consent of the demo citizen with a live token and a read; answers
    (subject_id, consent_id)."""
    consent_id = "cns_" + "a" * 24
    with gw.transaction() as conn:
        subject_id = conn.execute(select(citizens.c.subject_id).where(
            citizens.c.hkid_index == gw.sealer.index(DEMO_CITIZEN_HKID))).scalar_one()
        conn.execute(consents.insert().values(
            consent_id=consent_id, client_id="bank-of-example", subject_id=subject_id,
            status="approved", purpose="ekyc-account-opening", data_items=["identity.hkid"],
            access="ongoing", duration="P90D", authorization_details=[], created_at=now,
            decided_at=now, expires_at=now + 86_400))
        conn.execute(tokens.insert().values(token_id="jti", kind="access", consent_id=consent_id,
                                            client_id="bank-of-example", issued_at=now,
                                            expires_at=now + 600))
        entries.append(conn, now, "data.released", citizen=subject_id,
                       client_id="bank-of-example", consent_id=consent_id,
                       items=["identity.hkid"], route="api")
    return subject_id, consent_id


def test_the_citizens_page_reads_their_consents_and_reads_by_index(pg_schema, tmp_path):
    gw = _gateway(pg_schema, tmp_path)
    try:
        subject_id, _ = _demo_consent(gw, gw.clock.now())
        sent = _sent(gw, lambda: citizen_view.overview(gw, subject_id, "en"))
        plans = {table: _sent_plan(gw.db, statement, parameters)
                 for statement, parameters in sent
                 for table in ("consents", "audit_entries") if f"FROM {table}" in statement}
    finally:
        gw.close()
    assert "ix_consents_subject" in plans["consents"], plans["consents"]
    assert "ix_audit_consent" in plans["audit_entries"], plans["audit_entries"]


def test_a_revocation_finds_its_consents_tokens_by_index(pg_schema, tmp_path):
    gw = _gateway(pg_schema, tmp_path)
    try:
        subject_id, consent_id = _demo_consent(gw, gw.clock.now())
        sent = _sent(gw, lambda: citizen_view.revoke(gw, subject_id, consent_id))
        plans = [_sent_plan(gw.db, statement, parameters) for statement, parameters in sent]
    finally:
        gw.close()
    token_plans = [plan for plan in plans if " on tokens" in plan]
    assert token_plans and all("ix_tokens_consent" in plan for plan in token_plans), plans
    scans = [plan for plan in plans if "Seq Scan" in plan]
    assert not scans, "\n\n".join(scans)


def test_the_sequencers_frontier_reads_are_index_lookups(pg_schema):
    engine = db.make_engine(pg_schema)
    db.upgrade(engine)
    leaf = select(audit_entries.c.leaf_hash).where(audit_entries.c.shard == 0,
                                                   audit_entries.c.leaf_index == 7)
    node = select(log_nodes.c.hash).where(log_nodes.c.shard == 0, log_nodes.c.level == 3,
                                          log_nodes.c.idx == 0)
    plans = [_plan(engine, q) for q in (leaf, node)]
    engine.dispose()
    assert "uq_audit_leaf" in plans[0] or "ix_audit_pending" in plans[0], plans[0]
    assert "log_nodes_pkey" in plans[1], plans[1]


def _a_years_consents(engine, count: int, now: int) -> None:
    """A ledger shaped like a real one for the planner's statistics: most consents approved
    and expiring ahead, the rest ended (expired, revoked, declined) with expiries behind them,
    each with its pushed request; none lapsed, no request unanswered."""
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO consents (consent_id, client_id, status, purpose, data_items, access,
                                  duration, authorization_details, created_at, decided_at,
                                  expires_at, ended_at)
            SELECT 'cns_' || lpad(i::text, 24, '0'), 'bank-of-example',
                   CASE WHEN i % 20 < 15 THEN 'approved' WHEN i % 20 < 18 THEN 'expired'
                        WHEN i % 20 < 19 THEN 'revoked' ELSE 'declined' END,
                   'ekyc-account-opening', '[]', 'ongoing', 'P90D', '[]', :now - i * 1500,
                   :now - i * 1500 + 60,
                   CASE WHEN i % 20 < 15 THEN :now + i * 300 WHEN i % 20 < 19 THEN :now - i * 700
                   END,
                   CASE WHEN i % 20 BETWEEN 15 AND 18 THEN :now - i * 700 END
            FROM generate_series(1, :count) AS i"""), {"now": now, "count": count})
        conn.execute(text("""
            INSERT INTO pushed_requests (request_uri, client_id, consent_id, redirect_uri,
                                         code_challenge, expires_at, used_at)
            SELECT 'urn:' || consent_id, client_id, consent_id, 'https://bank.example/cb',
                   'challenge', created_at + 90, decided_at FROM consents"""))
        conn.execute(text("ANALYZE consents"))
        conn.execute(text("ANALYZE pushed_requests"))


def test_the_expiry_sweep_stays_on_indexes_with_a_real_ledgers_statistics(pg_schema, tmp_path):
    gw = _gateway(pg_schema, tmp_path)
    try:
        _a_years_consents(gw.db, 20_000, gw.clock.now())
        sent = _sent(gw, lambda: expire_consents(gw))   # nothing lapsed: only its read(s)
        plans = [_sent_plan(gw.db, statement, parameters, seqscan=True)
                 for statement, parameters in sent]
    finally:
        gw.close()
    assert not any("Seq Scan" in plan for plan in plans), plans


def test_the_cdi_results_purge_and_the_due_pushes_are_index_reads(pg_schema, tmp_path):
    from gateway.cdi.queries import purge_results
    from gateway.jobs import callbacks, events
    gw = _gateway(pg_schema, tmp_path)
    try:
        sent = _sent(gw, lambda: (purge_results(gw), callbacks.due(gw), events.due(gw)))
        plans = [(statement, _sent_plan(gw.db, statement, parameters))
                 for statement, parameters in sent
                 if statement.lstrip().startswith(("UPDATE cdi_queries", "SELECT"))]
    finally:
        gw.close()
    purges = [plan for statement, plan in plans
              if statement.lstrip().startswith("UPDATE") and "purged_at" in statement]
    assert len(purges) == 2
    assert "ix_cdi_collected" in purges[0] and "ix_cdi_finished" in purges[1], purges
    due = [plan for statement, plan in plans if statement.lstrip().startswith("SELECT") and (
        "next_delivery_at <=" in statement or "next_event_at <=" in statement)]
    assert len(due) == 2
    assert "ix_cdi_delivery" in due[0] and "ix_consents_event_delivery" in due[1], due
