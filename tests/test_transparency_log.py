"""The audit log as a transparency log (SPEC section 9): writers insert entries and nothing
else, a sequencer integrates them into RFC 9162 trees per shard, signed checkpoints commit to
every shard, proofs are served, and tampering — or a rewrite of history — is found."""
from __future__ import annotations

import base64
import json
import threading

import pytest
from sqlalchemy import delete, func, select, update

from gateway.audit import checkpoints, merkle, sequencer
from gateway.audit.entries import leaf_hash
from gateway.audit.verify import LogBroken, verify
from gateway.store.db import audit_entries, log_checkpoints, log_heads, log_nodes

from .conftest import build_app, make_config
from .flow import Flow
from .statements import statements_sent


def _events(gw) -> list[str]:
    with gw.db.connect() as conn:
        return list(conn.execute(select(audit_entries.c.event)
                                 .order_by(audit_entries.c.shard,
                                           audit_entries.c.leaf_index)).scalars())


def _b64(raw: str) -> bytes:
    return base64.b64decode(raw, validate=True)


def _checkpoint(flow) -> dict:
    resp = flow.requester.get("/log/v1/checkpoint")
    assert resp.status_code == 200 and resp.mimetype == "application/jwt"
    return checkpoints.verify(flow.gw, resp.get_data(as_text=True))


@pytest.fixture
def logged(flow):
    tokens = flow.tokens()
    flow.data(tokens["access_token"])
    flow.revoke_as_citizen(tokens["consent_id"])
    sequencer.integrate_all(flow.gw)
    return flow


def _tamper(gw, statement):
    with gw.db.begin() as conn:
        conn.execute(statement)


def test_story_is_written_to_the_log_in_order_and_verifies(logged):
    assert _events(logged.gw) == ["consent.requested", "consent.approved", "token.issued",
                                  "data.released", "consent.revoked"]
    result = verify(logged.gw)
    assert (result.entries, result.pending) == (5, 0)


def test_a_writer_inserts_its_entry_and_updates_no_row_every_writer_shares(flow, monkeypatch):
    tokens = flow.tokens()
    monkeypatch.setattr(sequencer, "after_commit", lambda gw: None)   # the writer alone
    with statements_sent(flow.gw, monkeypatch) as seen:
        assert flow.data(tokens["access_token"]).status_code == 200
    writes = [s for s in seen if s.startswith(("insert", "update", "with"))]
    assert any("insert into audit_entries" in s for s in writes)
    assert not any("log_heads" in s or "log_nodes" in s or "audit_head" in s for s in seen)


def test_editing_an_entry_is_found_and_named(logged):
    with logged.gw.db.connect() as conn:
        victim = conn.execute(select(audit_entries.c.id).where(
            audit_entries.c.event == "data.released")).scalar()
    _tamper(logged.gw, update(audit_entries).where(audit_entries.c.id == victim)
            .values(entry=func.replace(audit_entries.c.entry, '"ok"', '"no"')))
    with pytest.raises(LogBroken, match=f"audit entry {victim} "):
        verify(logged.gw)


def test_an_entry_rewritten_with_its_hash_is_found_by_the_tree(logged):
    with logged.gw.db.connect() as conn:
        row = conn.execute(select(audit_entries).where(audit_entries.c.leaf_index == 1)).one()
    forged = row.entry.replace('"ok"', '"no"')
    _tamper(logged.gw, update(audit_entries).where(audit_entries.c.id == row.id)
            .values(entry=forged, leaf_hash=leaf_hash(forged)))
    with pytest.raises(LogBroken, match="tree node of shard 0 at level 1, index 0"):
        verify(logged.gw)


def test_a_tampered_tree_node_is_named(logged):
    _tamper(logged.gw, update(log_nodes).where(log_nodes.c.level == 2).values(hash="0" * 64))
    with pytest.raises(LogBroken, match="tree node of shard 0 at level 2, index 0"):
        verify(logged.gw)


def test_a_deleted_entry_is_found(logged):
    _tamper(logged.gw, delete(audit_entries).where(audit_entries.c.leaf_index == 2))
    with pytest.raises(LogBroken, match="shard 0, leaf 2: missing"):
        verify(logged.gw)


def test_a_tampered_checkpoint_is_found(logged):
    _checkpoint(logged)
    with logged.gw.db.connect() as conn:
        jws = conn.execute(select(log_checkpoints.c.jws)).scalars().all()[-1]
    head, payload, sig = jws.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["shards"][0]["tree_size"] = 4
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(body).encode())
                       .decode().rstrip("="), sig])
    _tamper(logged.gw, update(log_checkpoints).values(jws=forged))
    with pytest.raises(LogBroken, match="the latest checkpoint"):
        verify(logged.gw)


