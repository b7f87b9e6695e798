"""The transparency log's edge (SPEC section 9): the latest signed checkpoint and RFC 9162
proofs (public: hashes only), and a consent's entries for the requester holding it or the
citizen it is about (anyone else: 404)."""
from __future__ import annotations

import base64
import re

from flask import Blueprint, jsonify, request, session

from gateway import http_errors, runtime
from gateway.audit import checkpoints, entries, merkle, sequencer
from gateway.consent import ledger
from gateway.errors import BadRequest, ConsentNotFound
from gateway.tokens.errors import TokenError

from .bearer import current_claims

bp = Blueprint("log", __name__, url_prefix="/log/v1")
http_errors.use(bp, http_errors.as_problem)

_NUMBER = re.compile(r"[0-9]{1,19}", re.ASCII)
MAX_INDEX = 2 ** 63 - 1


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _number(name: str, *, least: int = 0) -> int:
    raw = request.args.get(name)
    if raw is None or len(request.args.getlist(name)) != 1 or not _NUMBER.fullmatch(raw) \
            or int(raw) > MAX_INDEX or int(raw) < least:
        raise BadRequest(f"{name} must be a whole number of at least {least}",
                         errors={name: ["missing, repeated or not a whole number in range"]})
    return int(raw)


def _shard(gw) -> int:
    shard = _number("shard")
    if shard >= gw.config.log_shards:
        raise BadRequest(f"this log has {gw.config.log_shards} shard(s), numbered from 0",
                         errors={"shard": ["no such shard"]})
    return shard


def _up_to_date(gw) -> None:
    if gw.config.inline_jobs:   # embedded: no worker, so sequence what has committed
        sequencer.integrate_all(gw)


@bp.get("/checkpoint")
def checkpoint():
    gw = runtime.current()
    _up_to_date(gw)
    signed = checkpoints.current(gw) if gw.config.inline_jobs else \
        (checkpoints.latest(gw) or checkpoints.publish(gw))
    return signed, 200, {"Content-Type": "application/jwt", "Cache-Control": "no-store"}


def _within(size: int, conn, gw, shard: int, name: str) -> None:
    have, _root = sequencer.head(conn, shard)
    if size > have:
        raise BadRequest(f"{name} {size} is beyond shard {shard}'s tree of {have} entries",
                         errors={name: ["beyond the tree"]})


@bp.get("/proof/inclusion")
def inclusion():
    gw = runtime.current()
    shard, index, size = _shard(gw), _number("leaf_index"), _number("tree_size", least=1)
    if index >= size:
        raise BadRequest("leaf_index must be below tree_size", errors={"leaf_index": ["too big"]})
    _up_to_date(gw)
    with gw.reads.connect() as conn:
        _within(size, conn, gw, shard, "tree_size")
        nodes = sequencer.TreeReader(conn, shard)
        path = merkle.inclusion_path(index, size, nodes)
        leaf = nodes(0, index)
    return jsonify(shard=shard, leaf_index=index, tree_size=size, leaf_hash=b64(leaf),
                   audit_path=[b64(h) for h in path])


@bp.get("/proof/consistency")
def consistency():
    gw = runtime.current()
    shard, first, second = _shard(gw), _number("first", least=1), _number("second", least=1)
    if first > second:
        raise BadRequest("first must not exceed second", errors={"first": ["after second"]})
    _up_to_date(gw)
    with gw.reads.connect() as conn:
        _within(second, conn, gw, shard, "second")
        path = merkle.consistency_path(first, second, sequencer.TreeReader(conn, shard))
    return jsonify(shard=shard, first=first, second=second,
                   consistency_path=[b64(h) for h in path])


def _may_read(gw, consent: dict) -> bool:
    """The requester holding the consent (a verified access token of it), or the citizen it is
    about (their session)."""
    if request.headers.get("Authorization"):
        try:
            claims = current_claims()
        except TokenError:
            return False
        return claims["consent_id"] == consent["consent_id"] \
            and claims["client_id"] == consent["client_id"]
    subject_id = session.get("subject_id")
    return bool(subject_id) and subject_id == consent.get("subject_id")


@bp.get("/consents/<consent_id>/entries")
def consent_entries(consent_id: str):
    gw = runtime.current()
    try:
        with gw.reads.connect() as conn:
            consent = ledger.get(conn, consent_id[:64])
    except ConsentNotFound:
        consent = None
    if consent is None or not _may_read(gw, consent):
        raise ConsentNotFound("no such consent")   # another's looks the same as none
    _up_to_date(gw)
    with gw.reads.connect() as conn:
        rows = entries.for_consent(conn, consent["consent_id"])
    resp = jsonify(entries=[{"shard": r["shard"], "leaf_index": r["leaf_index"],
                             "entry": r["entry"]} for r in rows])
    resp.headers["Cache-Control"] = "no-store"
    return resp



