"""Citizens known to the gateway, and the pairwise subjects requesters see.

The internal ``subject_id`` never leaves the gateway; each requester sees
``HMAC(secret, subject_id | client_id)``, so two requesters cannot link a citizen by it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.engine import Connection

from gateway.store.db import citizens


def pairwise_subject(secret: bytes, subject_id: str, client_id: str) -> str:
    mac = hmac.new(secret, f"{subject_id}|{client_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def _opened(sealer, row) -> dict | None:
    if row is None:
        return None
    citizen = dict(row)
    citizen["hkid"] = sealer.open(citizen.pop("hkid_sealed"), citizen["subject_id"])
    citizen.pop("hkid_index", None)
    return citizen


def by_hkid(conn: Connection, sealer, hkid: str) -> dict | None:
    """The citizen with this HKID: one indexed read of its keyed hash (never the HKID)."""
    row = conn.execute(select(citizens).where(citizens.c.hkid_index == sealer.index(hkid))
                       ).mappings().first()
    return _opened(sealer, row)


def by_subject(conn: Connection, subject_id: str, sealer) -> dict | None:
    row = conn.execute(select(citizens).where(citizens.c.subject_id == subject_id)).mappings().first()
    return _opened(sealer, row)


def enrol(conn: Connection, now: int, hkid: str, sealer) -> dict:
    existing = by_hkid(conn, sealer, hkid)
    if existing:
        return existing
    subject_id = secrets.token_hex(16)
    conn.execute(citizens.insert().values(subject_id=subject_id, created_at=now,
                                          hkid_index=sealer.index(hkid),
                                          hkid_sealed=sealer.seal(hkid, subject_id)))
    return {"subject_id": subject_id, "hkid": hkid, "created_at": now}
