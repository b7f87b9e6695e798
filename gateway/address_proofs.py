"""A citizen's address proof: a utility bill they name on /me/profile (issuer, account number,
bill date). The gateway asks that utility for the bill; it proves the e-ME residential address
when the bill is the citizen's, dated as they said, at most three months old, and addressed to
exactly that address. The outcome — verified or not, and why not — is kept by e-ME (a failed
try is kept only while no verified proof backs the address): a verified proof makes
``address.residential`` verified, and ``address.proof`` answers issuer, masked account
reference, bill date and verified."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from schemas.departments import ISSUERS

MAX_AGE_DAYS = 92                       # three months
HONG_KONG = timezone(timedelta(hours=8))    # bills are dated in Hong Kong time (no DST)


def hong_kong_date(ts: int) -> date:
    return datetime.fromtimestamp(ts, HONG_KONG).date()
ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{3,29}\Z")
ADDRESS_KEYS = ("flat", "floor", "block", "building", "street", "district", "region")


class ProofInputError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__(", ".join(errors))
        self.errors = errors            # field → i18n key


@dataclass(frozen=True)
class Outcome:
    verified: bool
    reason: str | None                  # i18n key of why not
    proof: dict | None                  # as kept (None: the issuer has no such bill)


def parse(form: dict, today: date) -> tuple[str, str, date]:
    """The proof form's issuer, account reference and bill date, or ProofInputError."""
    errors = {}
    issuer = form.get("issuer", "")
    if issuer not in ISSUERS:
        errors["issuer"] = "proof.error.issuer"
    account = (form.get("account_reference") or "").strip()
    if not ACCOUNT.match(account):
        errors["account_reference"] = "proof.error.account"
    bill_date = None
    raw = (form.get("bill_date") or "").strip()
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw, re.ASCII):
        try:
            bill_date = date.fromisoformat(raw)
        except ValueError:
            bill_date = None
    if bill_date is None:
        errors["bill_date"] = "proof.error.date"
    elif bill_date > today:
        errors["bill_date"] = "proof.error.future"
    if errors:
        raise ProofInputError(errors)
    return issuer, account, bill_date


def _same_address(a: dict | None, b: dict | None) -> bool:
    def folded(address):
        return tuple(" ".join(str(address.get(k) or "").split()).casefold() for k in ADDRESS_KEYS)
    return bool(a) and bool(b) and folded(a) == folded(b)


def check(gw, hkid: str, issuer: str, account: str, bill_date: date) -> Outcome:
    ask = gw.router.ask
    bill = ask("utilities", "bill", hkid, issuer, account)
    if bill is None:
        return Outcome(False, "proof.reason.not_found", None)
    today = hong_kong_date(gw.clock.now())
    profile = ask("eme", "profile", hkid) or {}
    if bill["bill_date"] != bill_date.isoformat():
        reason = "proof.reason.date_mismatch"
    elif (today - date.fromisoformat(bill["bill_date"])).days > MAX_AGE_DAYS:
        reason = "proof.reason.too_old"
    elif not _same_address(bill["address"], profile.get("address")):
        reason = "proof.reason.address_mismatch"
    else:
        reason = None
    proof = {"issuer": bill["issuer"], "account_reference": bill["account_reference"],
             "bill_date": bill["bill_date"], "verified": reason is None}
    if reason is None or not profile.get("address_verified_by"):
        ask("eme", "record_proof", hkid, proof)   # a failed try never undoes a good proof
    return Outcome(reason is None, reason, proof)
