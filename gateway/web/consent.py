"""The consent screen at /oauth/authorize: only for requests pushed to /oauth/par."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import g, redirect, request, session, url_for

from gateway import runtime

from gateway.consent import citizen_view
from gateway.citizens import by_subject
from gateway.oauth import grant
from gateway.requester_registry import csp_origin

from .pages import bp, check_csrf, lang, render, signed_in


def _login_redirect():
    here = request.path + "?" + urlencode({k: request.args[k] for k in ("client_id", "request_uri")
                                           if k in request.args})
    return redirect(url_for("web.login_page", next=here), code=303)


@bp.get("/oauth/authorize")
def authorize_page():
    if request.args.get("response_type", "code") != "code":
        return render("error.html", status=400, message="response_type must be code")
    client_id, request_uri = request.args.get("client_id"), request.args.get("request_uri")
    with runtime.current().db.connect() as conn:
        pushed = grant.load_pushed(runtime.current(), conn, client_id, request_uri)
    if not signed_in():
        return _login_redirect()
    view = citizen_view.preview(runtime.current(), pushed, signed_in(), lang())
    g.form_action_extra = csp_origin(pushed["redirect_uri"])   # None: not a clean origin
    return render("consent.html", request_uri=request_uri, **view)


@bp.post("/oauth/authorize")
def authorize():
    check_csrf()
    if not signed_in():
        return _login_redirect()
    decision = request.form.get("decision")
    if decision not in ("approve", "decline"):
        return render("error.html", status=400, message="choose Approve or Decline")
    with runtime.current().transaction() as conn:
        pushed = grant.load_pushed(runtime.current(), conn, request.form.get("client_id"),
                                   request.form.get("request_uri"))
        citizen = by_subject(conn, signed_in(), runtime.current().sealer)
        offered = set(request.form.getlist("offered"))      # the optional items shown ticked
        dropped = offered - set(request.form.getlist("items"))
        target = grant.decide(runtime.current(), conn, pushed, citizen,
                              approve=decision == "approve", dropped=dropped, lang=lang())
    session.pop("demo_code", None)
    return redirect(target, code=303)
