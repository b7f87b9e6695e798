"""/me/profile: the citizen's own e-ME items (mobile, email, residential address), shown and
edited; reached through the e-ME connector, in-process or over HTTP, like every source."""
from __future__ import annotations

import re

from flask import redirect, request, session, url_for
from marshmallow import ValidationError

from gateway import address_proofs, citizens, runtime
from gateway.errors import BadRequest
from schemas.catalogue import label
from schemas.departments import DISTRICTS, ISSUERS, REGIONS
from schemas.profile import ADDRESS_TEXT, ProfileEdit

from .i18n import translator
from .pages import bp, check_csrf, lang, render, signed_in

EDIT = ProfileEdit()
FIELDS = ("mobile", "email", *ADDRESS_TEXT, "district", "region")
MAX_FIELD = 1000     # characters: longer is refused before validation


def _hkid(gw, subject_id: str) -> str:
    with gw.reads.connect() as conn:
        return citizens.by_subject(conn, subject_id, runtime.current().sealer)["hkid"]


# Bytes that were not UTF-8: werkzeug leaves such an escape as it came ("%FF") in a urlencoded
# form and turns it into U+FFFD in a multipart one. Either is refused, never saved.
_UNDECODED = re.compile(r"%[89A-Fa-f][0-9A-Fa-f]|\ufffd")


def _not_utf8(value: str) -> bool:
    return bool(_UNDECODED.search(value))


def _citizen():
    """(the gateway, the signed-in citizen's HKID), or None when nobody is signed in."""
    subject_id = signed_in()
    if not subject_id:
        return None
    gw = runtime.current()
    return gw, _hkid(gw, subject_id)


def _to_login():
    return redirect(url_for("web.login_page", next="/me/profile"), code=303)


def _shown(profile: dict | None) -> dict:
    """The form's values from an e-ME profile."""
    profile = profile or {}
    address = profile.get("address") or {}
    return {"mobile": profile.get("mobile") or "", "email": profile.get("email") or "",
            **{k: address.get(k) or "" for k in (*ADDRESS_TEXT, "district", "region")}}


def _page(gw, hkid: str, values: dict, errors: dict, status: int = 200, notice=None,
          proof_values=None, proof_errors=None):
    current = lang()
    profile = gw.router.ask("eme", "profile", hkid)
    if values is None:
        values = _shown(profile)
    t = translator(current)[0]
    return render("profile.html", status, values=values, errors=errors, notice=notice,
                  districts=DISTRICTS, regions=REGIONS, issuers=ISSUERS,
                  verified_by=(profile or {}).get("address_verified_by"),
                  proof=gw.router.ask("utilities", "proof", hkid),
                  proof_values=proof_values or {},
                  proof_errors={k: t(v) for k, v in (proof_errors or {}).items()},
                  labels={item: label(item, current) for item in
                          ("contact.mobile", "contact.email", "address.residential")})


def _messages(errors: dict) -> dict:
    """Field → the translated reason the citizen reads."""
    t = translator(lang())[0]
    shown = {}
    for name, reasons in errors.items():
        text = " ".join(reasons) if isinstance(reasons, list) else str(reasons)
        if "UTF-8" in text:
            shown[name] = t("profile.error.encoding")
        elif "markup" in text:
            shown[name] = t("profile.error.markup")
        elif "Longer than" in text or "too long" in text:
            shown[name] = t("profile.error.too_long")
        elif "required" in text:
            shown[name] = t("profile.error.required")
        else:
            shown[name] = t(f"profile.error.{name}")
    return shown


@bp.get("/me/profile")
def profile_page():
    if (citizen := _citizen()) is None:
        return _to_login()
    told = session.pop("profile_notice", None)
    notice = translator(lang())[0](told) if isinstance(told, str) else None
    return _page(*citizen, None, {}, notice=notice)


@bp.post("/me/profile")
def profile_save():
    check_csrf()
    if (citizen := _citizen()) is None:
        return _to_login()
    gw, hkid = citizen
    absent = [name for name in FIELDS if name not in request.form]
    if absent:   # a form that is not this page's would blank what it leaves out
        raise BadRequest("the profile form is incomplete",
                         errors={name: ["missing"] for name in absent})
    sent = {name: request.form.get(name, "") for name in FIELDS}
    unreadable = {name: ["not UTF-8"] for name, value in sent.items() if _not_utf8(value)}
    too_long = {name: ["too long"] for name, value in sent.items() if len(value) > MAX_FIELD}
    try:
        if unreadable or too_long:
            raise ValidationError({**too_long, **unreadable})
        edited = EDIT.load(sent)
    except ValidationError as exc:   # nothing saved; the form comes back with what was sent
        return _page(gw, hkid, sent, _messages(exc.messages), status=400)
    gw.router.ask("eme", "update", hkid, edited)
    session["profile_notice"] = "profile.saved"
    return redirect(url_for("web.profile_page"), code=303)


@bp.post("/me/profile/proof")
def proof_add():
    check_csrf()
    if (citizen := _citizen()) is None:
        return _to_login()
    gw, hkid = citizen
    sent = {k: request.form.get(k, "")[:MAX_FIELD] for k in
            ("issuer", "account_reference", "bill_date")}
    try:
        issuer, account, bill_date = address_proofs.parse(
            sent, address_proofs.hong_kong_date(gw.clock.now()))
    except address_proofs.ProofInputError as exc:   # nothing asked, nothing kept
        return _page(gw, hkid, None, {}, status=400, proof_values=sent, proof_errors=exc.errors)
    outcome = address_proofs.check(gw, hkid, issuer, account, bill_date)
    session["profile_notice"] = "proof.verified" if outcome.verified else outcome.reason
    return redirect(url_for("web.profile_page"), code=303)