def test_a_rewrite_of_history_by_whoever_writes_the_database_is_caught_by_a_kept_checkpoint(
        logged):
    """The attacker edits an entry, recomputes its leaf hash, every node and the head, and
    removes the checkpoints; the database alone now looks intact — the checkpoint a requester
    kept does not."""
    kept = logged.requester.get("/log/v1/checkpoint").get_data(as_text=True)
    gw = logged.gw
    with gw.db.begin() as conn:
        rows = conn.execute(select(audit_entries).order_by(audit_entries.c.leaf_index)).all()
        tree = merkle.Frontier()
        conn.execute(delete(log_nodes))
        for row in rows:
            body = row.entry.replace('"data.released"', '"data.not_released"') \
                if row.event == "data.released" else row.entry
            conn.execute(update(audit_entries).where(audit_entries.c.id == row.id)
                         .values(entry=body, leaf_hash=leaf_hash(body)))
            for level, idx, value in tree.append(bytes.fromhex(leaf_hash(body))):
                if level:
                    conn.execute(log_nodes.insert().values(shard=0, level=level, idx=idx,
                                                           hash=value.hex(),
                                                           span_end=(idx + 1) << level))
        conn.execute(update(log_heads).values(root_hash=tree.root().hex()))
        conn.execute(delete(log_checkpoints))
    assert verify(gw).checkpoint_iat is None          # intact, as far as the database goes
    with pytest.raises(LogBroken, match="the kept checkpoint: shard 0 at size 5"):
        verify(gw, kept)
    gw.clock.advance(1)
    checkpoints.publish(gw)                           # and one who holds the key re-signs
    assert verify(gw).checkpoint_iat is not None      # self-consistent again
    with pytest.raises(LogBroken, match="the kept checkpoint: shard 0 at size 5"):
        verify(gw, kept)


def test_a_checkpoint_signed_by_another_key_is_refused(logged):
    from jwcrypto import jwk

    from gateway.tokens import jose
    stranger = jwk.JWK.generate(kty="EC", crv="P-256", kid="stranger")
    forged = jose.sign({"iss": logged.gw.config.issuer, "iat": 1, "shards": []}, stranger,
                       typ=checkpoints.TYP)
    with pytest.raises(checkpoints.CheckpointRefused, match="key"):
        checkpoints.verify(logged.gw, forged)


def test_proofs_served_verify_with_rfc9162s_algorithms(logged):
    gw = logged.gw
    for _ in range(3):   # more entries, a second checkpoint
        logged.tokens()
    first = _checkpoint(logged)["shards"][0]
    logged.tokens()
    second = _checkpoint(logged)["shards"][0]
    assert second["tree_size"] > first["tree_size"] >= 5
    for index in (0, 3, first["tree_size"] - 1):
        proof = logged.requester.get(f"/log/v1/proof/inclusion?shard=0&leaf_index={index}"
                                     f"&tree_size={second['tree_size']}").get_json()
        with gw.db.connect() as conn:
            body = conn.execute(select(audit_entries.c.entry).where(
                audit_entries.c.leaf_index == index)).scalar()
        assert _b64(proof["leaf_hash"]) == merkle.leaf_hash(body.encode())
        assert merkle.verify_inclusion(index, second["tree_size"], _b64(proof["leaf_hash"]),
                                       [_b64(h) for h in proof["audit_path"]],
                                       _b64(second["root_hash"]))
    proof = logged.requester.get(f"/log/v1/proof/consistency?shard=0&first={first['tree_size']}"
                                 f"&second={second['tree_size']}").get_json()
    assert merkle.verify_consistency(first["tree_size"], second["tree_size"],
                                     _b64(first["root_hash"]), _b64(second["root_hash"]),
                                     [_b64(h) for h in proof["consistency_path"]])


@pytest.mark.parametrize("query", ["shard=0&leaf_index=0&tree_size=999", "shard=0&leaf_index=-1&tree_size=3",
                                   "shard=0&leaf_index=99999999999999999999&tree_size=3",
                                   "shard=7&leaf_index=0&tree_size=1", "shard=0&leaf_index=3&tree_size=3",
                                   "shard=0&tree_size=3", "shard=0&leaf_index=x&tree_size=3",
                                   "shard=0&leaf_index=0&leaf_index=1&tree_size=3"])
def test_bad_inclusion_requests_are_clear_problems(logged, query):
    resp = logged.requester.get("/log/v1/proof/inclusion?" + query)
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert resp.get_json()["errors"]


def test_a_consistency_request_beyond_the_tree_is_a_clear_problem(logged):
    resp = logged.requester.get("/log/v1/proof/consistency?shard=0&first=2&second=999")
    assert resp.status_code == 400 and "beyond" in resp.get_json()["detail"]


