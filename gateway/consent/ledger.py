"""The consent ledger: every change is a lifecycle transition written with its audit entry in
one transaction, guarded by the status it expects (``UPDATE ... WHERE status = :from``), so two
racing changes cannot both win.

Lock order. Every transaction that touches a consent takes its row locks in one order, so two
of them can wait for each other but never deadlock:

    authorization code / pushed request  →  token rows (by token_id)  →  consent row  →  audit head

A release locks its token row and then the consent; a revocation locks all the consent's token
rows and then the consent; a code exchange or a refresh locks its code or refresh token and then
the consent. On PostgreSQL a row lock waited for is re-read once it is free (READ COMMITTED), so
whichever commits second sees the first: a release that waited for a revocation finds the token
revoked and releases nothing. The one step taken against this order — a revocation's second pass
over the consent's tokens, made while it holds the consent row, to catch tokens a code exchange
or a refresh committed meanwhile — skips rows another transaction holds (``SKIP LOCKED``): such
a row belongs to a release waiting for this consent row, which will find the consent ended.
A race lost anyway (a deadlock or serialization failure) is run again by
``Gateway.in_transaction``.
"""
from __future__ import annotations

import re
import secrets

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from gateway.audit import entries
from gateway.store.db import consents
from gateway.tokens import token_rows

from .lifecycle import ConsentNotFound, Status, TransitionRefused, next_status


def new_consent_id() -> str:
    return "cns_" + secrets.token_urlsafe(18)


def create_requested(conn: Connection, now: int, *, client_id: str, detail: dict) -> str:
    consent_id = new_consent_id()
    conn.execute(consents.insert().values(
        consent_id=consent_id, client_id=client_id, subject_id=None,
        status=Status.REQUESTED.value, purpose=detail["purpose"],
        data_items=list(detail["data_items"]), access=detail["access"],
        duration=detail.get("duration"), authorization_details=[detail], created_at=now))
    entries.append(conn, now, "consent.requested", client_id=client_id, consent_id=consent_id,
                   items=detail["data_items"])
    return consent_id


CONSENT_ID = re.compile(r"cns_[A-Za-z0-9_-]{24}")


def get(conn: Connection, consent_id: str, *, share_lock: bool = False) -> dict:
    """The consent row; with ``share_lock`` it is read as committed now and held against a
    concurrent transition until this transaction ends (PostgreSQL ``FOR SHARE``)."""
    if not isinstance(consent_id, str) or not CONSENT_ID.fullmatch(consent_id):
        raise ConsentNotFound("no such consent")
    query = select(consents).where(consents.c.consent_id == consent_id)
    if share_lock:
        query = query.with_for_update(read=True)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise ConsentNotFound(consent_id)
    return dict(row)


def transition(conn: Connection, now: int, consent: dict, event: str, *, subject: str | None,
               route: str = "web", values: dict | None = None) -> dict:
    """Move ``consent`` through ``event``; audit it; end its tokens when it stops."""
    target = next_status(consent["status"], event)
    changes = dict(values or {}, status=target.value)
    if target in (Status.APPROVED, Status.DECLINED):
        changes.setdefault("decided_at", now)
    ending = target in (Status.REVOKED, Status.EXPIRED)
    if ending:
        changes["ended_at"] = now
        token_rows.revoke_for_consent(conn, consent["consent_id"], now)  # before the consent
    done = conn.execute(update(consents)
                        .where(consents.c.consent_id == consent["consent_id"],
                               consents.c.status == consent["status"])
                        .values(**changes)).rowcount
    if done != 1:
        raise TransitionRefused(f"consent changed meanwhile; it is no longer {consent['status']}")
    if ending:  # and any token a code exchange or a refresh committed while we waited
        token_rows.revoke_for_consent(conn, consent["consent_id"], now, skip_locked=True)
    entries.append(conn, now, f"consent.{target.value}",
                   citizen=changes.get("subject_id") or consent.get("subject_id"),
                   client_id=consent["client_id"],
                   subject=subject, consent_id=consent["consent_id"],
                   items=changes.get("data_items", consent["data_items"]), route=route)
    return {**consent, **changes}


def subject_of(gw, consent: dict) -> str | None:
    """The pairwise pseudonym the consent's requester knows the citizen by (None before login)."""
    from gateway.citizens import pairwise_subject
    if not consent.get("subject_id"):
        return None
    return pairwise_subject(gw.pairwise_secret, consent["subject_id"], consent["client_id"])
