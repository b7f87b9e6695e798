"""The citizen's side of consents: what a request would share, their list, and revoking."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from sqlalchemy import and_, case, select

from gateway.audit import entries
from gateway.citizens import by_subject
from gateway.clock import rfc3339
from gateway.errors import SourceUnavailable
from gateway.store.db import consents, log_heads, requesters
from schemas.catalogue import label
from schemas.duration import seconds

from . import ledger, liveness
from .lifecycle import ConsentNotFound


def purpose_text(policy: dict | None, purpose: str, lang: str) -> str:
    spec = (policy or {}).get("purposes", {}).get(purpose)
    return spec["description"].get(lang) or spec["description"]["en"] if spec else purpose


def requester_name(row: dict, lang: str) -> str:
    return (row.get("name_zh") if lang == "zh-HK" else None) or row["name"]


_TEMPLATE = Path(__file__).resolve().parent.parent / "web" / "templates" / "consent.html"


@functools.cache
def notice_version(lang: str) -> str:
    """The consent screen's wording as a version: its template and its strings in ``lang``."""
    from gateway.web.i18n import TEXT
    strings = {k: v for k, v in sorted(TEXT.get(lang, TEXT["en"]).items())
               if k.startswith(("consent.", "status."))}
    raw = _TEMPLATE.read_bytes() + json.dumps(strings, sort_keys=True, ensure_ascii=False).encode()
    return "consent-screen@" + hashlib.sha256(raw).hexdigest()[:16]


def notice(requester: dict, consent: dict, items: list[str], lang: str) -> dict:
    """What the consent screen presented, without the values: the record a dispute can be
    settled with (its digest is stored with the consent, carried in its tokens and receipt)."""
    return {"template": notice_version(lang), "lang": lang,
            "requester": {"client_id": requester["client_id"],
                          "name": requester_name(requester, lang)},
            "purpose": {"id": consent["purpose"],
                        "text": purpose_text(requester["policy"], consent["purpose"], lang)},
            "items": [{"id": i, "label": label(i, lang)} for i in items],
            "access": consent["access"], "duration": consent["duration"]}


def notice_digest(record: dict) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def preview(gw, pushed: dict, subject_id: str, lang: str) -> dict:
    """Everything the consent screen shows, with the values that would be shared."""
    consent = pushed["consent"]
    with gw.db.connect() as conn:
        requester = gw.requester(conn, consent["client_id"])
        citizen = by_subject(conn, subject_id, gw.sealer)
    try:
        values = gw.router.fetch(citizen["hkid"], consent["data_items"])
    except SourceUnavailable:
        values = {}
    purpose = (requester["policy"] or {}).get("purposes", {}).get(consent["purpose"], {})
    optional = set(purpose.get("items", {}).get("optional", []))
    rows = [{"item": i, "label": label(i, lang), "optional": i in optional,
             **values.get(i, {"value": None})} for i in consent["data_items"]]
    until = None
    if consent["duration"]:
        until = rfc3339(gw.clock.now() + seconds(consent["duration"]))[:10]
    return {"consent": consent, "items": rows, "until": until,
            "requester_name": requester_name(requester, lang),
            "purpose_text": purpose_text(requester["policy"], consent["purpose"], lang)}


PAGE_SIZE = 20
GROUPS = ("approved", "requested", "expired", "revoked", "declined")   # the order on /me


def _group(now: int):
    """The consent's place in GROUPS, in SQL (a lapsed approval counts as expired), so a page
    of /me is one ordered read however the consents fall."""
    return case((and_(liveness.live_clause(consents, now)), 0),
                (consents.c.status == "requested", 1),
                (consents.c.status.in_(("approved", "expired")), 2),
                (consents.c.status == "revoked", 3),
                (consents.c.status == "declined", 4), else_=5)


