"""Consent receipts: a record in the shape of ISO/IEC TS 27560 (consent record information
structure) — controller, purpose, items, legal basis, retention, dates, jurisdiction, the
consent's id and state, the notice the citizen saw — signed by the gateway as a compact JWS
(``typ: cdeg-consent-receipt+jwt``, a ``kid`` of ``/jwks.json``). The citizen downloads it from
``/me``; the requester gets it from ``GET /api/v1/consents/<id>``: the same record, so both
hold the same evidence. It names the citizen only by the pairwise subject the requester knows.

Each receipt is signed when it is asked for, so it states the consent as it stands then
(``iat``); a retired signing key stays published while receipts it signed must verify (the
longest retention of any policy, README "Keys").
"""
from __future__ import annotations

from gateway.clock import rfc3339
from gateway.tokens import jose
from gateway.tokens.access import new_jti

from . import liveness
from .ledger import subject_of

RECEIPT_TYP = "cdeg-consent-receipt+jwt"
SCHEMA = "ISO/IEC TS 27560:2023"
JURISDICTION = "HK"
LEGISLATION = "Personal Data (Privacy) Ordinance (Cap. 486)"
# the gateway's statuses in the words of ISO/IEC TS 27560's consent states
STATES = {"approved": "active", "revoked": "withdrawn", "expired": "expired",
          "declined": "refused", "requested": "pending"}


def _when(at: int | None) -> str | None:
    return rfc3339(at) if at else None


def record(gw, consent: dict, requester: dict) -> dict:
    status = liveness.status_now(consent, gw.clock.now())
    purpose = (requester.get("policy") or {}).get("purposes", {}).get(consent["purpose"], {})
    notice = consent.get("notice") or {}
    return {
        "schema": SCHEMA,
        "record_id": consent["consent_id"],
        "consent_id": consent["consent_id"],
        "status": status,
        "state": STATES.get(status, status),
        "jurisdiction": JURISDICTION,
        "legislation": LEGISLATION,
        "controller": {"id": requester["client_id"], "name": requester["name"],
                       "name_zh": requester.get("name_zh")},
        "data_subject": subject_of(gw, consent),
        "processing": {
            "purpose": {"id": consent["purpose"], "description": purpose.get("description")},
            "legal_basis": purpose.get("legal_basis", "consent"),
            "data_items": list(consent["data_items"]),
            "retention": purpose.get("retention"),
            "access": consent["access"],
            "duration": consent.get("duration"),
        },
        "requested_at": _when(consent["created_at"]),
        "decided_at": _when(consent.get("decided_at")),
        "expires_at": _when(consent.get("expires_at")),
        "ended_at": _when(consent.get("ended_at")),
        "notice": {"digest": consent.get("notice_digest"), "template": notice.get("template"),
                   "lang": notice.get("lang")},
        "collection": "CDEG consent screen after an iAM Smart login",
        "gateway": gw.config.issuer,
    }


def signed(gw, consent: dict, requester: dict) -> str:
    claims = {"iss": gw.config.issuer, "aud": requester["client_id"], "iat": gw.clock.now(),
              "jti": new_jti(), **record(gw, consent, requester)}
    return jose.sign(claims, gw.keyring.signing_key, typ=RECEIPT_TYP)
