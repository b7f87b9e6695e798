"""/me/profile: the citizen's own e-ME items (mobile, email, residential address), shown and
edited; reached through the e-ME connector, in-process or over HTTP, like every source."""
from __future__ import annotations

from flask import redirect, request, session, url_for
from marshmallow import ValidationError

from gateway import citizens, runtime
from schemas.catalogue import label
from schemas.departments import DISTRICTS, REGIONS
from schemas.profile import ADDRESS_TEXT, ProfileEdit

from .i18n import translator
from .pages import bp, check_csrf, lang, render, signed_in

EDIT = ProfileEdit()
FIELDS = ("mobile", "email", *ADDRESS_TEXT, "district", "region")
MAX_FIELD = 1000     # characters: longer is refused before validation


def _hkid(gw, subject_id: str) -> str:
    with gw.reads.connect() as conn:
        return citizens.by_subject(conn, subject_id)["hkid"]


def _shown(profile: dict | None) -> dict:
    """The form's values from an e-ME profile."""
    profile = profile or {}
    address = profile.get("address") or {}
    return {"mobile": profile.get("mobile") or "", "email": profile.get("email") or "",
            **{k: address.get(k) or "" for k in (*ADDRESS_TEXT, "district", "region")}}


def _page(profile: dict | None, values: dict, errors: dict, status: int = 200, notice=None):
    current = lang()
    return render("profile.html", status, values=values, errors=errors, notice=notice,
                  districts=DISTRICTS, regions=REGIONS,
                  verified_by=(profile or {}).get("address_verified_by"),
                  labels={item: label(item, current) for item in
                          ("contact.mobile", "contact.email", "address.residential")})


def _messages(errors: dict) -> dict:
    """Field → the translated reason the citizen reads."""
    t = translator(lang())[0]
    shown = {}
    for name, reasons in errors.items():
        text = " ".join(reasons) if isinstance(reasons, list) else str(reasons)
        if "markup" in text:
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
    subject_id = signed_in()
    if not subject_id:
        return redirect(url_for("web.login_page", next="/me/profile"), code=303)
    gw = runtime.current()
    profile = gw.router.connectors["eme"].profile(_hkid(gw, subject_id))
    notice = translator(lang())[0]("profile.saved") if session.pop("profile_saved", None) \
        else None
    return _page(profile, _shown(profile), {}, notice=notice)


@bp.post("/me/profile")
def profile_save():
    check_csrf()
    subject_id = signed_in()
    if not subject_id:
        return redirect(url_for("web.login_page", next="/me/profile"), code=303)
    gw = runtime.current()
    sent = {name: request.form.get(name, "") for name in FIELDS}
    too_long = {name: ["too long"] for name, value in sent.items() if len(value) > MAX_FIELD}
    try:
        if too_long:
            raise ValidationError(too_long)
        edited = EDIT.load(sent)
    except ValidationError as exc:   # nothing saved; the form comes back with what was sent
        hkid = _hkid(gw, subject_id)
        return _page(gw.router.connectors["eme"].profile(hkid), sent, _messages(exc.messages),
                     status=400)
    gw.router.connectors["eme"].update(_hkid(gw, subject_id), edited)
    session["profile_saved"] = True
    return redirect(url_for("web.profile_page"), code=303)