def test_a_consents_entries_are_shown_to_its_requester_and_its_citizen_alone(flow):
    tokens = flow.tokens()
    path = f"/log/v1/consents/{tokens['consent_id']}/entries"
    mine = flow.requester.get(path, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert mine.status_code == 200
    listed = mine.get_json()["entries"]
    assert [json.loads(e["entry"])["event"] for e in listed] == [
        "consent.requested", "consent.approved", "token.issued"]
    assert all(isinstance(e["leaf_index"], int) for e in listed)      # sequenced inline
    assert flow.browser.get(path).status_code == 200                  # the citizen, logged in
    other = Flow(flow.app)                                            # another bank's token
    other_tokens = other.tokens()
    resp = other.requester.get(path, headers={
        "Authorization": f"Bearer {other_tokens['access_token']}"})
    assert resp.status_code == 404
    assert flow.app.test_client().get(path).status_code == 404        # nobody
    assert flow.requester.get("/log/v1/consents/cns_nothing/entries").status_code == 404


def test_a_sequencer_killed_mid_batch_leaves_nothing_half_done(flow, monkeypatch):
    monkeypatch.setattr(sequencer, "after_commit", lambda gw: None)
    flow.tokens()
    appended = merkle.Frontier.append
    calls = []

    def dies_on_the_third(self, value):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return appended(self, value)

    monkeypatch.setattr(merkle.Frontier, "append", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        sequencer.integrate(flow.gw, 0)
    monkeypatch.setattr(merkle.Frontier, "append", appended)
    with flow.gw.db.connect() as conn:
        assert conn.execute(select(audit_entries.c.leaf_index)).scalars().all() == [None] * 3
    assert sequencer.integrate(flow.gw, 0) == 3 and sequencer.integrate(flow.gw, 0) == 0
    assert verify(flow.gw).entries == 3


def test_two_sequencers_on_one_shard_never_both_write(tmp_path, request, clock, monkeypatch):
    app = build_app(make_config(tmp_path, "services", request), clock)
    gw = app.extensions["cdeg"]
    monkeypatch.setattr(sequencer, "after_commit", lambda gw: None)
    try:
        for _ in range(4):
            Flow(app).tokens()
        counts, errors = [], []
        start = threading.Barrier(3)

        def run():
            try:
                start.wait()
                counts.append(sequencer.integrate(gw, 0))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and sorted(counts) == [0, 0, 12]
        assert verify(gw).entries == 12
    finally:
        gw.close()


def test_a_citizens_entries_stay_in_one_shard_of_several(tmp_path, request, clock):
    app = build_app(make_config(tmp_path, "embedded", request, log_shards=4), clock)
    gw = app.extensions["cdeg"]
    try:
        flow = Flow(app)
        tokens = flow.tokens()
        flow.data(tokens["access_token"])
        with gw.db.connect() as conn:
            shards = {json.loads(e)["event"]: s for e, s in conn.execute(
                select(audit_entries.c.entry, audit_entries.c.shard))}
        # once the citizen is known, every entry goes to the citizen's shard
        assert len({shards["consent.approved"], shards["token.issued"],
                    shards["data.released"]}) == 1
        signed = flow.requester.get("/log/v1/checkpoint").get_data(as_text=True)
        assert [s["shard"] for s in checkpoints.verify(gw, signed)["shards"]] == [0, 1, 2, 3]
        result = verify(gw, signed)
        assert result.entries == 4 and len(result.shards) == 4
    finally:
        gw.close()


def test_one_statement_release_writes_nothing_for_a_revoked_consent(tmp_path, request, clock):
    """PostgreSQL's single-statement release: the consent check and the audit entry are one."""
    import jwt as pyjwt

    from gateway.audit.entries import release_sql
    from gateway.exchange.release import POLICY_DIGEST
    from gateway.store.db import requesters
    app = build_app(make_config(tmp_path, "services", request), clock)
    flow = Flow(app)
    try:
        tokens = flow.tokens()
        jti = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
        fields = dict(client_id=flow.client_id, subject="s", consent_id=tokens["consent_id"],
                      items=["identity.hkid"], route="api")
        with flow.gw.reads.connect() as conn:
            digest = conn.execute(select(POLICY_DIGEST).where(
                requesters.c.client_id == flow.client_id)).scalar()
            assert release_sql(conn, clock.now(), jti, digest, citizen="x", **fields) is not None
        flow.revoke_as_citizen(tokens["consent_id"])
        before = _events(flow.gw)
        with flow.gw.reads.connect() as conn:
            assert release_sql(conn, clock.now(), jti, digest, citizen="x", **fields) is None
        assert _events(flow.gw) == before
    finally:
        flow.gw.close()


def test_each_read_on_me_links_to_its_inclusion_proof_which_verifies(flow):
    tokens = flow.tokens()
    flow.data(tokens["access_token"])
    page = flow.browser.get("/me").get_data(as_text=True)
    import html
    import re
    links = [html.unescape(h) for h in re.findall(r'class="inclusion-proof" href="([^"]+)"', page)]
    assert len(links) == 1
    proof = flow.browser.get(links[0]).get_json()
    signed = flow.requester.get("/log/v1/checkpoint").get_data(as_text=True)
    tree = checkpoints.verify(flow.gw, signed)["shards"][proof["shard"]]
    assert tree["tree_size"] == proof["tree_size"]
    with flow.gw.db.connect() as conn:
        body = conn.execute(select(audit_entries.c.entry).where(
            audit_entries.c.event == "data.released")).scalar()
    assert json.loads(body)["consent_id"] == tokens["consent_id"]
    assert merkle.verify_inclusion(proof["leaf_index"], proof["tree_size"],
                                   merkle.leaf_hash(body.encode()),
                                   [_b64(h) for h in proof["audit_path"]],
                                   _b64(tree["root_hash"]))


def test_me_reads_a_fixed_number_of_queries_however_many_consents(flow, monkeypatch):
    for _ in range(3):
        flow.tokens()
    flow.browser.get("/me")   # warm: the session and its language
    with statements_sent(flow.gw, monkeypatch) as counted:
        few = flow.browser.get("/me")
        three = len(counted)
        for _ in range(4):
            flow.tokens()
        counted.clear()
        many = flow.browser.get("/me")
    assert few.status_code == many.status_code == 200
    assert len(counted) == three


def test_an_outside_implementation_agrees_with_the_served_roots_and_inclusion_proofs(logged):
    """pymerkle (a second RFC 9162 implementation) rebuilds the trees from the entries' bytes:
    the same roots as the signed checkpoints, and the same inclusion paths as /log/v1 serves;
    its verifier accepts them. (Its consistency proofs are laid out otherwise — see
    tests/test_merkle.py — so the served consistency path is checked with RFC 9162 2.1.4.2 and
    both roots come from pymerkle.)"""
    import pymerkle
    first = _checkpoint(logged)["shards"][0]
    for _ in range(2):
        logged.tokens()
    second = _checkpoint(logged)["shards"][0]
    with logged.gw.db.connect() as conn:
        bodies = conn.execute(select(audit_entries.c.entry).where(audit_entries.c.shard == 0)
                              .order_by(audit_entries.c.leaf_index)).scalars().all()
    outside = pymerkle.InmemoryTree(algorithm="sha256")
    for body in bodies:
        outside.append_entry(body.encode())
    assert outside.get_root(first["tree_size"]) == _b64(first["root_hash"])
    assert outside.get_root(second["tree_size"]) == _b64(second["root_hash"])
    n = second["tree_size"]
    for index in range(n):
        served = logged.requester.get(f"/log/v1/proof/inclusion?shard=0&leaf_index={index}"
                                      f"&tree_size={n}").get_json()
        theirs = outside.prove_inclusion(index + 1, n)          # pymerkle counts from one
        assert theirs.path == [_b64(served["leaf_hash"])] + [_b64(h) for h in served["audit_path"]]
        pymerkle.verify_inclusion(_b64(served["leaf_hash"]), _b64(second["root_hash"]), theirs,
                                  index=index + 1, size=n)
    served = logged.requester.get(f"/log/v1/proof/consistency?shard=0&first={first['tree_size']}"
                                  f"&second={n}").get_json()
    assert merkle.verify_consistency(first["tree_size"], n, outside.get_root(first["tree_size"]),
                                     outside.get_root(n),
                                     [_b64(h) for h in served["consistency_path"]])


def test_verifying_from_a_kept_checkpoint_recomputes_only_what_was_added(logged):
    kept = logged.requester.get("/log/v1/checkpoint").get_data(as_text=True)
    size = checkpoints.verify(logged.gw, kept)["shards"][0]["tree_size"]
    logged.tokens()
    sequencer.integrate_all(logged.gw)
    result = verify(logged.gw, kept, since_kept=True)
    assert result.rechecked_from == {0: size} and result.entries == size + 3
    # an edit after the kept checkpoint is found
    _tamper(logged.gw, update(audit_entries).where(audit_entries.c.leaf_index == size + 1)
            .values(entry=func.replace(audit_entries.c.entry, '"ok"', '"no"')))
    with pytest.raises(LogBroken, match=f"leaf {size + 1}"):
        verify(logged.gw, kept, since_kept=True)


def test_a_rewritten_tree_before_the_kept_checkpoint_fails_the_incremental_check_too(logged):
    kept = logged.requester.get("/log/v1/checkpoint").get_data(as_text=True)
    _tamper(logged.gw, update(log_nodes).where(log_nodes.c.level == 2).values(hash="1" * 64))
    with pytest.raises(LogBroken, match="the kept checkpoint"):
        verify(logged.gw, kept, since_kept=True)
