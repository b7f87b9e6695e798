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


def by_hkid(conn: Connection, hkid: str) -> dict | None:
    row = conn.execute(select(citizens).where(citizens.c.hkid == hkid)).mappings().first()
    return dict(row) if row else None


def by_subject(conn: Connection, subject_id: str) -> dict | None:
    row = conn.execute(select(citizens).where(citizens.c.subject_id == subject_id)).mappings().first()
    return dict(row) if row else None


def enrol(conn: Connection, now: int, hkid: str) -> dict:
    existing = by_hkid(conn, hkid)
    if existing:
        return existing
    row = {"subject_id": secrets.token_hex(16), "hkid": hkid, "created_at": now}
    conn.execute(citizens.insert().values(**row))
    return row