def overview(gw, subject_id: str, lang: str, page: int = 1) -> tuple[list[dict], bool]:
    """One page of the citizen's consents — grouped active, awaiting an answer, expired,
    revoked, declined; newest first in each — with their access logs, in three queries however
    many there are: the consents, their reads, the log's tree sizes (each read
    links to its inclusion proof in the tree as it stands). Answers the page and whether
    another follows."""
    now = gw.clock.now()
    out = []
    with gw.db.connect() as conn:
        rows = conn.execute(select(consents, requesters.c.name, requesters.c.name_zh,
                                   requesters.c.policy)
                            .join(requesters, requesters.c.client_id == consents.c.client_id)
                            .where(consents.c.subject_id == subject_id)
                            .order_by(_group(now), consents.c.created_at.desc(),
                                      consents.c.consent_id)
                            .limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)
                            ).mappings().all()
        more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
        released = entries.released_for(conn, [r["consent_id"] for r in rows])
        sizes = dict(conn.execute(select(log_heads.c.shard, log_heads.c.tree_size)).all())
        for row in rows:
            row = dict(row)
            reads = released[row["consent_id"]]
            status = liveness.status_now(row, now)
            out.append({
                "consent_id": row["consent_id"], "status": status,
                "group": status if status in GROUPS else "other",
                "requester_name": requester_name(row, lang),
                "purpose_text": purpose_text(row["policy"], row["purpose"], lang),
                "item_labels": [label(i, lang) for i in row["data_items"]],
                "expires": rfc3339(row["expires_at"]) if row["expires_at"] else None,
                "granted": rfc3339(row["decided_at"]) if row["decided_at"] and
                row["status"] != "declined" else None,
                "event": _event_state(row),
                "reads": [{"at": e["at"], "client_id": e["client_id"], "item_ids": e["items"],
                           "item_labels": [label(i, lang) for i in e["items"]],
                           "route": e["route"], "proof": _proof_link(e, sizes)}
                          for e in reads],
            })
    return out, more


def _event_state(row: dict) -> str | None:
    """How the requester was told of the revocation: notified, retrying, failed (or sending,
    before the first try); None when it has no event endpoint or nothing was revoked."""
    delivery = row.get("event_delivery")
    if delivery == "pending":
        return "retrying" if row.get("event_attempts") else "sending"
    return delivery


def _proof_link(entry: dict, sizes: dict) -> str | None:
    size = sizes.get(entry["shard"], 0)
    if entry["leaf_index"] is None or entry["leaf_index"] >= size:
        return None   # not yet in the log's tree
    return (f"/log/v1/proof/inclusion?shard={entry['shard']}&leaf_index={entry['leaf_index']}"
            f"&tree_size={size}")


def receipt_of(gw, subject_id: str, consent_id: str) -> str:
    """The signed receipt of one of the citizen's own consents (another's: not found)."""
    from . import receipt
    with gw.reads.connect() as conn:
        consent = ledger.get(conn, consent_id)
        if consent["subject_id"] != subject_id:
            raise ConsentNotFound(consent_id)
        requester = gw.requester(conn, consent["client_id"])
    return receipt.signed(gw, consent, requester)


def revoke(gw, subject_id: str, consent_id: str) -> None:
    """The citizen revokes one of their own consents; another's is as if it did not exist."""
    def work(conn):
        consent = ledger.get(conn, consent_id)
        if consent["subject_id"] != subject_id:
            raise ConsentNotFound(consent_id)
        now = gw.clock.now()
        ending = "expired" if liveness.lapsed(consent, now) else "revoked"
        # the requester is told by a pushed event (gateway/jobs/events.py) when it registered
        # an endpoint: asked for here, in the revocation's own transaction
        told = ending == "revoked" and gw.requester(conn, consent["client_id"]).get("webhook_url")
        ledger.transition(conn, now, consent, ending, subject=ledger.subject_of(gw, consent),
                          values={"event_delivery": "pending", "next_event_at": now,
                                  "event_attempts": 0} if told else None)

    gw.in_transaction(work)  # a revocation that met a concurrent change is run again
