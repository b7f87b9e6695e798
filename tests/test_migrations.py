"""Alembic owns the schema (gateway/store/migrations). On SQLite and on PostgreSQL: the revisions
build exactly the tables of gateway/store/db.py; upgrading a database at head is one SELECT;
processes starting together migrate it once; a database made before Alembic by ``create_all`` is
adopted; ``cdeg db upgrade`` says which revision it reached."""
from __future__ import annotations

import hashlib

import multiprocessing

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import (JSON, BigInteger, Column, ForeignKey, Index, Integer, MetaData, String,
                        Table, event, func, select, text)

from gateway.cli import main
from gateway.config import Config
from gateway.instance import Gateway
from gateway.store import db

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(params=ENGINES)
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    return request.getfixturevalue("pg_schema")


@pytest.fixture
def engine(url):
    eng = db.make_engine(url)
    yield eng
    eng.dispose()


def differences(engine) -> list:
    """What Alembic's autogenerate would change to make the database match the models: types,
    nullability, server defaults, indexes, unique and foreign keys included."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "compare_server_default": True})
        return compare_metadata(context, db.metadata)


def versions(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()


def test_the_migrations_build_exactly_the_models(engine):
    # the comparison sees a database that lacks the schema (so an empty answer below means
    # something): every table of the models is missing before the upgrade
    missing = {diff[1].name for diff in differences(engine) if diff[0] == "add_table"}
    assert missing == set(db.metadata.tables)

    assert db.upgrade(engine) == db.head_revision()
    assert differences(engine) == []
    assert versions(engine) == [db.head_revision()]
    with engine.connect() as conn:   # the transparency log starts empty: no genesis row
        assert conn.execute(select(func.count()).select_from(db.log_heads)).scalar() == 0


def test_upgrading_a_database_at_head_is_one_select_and_changes_nothing(engine):
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(db.requesters.insert().values(client_id="c", name="C", kind="fi",
                                                   jwks={"keys": []}, redirect_uris=[],
                                                   created_at=1))
    statements = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()))

    assert db.upgrade(engine) == db.head_revision()
    assert db.upgrade(engine) == db.head_revision()
    event.remove(engine, "before_cursor_execute", _seen)
    # no lock, no transaction, no DDL: the version check alone, each time
    assert statements == ["SELECT version_num FROM alembic_version"] * 2
    assert versions(engine) == [db.head_revision()]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.requesters)).scalar() == 1


def _upgrade_when_all_are_ready(url, barrier, out):
    engine = db.make_engine(url)
    try:
        barrier.wait(30)
        out.put(("ok", db.upgrade(engine)))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        engine.dispose()


def test_processes_upgrading_one_fresh_database_together_migrate_it_once(url, engine):
    ctx = multiprocessing.get_context("fork")
    workers = 4
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_upgrade_when_all_are_ready, args=(url, barrier, out))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    answers = [out.get(timeout=5) for _ in procs]
    assert answers == [("ok", db.head_revision())] * workers
    assert all(proc.exitcode == 0 for proc in procs)
    assert versions(engine) == [db.head_revision()]
    assert differences(engine) == []


def pre_alembic_metadata() -> MetaData:
    """The tables as the last checkout before Alembic declared them; its ``upgrade()`` was
    ``create_all`` plus the audit head's genesis row. Frozen here on purpose: it is what
    databases made by that checkout hold, whatever the models become."""
    m = MetaData()
    Table("requesters", m, Column("client_id", String(64), primary_key=True),
          Column("name", String(200), nullable=False), Column("name_zh", String(200)),
          Column("kind", String(16), nullable=False), Column("jwks", JSON, nullable=False),
          Column("redirect_uris", JSON, nullable=False), Column("policy", JSON),
          Column("webhook_url", String(500)), Column("created_at", BigInteger, nullable=False))
    Table("citizens", m, Column("subject_id", String(32), primary_key=True),
          Column("hkid", String(12), nullable=False, unique=True),
          Column("created_at", BigInteger, nullable=False))
    Table("consents", m, Column("consent_id", String(40), primary_key=True),
          Column("client_id", String(64), ForeignKey("requesters.client_id"), nullable=False),
          Column("subject_id", String(32), ForeignKey("citizens.subject_id")),
          Column("status", String(16), nullable=False),
          Column("purpose", String(100), nullable=False),
          Column("data_items", JSON, nullable=False), Column("access", String(16), nullable=False),
          Column("duration", String(32)), Column("authorization_details", JSON, nullable=False),
          Column("created_at", BigInteger, nullable=False), Column("decided_at", BigInteger),
          Column("expires_at", BigInteger), Column("ended_at", BigInteger),
          Index("ix_consents_subject", "subject_id"))
    Table("pushed_requests", m, Column("request_uri", String(120), primary_key=True),
          Column("client_id", String(64), nullable=False),
          Column("consent_id", String(40), ForeignKey("consents.consent_id"), nullable=False),
          Column("redirect_uri", String(500), nullable=False), Column("state", String(500)),
          Column("code_challenge", String(128), nullable=False),
          Column("expires_at", BigInteger, nullable=False), Column("used_at", BigInteger))
    Table("authorization_codes", m, Column("code_hash", String(64), primary_key=True),
          Column("consent_id", String(40), ForeignKey("consents.consent_id"), nullable=False),
          Column("client_id", String(64), nullable=False),
          Column("redirect_uri", String(500), nullable=False),
          Column("code_challenge", String(128), nullable=False),
          Column("expires_at", BigInteger, nullable=False), Column("used_at", BigInteger))
    Table("tokens", m, Column("token_id", String(64), primary_key=True),
          Column("kind", String(8), nullable=False),
          Column("consent_id", String(40), ForeignKey("consents.consent_id"), nullable=False),
          Column("client_id", String(64), nullable=False), Column("code_hash", String(64)),
          Column("issued_at", BigInteger, nullable=False),
          Column("expires_at", BigInteger, nullable=False), Column("revoked_at", BigInteger),
          Index("ix_tokens_code", "code_hash"), Index("ix_tokens_consent", "consent_id"))
    Table("audit_entries", m, Column("seq", Integer, primary_key=True, autoincrement=False),
          Column("at", String(32), nullable=False), Column("event", String(32), nullable=False),
          Column("client_id", String(64)), Column("subject", String(64)),
          Column("consent_id", String(40)), Column("items", JSON, nullable=False),
          Column("route", String(32)), Column("outcome", String(32), nullable=False),
          Column("prev_hash", String(64), nullable=False), Column("hash", String(64), nullable=False),
          Index("ix_audit_consent", "consent_id"))
    Table("audit_head", m, Column("id", Integer, primary_key=True, autoincrement=False),
          Column("seq", Integer, nullable=False), Column("hash", String(64), nullable=False),
          Column("prev_hash", String(64)))
    return m


@pytest.mark.parametrize("genesis", [True, False], ids=["with genesis row", "without"])
def test_a_database_made_before_alembic_is_adopted_with_its_data(engine, genesis):
    old = pre_alembic_metadata()
    old.create_all(engine)
    with engine.begin() as conn:
        if genesis:
            conn.execute(old.tables["audit_head"].insert().values(id=1, seq=0,
                                                                  hash=db.GENESIS_HASH))
        conn.execute(old.tables["requesters"].insert().values(
            client_id="bank", name="Bank", kind="fi", jwks={"keys": []}, redirect_uris=[],
            created_at=1))
        conn.execute(old.tables["audit_entries"].insert().values(
            seq=1, at="2026-11-01T00:00:00Z", event="consent.requested", client_id="bank",
            subject=None, consent_id="cns_" + "x" * 24, items=["identity.hkid"], route=None,
            outcome="ok", prev_hash="0" * 64, hash="f" * 64))

    assert db.upgrade(engine) == db.head_revision()
    assert versions(engine) == [db.head_revision()]
    assert differences(engine) == []          # later revisions ran on top of the baseline
    with engine.connect() as conn:
        assert conn.execute(select(db.requesters.c.client_id)).scalars().all() == ["bank"]
        # the chain's entry keeps its bytes and waits in shard 0 for the sequencer
        entry = conn.execute(select(db.audit_entries)).mappings().one()
    body = ('{"at":"2026-11-01T00:00:00Z","client_id":"bank","consent_id":"cns_' + "x" * 24 +
            '","event":"consent.requested","items":["identity.hkid"],"outcome":"ok",'
            '"route":null,"subject":null}')
    assert (entry["shard"], entry["leaf_index"], entry["entry"]) == (0, None, body)
    assert entry["leaf_hash"] == hashlib.sha256(b"\x00" + body.encode()).hexdigest()


@pytest.mark.parametrize("damage", ["a column missing", "a table missing"])
def test_a_pre_alembic_database_unlike_the_baseline_is_refused_and_left_alone(engine, damage):
    pre_alembic_metadata().create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE consents DROP COLUMN ended_at" if damage == "a column missing"
                          else "DROP TABLE audit_entries"))
    with pytest.raises(db.SchemaError) as refused:
        db.upgrade(engine)
    assert str(refused.value).startswith("database: ")
    assert ("consents" if damage == "a column missing" else "audit_entries") in str(refused.value)
    assert db.current_revision(engine) is None       # not stamped, nothing created
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_head")).scalar() == 0


def test_a_database_migrated_by_a_newer_release_is_refused(engine):
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
    with pytest.raises(db.SchemaError, match="ffff_from_the_future"):
        db.upgrade(engine)


def test_the_embedded_gateway_migrates_its_ledger_at_start(tmp_path):
    config = Config(instance_dir=tmp_path / "instance", issuer="http://gateway.test", env="test")
    gw = Gateway(config)
    try:
        assert db.current_revision(gw.db) == db.head_revision()
        assert differences(gw.db) == []
    finally:
        gw.close()


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    import os
    for name in list(os.environ):
        if name.startswith("CDEG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CDEG_INSTANCE_DIR", str(tmp_path / "instance"))
    monkeypatch.setenv("CDEG_ISSUER", "http://gateway.test")
    return tmp_path / "instance"


def test_cdeg_db_upgrade_says_which_revision_it_reached(cli_env):
    for _ in range(2):      # the second run finds the work done and says the same
        result = CliRunner().invoke(main, ["db", "upgrade"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert f"schema up to date at revision {db.head_revision()} in sqlite:///" in result.output
    engine = db.make_engine(Config(instance_dir=cli_env).sqlalchemy_url)
    try:
        assert versions(engine) == [db.head_revision()]
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_cdeg_db_upgrade_refuses_a_database_it_cannot_adopt_in_one_line(cli_env):
    old = pre_alembic_metadata()
    old.remove(old.tables["tokens"])
    engine = db.make_engine(Config(instance_dir=cli_env).sqlalchemy_url)
    old.create_all(engine)
    engine.dispose()
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdeg: database: "), result.output
    assert "tokens" in lines[0] and "Traceback" not in result.output


def test_an_upgrade_from_the_first_revision_keeps_every_consent_token_and_entry(url, tmp_path):
    """A ledger made at 0001_baseline and used — a citizen, a requester with its keys and
    policy, an approved consent, its tokens, its audit entries — upgraded to head: all there,
    the log sequenced and verifying, and the old token still releases data."""
    from alembic import command
    from sqlalchemy import MetaData

    from gateway.audit import sequencer
    from gateway.audit.verify import verify
    from gateway.demo.seed import public_jwks
    from gateway.exchange.release import decide, live_grant
    from gateway.tokens.access import VerifiedClaims
    from policies.engine import POLICY_DIR, load_file

    engine = db.make_engine(url)
    try:
        command.upgrade(db.alembic_config(url), "0001_baseline")
        old = MetaData()
        old.reflect(engine)
        assert "log_heads" not in old.tables and "outbox" not in old.tables
        now = 1_796_000_000
        consent_id, jti = "cns_" + "u" * 24, "jti-before-the-upgrade"
        with engine.begin() as conn:
            t = old.tables
            conn.execute(t["requesters"].insert().values(
                client_id="bank-of-example", name="Bank of Example", kind="fi",
                jwks=public_jwks("bank-of-example"), redirect_uris=["https://bank.example/cb"],
                policy=load_file(POLICY_DIR / "bank-of-example.yaml"), created_at=now))
            conn.execute(t["citizens"].insert().values(subject_id="s" * 32, hkid="A1234563",
                                                       created_at=now))
            conn.execute(t["consents"].insert().values(
                consent_id=consent_id, client_id="bank-of-example", subject_id="s" * 32,
                status="approved", purpose="ekyc-account-opening",
                data_items=["identity.name_en", "identity.hkid"], access="ongoing",
                duration="P90D", authorization_details=[{"type": "cdeg_data"}], created_at=now,
                decided_at=now, expires_at=now + 90 * 86400))
            conn.execute(t["tokens"].insert().values(
                token_id=jti, kind="access", consent_id=consent_id, client_id="bank-of-example",
                issued_at=now, expires_at=now + 600))
            for seq, event in enumerate(("consent.requested", "consent.approved",
                                         "token.issued"), start=1):
                conn.execute(t["audit_entries"].insert().values(
                    seq=seq, at="2026-11-30T00:00:00Z", event=event, client_id="bank-of-example",
                    subject="pairwise", consent_id=consent_id, items=["identity.hkid"],
                    route="web", outcome="ok", prev_hash="0" * 64, hash="f" * 64))

        assert db.upgrade(engine) == db.head_revision()
        assert differences(engine) == []
    finally:
        engine.dispose()

    from gateway.clock import Clock
    clock = Clock()
    clock.advance(now + 60 - clock.now())
    gw = Gateway(Config(instance_dir=tmp_path / "instance", issuer="http://gateway.test",
                        env="test", database_url=url), clock=clock)
    try:
        with gw.db.connect() as conn:
            consent = conn.execute(select(db.consents).where(
                db.consents.c.consent_id == consent_id)).mappings().one()
            assert consent["status"] == "approved" and consent["event_attempts"] == 0
            assert conn.execute(select(func.count()).select_from(db.audit_entries)).scalar() == 3
        assert sequencer.integrate_all(gw) == 3
        verify(gw)                                      # raises naming what does not hold
        grant = live_grant(gw, VerifiedClaims({"jti": jti, "consent_id": consent_id,
                                               "client_id": "bank-of-example",
                                               "exp": now + 600}))
        assert decide(grant, None, clock.now()) == ["identity.name_en", "identity.hkid"]
        assert grant.hkid == "A1234563"
        with gw.db.connect() as conn:    # the ledger from before: its HKID sealed at start
            row = conn.execute(select(db.citizens)).mappings().one()
        assert row["hkid"] is None and row["hkid_sealed"] and row["hkid_index"]
    finally:
        gw.close()
