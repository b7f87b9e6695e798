"""Personal identifiers encrypted at rest (SECURITY, issue 12): a dump of the ledger names no
one; a tampered record is refused, never returned as data; a wrong key stops the gateway at
start; the data keys rotate (and the key-encryption key with them) while the gateway serves."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading

import pytest
from sqlalchemy import select, update

from gateway import identifiers
from gateway.config import ConfigError
from gateway.instance import Gateway
from gateway.store.db import citizens, data_keys
from tests.conftest import PG_DSN

SECRETS = ("A1234563", "A123456", "CHAN", "Tai Man", "陳大文", "Mei Foo", "Broadway",
           "91234567", "chan.taiman")


def dump(gw) -> str:
    url = gw.config.sqlalchemy_url
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return "\n".join(conn.iterdump())
    schema = url.rsplit("search_path%3D", 1)[1]
    pg_dump = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    done = subprocess.run([pg_dump, "--dbname", PG_DSN, "--schema", schema, "--data-only",
                           "--inserts"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_dump_of_a_used_ledger_names_no_one(flow):
    tokens = flow.tokens()
    assert flow.data(tokens["access_token"]).status_code == 200
    flow.revoke_as_citizen(tokens["consent_id"])
    text = dump(flow.gw)
    assert "INSERT INTO" in text and tokens["consent_id"] in text      # the ledger is there
    for secret in SECRETS:
        assert secret not in text, secret
    with flow.gw.db.connect() as conn:
        row = conn.execute(select(citizens)).mappings().first()
    assert row["hkid"] is None and row["hkid_sealed"].count(":") == 1
    assert len(row["hkid_index"]) == 64


def test_a_tampered_record_is_refused_never_returned(flow):
    tokens = flow.tokens()
    with flow.gw.transaction() as conn:
        sealed = conn.execute(select(citizens.c.hkid_sealed)).scalar()
        key_id, _, body = sealed.partition(":")
        flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
        conn.execute(update(citizens).values(hkid_sealed=f"{key_id}:{flipped}"))
    resp = flow.data(tokens["access_token"])
    assert resp.status_code == 500 and resp.mimetype == "application/problem+json"
    assert resp.get_json()["type"].endswith("/identifier-unreadable")
    assert "A123456" not in resp.get_data(as_text=True)


def test_a_record_moved_to_another_citizen_does_not_open(gw):
    sealer = gw.sealer
    sealed = sealer.seal("A123456(3)", "subject-one")
    assert sealer.open(sealed, "subject-one") == "A1234563"
    with pytest.raises(identifiers.SealBroken):
        sealer.open(sealed, "subject-two")


def test_a_wrong_or_missing_key_stops_the_gateway_at_start(gw, tmp_path):
    wrong = gw.config.with_(data_key="d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktISE")
    with pytest.raises(ConfigError, match="CDEG_DATA_KEY: does not open"):
        Gateway(wrong)
    with pytest.raises(ConfigError, match="CDEG_DATA_KEY: must be 32 bytes"):
        Gateway(gw.config.with_(data_key="c2hvcnQ"))


def test_data_keys_rotate_while_the_gateway_serves_and_resume_if_killed(app, flow):
    gw = flow.gw
    from gateway import citizens as people
    with gw.transaction() as conn:     # more citizens than one batch
        for i in range(7):
            digits = f"{100000 + i}"
            people.enrol(conn, gw.clock.now(), f"A{digits}{_check('A', digits)}", gw.sealer)
    tokens = flow.tokens()
    statuses: list[int] = []
    stop = threading.Event()

    def read_on():
        client = app.test_client()
        while not stop.is_set():
            statuses.append(client.get("/api/v1/data", headers={
                "Authorization": f"Bearer {tokens['access_token']}"}).status_code)

    reader = threading.Thread(target=read_on)
    reader.start()
    try:
        first_key = gw.sealer.current

        def killed(n):
            raise KeyboardInterrupt("rotation killed after its first batch")
        with pytest.raises(KeyboardInterrupt):
            identifiers.rotate(gw, batch=3, on_batch=killed)
        assert gw.sealer.current != first_key
        done = identifiers.rotate(gw, batch=3)         # run again: resumes, finishes
    finally:
        stop.set()
        reader.join(timeout=30)
    assert statuses and set(statuses) == {200}, set(statuses)
    with gw.db.connect() as conn:
        sealed = conn.execute(select(citizens.c.hkid_sealed)).scalars().all()
        keys = conn.execute(select(data_keys.c.key_id).where(data_keys.c.purpose == "data")
                            ).scalars().all()
    assert all(s.startswith(done["new_key"] + ":") for s in sealed)
    assert first_key in keys and keys[-1] == done["new_key"]   # retired keys kept, wrapped
    assert flow.data(tokens["access_token"]).status_code == 200


def test_the_key_encryption_key_rotates_with_the_previous_one_given(gw):
    old, new = gw.config.data_key, "bmV3LWtleS1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcyE"
    rotated = Gateway(gw.config.with_(data_key=new, data_key_previous=old))
    try:
        identifiers.rotate(rotated, identifiers.previous_kek(rotated.config))
    finally:
        rotated.close()
    alone = Gateway(gw.config.with_(data_key=new))      # the new key alone opens everything
    try:
        with alone.db.connect() as conn:
            subject, sealed = conn.execute(select(citizens.c.subject_id,
                                                  citizens.c.hkid_sealed)).first()
        assert alone.sealer.open(sealed, subject) == "A1234563"
    finally:
        alone.close()
    with pytest.raises(ConfigError, match="does not open"):
        Gateway(gw.config.with_(data_key=old))          # and the old one no longer does


def _check(prefix: str, digits: str) -> str:
    """The HKID check character (SECURITY's rule), in brackets."""
    from schemas.hkid import check_character
    return f"({check_character(prefix, digits)})"


def test_a_process_that_has_not_reloaded_seals_under_a_retired_key_and_the_row_still_opens(gw):
    """Another process rotated; this one seals a new citizen before it reloads: the retired
    key is still there, so that row opens, and the next rotation re-seals it."""
    from gateway import citizens as people
    stale = gw.sealer.current
    other = Gateway(gw.config)                   # "another process"
    try:
        identifiers.rotate(other)
    finally:
        other.close()
    assert gw.sealer.current == stale            # not reloaded yet (RELOAD_EVERY)
    with gw.transaction() as conn:
        citizen = people.enrol(conn, gw.clock.now(), "G123456(A)", gw.sealer)
    fresh = Gateway(gw.config)                   # a restart
    try:
        with fresh.db.connect() as conn:
            again = people.by_subject(conn, citizen["subject_id"], fresh.sealer)
        assert again["hkid"] == "G123456A"
        assert identifiers.rotate(fresh)["unreadable"] == []
    finally:
        fresh.close()


def test_a_tampered_row_is_named_and_skipped_by_a_rotation_not_a_reason_to_stop(gw):
    from gateway import citizens as people
    with gw.transaction() as conn:
        other = people.enrol(conn, gw.clock.now(), "G123456(A)", gw.sealer)
        conn.execute(update(citizens).where(citizens.c.subject_id == other["subject_id"])
                     .values(hkid_sealed=gw.sealer.current + ":AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
    done = identifiers.rotate(gw, batch=1)
    assert done["unreadable"] == [other["subject_id"]] and done["resealed"] >= 1
