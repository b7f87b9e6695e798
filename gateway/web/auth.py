"""The mock iAM Smart login pages."""
from __future__ import annotations

from flask import redirect, request, session, url_for

from gateway import login as mock_iam_smart
from gateway import throttle

from .pages import bp, check_csrf, gw, local_path, render


@bp.get("/login")
def login_page():
    return render("login.html", next_url=local_path(request.args.get("next", "/me")))


@bp.post("/login")
def login():
    check_csrf()
    throttle.check(gw(), "login", request.remote_addr or "-", gw().config.login_rate_per_minute)
    next_url = local_path(request.form.get("next", "/me"))
    try:
        pending, code = mock_iam_smart.start(gw(), request.form.get("hkid", ""))
    except mock_iam_smart.LoginError as exc:
        return render("login.html", status=400, error=str(exc), next_url=next_url)
    session["pending_login"] = pending
    session["next"] = next_url
    if gw().config.demo:
        session["demo_code"] = code
    return redirect(url_for("web.verify_code_page"), code=303)


@bp.get("/login/code")
def verify_code_page():
    if "pending_login" not in session:
        return redirect(url_for("web.login_page"), code=303)
    return render("code.html", demo_code=session.get("demo_code") if gw().config.demo else None)


@bp.post("/login/code")
def verify_code():
    check_csrf()
    throttle.check(gw(), "login", request.remote_addr or "-", gw().config.login_rate_per_minute)
    pending = session.get("pending_login")
    try:
        citizen = mock_iam_smart.verify(gw(), pending, request.form.get("code", "").strip())
    except mock_iam_smart.LoginError as exc:
        if pending:
            session["pending_login"] = pending  # the attempt counter went up
        return render("code.html", status=400, error=str(exc),
                      demo_code=session.get("demo_code") if gw().config.demo else None)
    next_url = session.get("next", "/me")
    lang = session.get("lang")
    session.clear()
    session.regenerate()
    session["subject_id"] = citizen["subject_id"]
    session["logged_in_at"] = gw().clock.now()
    if lang:
        session["lang"] = lang
    return redirect(local_path(next_url), code=303)


@bp.post("/logout")
def logout():
    check_csrf()
    session.end()
    return redirect(url_for("web.login_page"), code=303)
