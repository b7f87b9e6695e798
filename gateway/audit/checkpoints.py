"""Signed checkpoints of the transparency log (SPEC section 9): a compact JWS, ``typ:
cdeg-checkpoint+jwt``, signed by the gateway's signing key — a key kept in the instance folder,
not in the database, so whoever can write the database cannot make one — over every shard's
tree size and root hash at one moment. Whoever keeps a checkpoint can later prove that the log
still extends it (``cdeg audit verify --against``).
"""
from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

from jwcrypto.common import JWException
from jwcrypto.jws import JWS
from sqlalchemy import select

from gateway.errors import BadRequest
from gateway.store.db import log_checkpoints, log_heads
from gateway.tokens import jose
from gateway.tokens.errors import TokenError

from . import merkle

if TYPE_CHECKING:
    from gateway.instance import Gateway

TYP = "cdeg-checkpoint+jwt"


class CheckpointRefused(BadRequest):
    """A checkpoint that is not one of this gateway's: bad signature, unknown key, bad shape."""
    problem = "bad-checkpoint"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def heads(gw: Gateway, conn) -> list[dict]:
    stored = {r.shard: r for r in conn.execute(select(log_heads))}
    out = []
    for shard in range(max([gw.config.log_shards, *[s + 1 for s in stored]])):
        row = stored.get(shard)
        out.append({"shard": shard, "tree_size": row.tree_size if row else 0,
                    "root_hash": b64(bytes.fromhex(row.root_hash) if row else merkle.EMPTY_ROOT)})
    return out


def publish(gw: Gateway) -> str:
    """Sign the trees as they stand now and keep the checkpoint; answer it."""
    now = gw.clock.now()
    with gw.transaction() as conn:
        payload = {"iss": gw.config.issuer, "iat": now, "shards": heads(gw, conn)}
        signed = jose.sign(payload, gw.keyring.signing_key, typ=TYP)
        conn.execute(log_checkpoints.insert().values(iat=now, jws=signed))
    return signed


def latest(gw: Gateway) -> str | None:
    with gw.reads.connect() as conn:
        return conn.execute(select(log_checkpoints.c.jws)
                            .order_by(log_checkpoints.c.id.desc()).limit(1)).scalar()


def current(gw: Gateway) -> str:
    """A checkpoint of the trees as they stand: the latest if they have not moved since."""
    last = latest(gw)
    if last is not None:
        with gw.reads.connect() as conn:
            if jose.b64url_json(last.split(".")[1])["shards"] == heads(gw, conn):
                return last
    return publish(gw)


def publish_if_due(gw: Gateway) -> str | None:
    """A new checkpoint when the trees moved since the last one and it is ``checkpoint_every``
    seconds old (or there is none)."""
    last = latest(gw)
    if last is not None:
        payload = jose.b64url_json(last.split(".")[1])
        with gw.reads.connect() as conn:
            if payload["shards"] == heads(gw, conn) or \
                    gw.clock.now() - payload["iat"] < gw.config.checkpoint_every:
                return None
    return publish(gw)


def verify(gw: Gateway, signed: str) -> dict:
    """The payload of a checkpoint this gateway signed (with any key it still holds on disk,
    retired ones included); CheckpointRefused otherwise."""
    try:
        if not isinstance(signed, str) or len(signed) > 64 * 1024:
            raise TokenError("not a compact JWS")
        signed = signed.strip()
        header = jose.unverified_header(signed)
        jose.check_header(header, ["ES256"], TYP)
        key = gw.keyring.any_key(header.get("kid"))
        if key is None:
            raise TokenError("signed by a key this gateway does not hold")
        checked = JWS()
        checked.deserialize(signed)
        checked.verify(key, alg="ES256")
        payload = json.loads(checked.payload)
    except (TokenError, JWException, ValueError, TypeError) as exc:
        raise CheckpointRefused(f"not a checkpoint of this gateway: {exc}") from exc
    # The signature by a key of this gateway's, with this typ, is what makes it one of ours;
    # ``iss`` names the issuer it was served under (``cdeg serve --port`` sets it per port,
    # while the CLI verifying later may run with the default), so it is not compared.
    if not isinstance(payload, dict) or not isinstance(payload.get("iss"), str) \
            or not isinstance(payload.get("iat"), int):
        raise CheckpointRefused("not a checkpoint of this gateway: iss or iat missing")
    shards = payload.get("shards")
    if not isinstance(shards, list) or not all(
            isinstance(s, dict) and isinstance(s.get("shard"), int)
            and isinstance(s.get("tree_size"), int) and s["tree_size"] >= 0
            and isinstance(s.get("root_hash"), str) for s in shards):
        raise CheckpointRefused("a checkpoint names each shard's tree_size and root_hash")
    return payload
