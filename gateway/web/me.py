"""/me: the citizen's consents, who read what, and Revoke."""
from __future__ import annotations

import re

from flask import redirect, request, session, url_for

from gateway import runtime
from gateway.consent import citizen_view
from gateway.errors import BadRequest

from .i18n import translator
from .pages import bp, check_csrf, lang, render, signed_in


@bp.get("/me")
def me():
    if not signed_in():
        return redirect(url_for("web.login_page", next="/me"), code=303)
    notice = None
    if session.pop("revoked", None):
        notice = translator(lang())[0]("me.revoked_notice")
    raw = request.args.get("page", "1")
    if not re.fullmatch(r"[1-9][0-9]{0,5}", raw, re.ASCII) or len(request.args.getlist("page")) > 1:
        raise BadRequest("page must be a whole number from 1 to 999999")
    page = int(raw)
    consents, more = citizen_view.overview(runtime.current(), signed_in(), lang(), page=page)
    return render("me.html", consents=consents, notice=notice, page=page, more=more)


@bp.post("/me/consents/<consent_id>/revoke")
def revoke(consent_id: str):
    check_csrf()
    if not signed_in():
        return redirect(url_for("web.login_page", next="/me"), code=303)
    citizen_view.revoke(runtime.current(), signed_in(), consent_id[:64])
    session["revoked"] = True
    return redirect(url_for("web.me"), code=303)


@bp.get("/me/consents/<consent_id>/receipt")
def receipt_download(consent_id: str):
    """The consent's signed receipt (a compact JWS), to keep; another's is not found."""
    if not signed_in():
        return redirect(url_for("web.login_page", next="/me"), code=303)
    signed = citizen_view.receipt_of(runtime.current(), signed_in(), consent_id[:64])
    return signed, 200, {"Content-Type": "application/jwt", "Cache-Control": "no-store",
                         "Content-Disposition":
                             f'attachment; filename="consent-{consent_id[:64]}.receipt.jwt"'}


@bp.get("/")
def home():
    return redirect(url_for("web.me"), code=303)
