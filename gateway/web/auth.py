"""The mock iAM Smart login pages."""
from __future__ import annotations

from flask import make_response, redirect, request, session, url_for

from gateway import mock_iam_smart, runtime
from gateway import rate_limits
from gateway.errors import Throttled

from .i18n import translator
from .pages import bp, check_csrf, lang, local_path, render


def _message(key: str, **values) -> str:
    return translator(lang())[0](key).format(**values)


@bp.get("/login")
def login_page():
    return render("login.html", next_url=local_path(request.args.get("next", "/me")))


@bp.post("/login")
def login():
    check_csrf()
    rate_limits.charge(runtime.current(), "login", request.remote_addr or "-")
    next_url = local_path(request.form.get("next", "/me"))
    try:
        pending, code = mock_iam_smart.start(runtime.current(), request.form.get("hkid", ""))
    except mock_iam_smart.LoginError as exc:
        return render("login.html", status=400, error=_message(str(exc)), next_url=next_url)
    session["pending_login"] = pending
    session["next"] = next_url
    if runtime.current().config.demo:
        session["demo_code"] = code
    return redirect(url_for("web.verify_code_page"), code=303)


@bp.get("/login/code")
def verify_code_page():
    if "pending_login" not in session:
        return redirect(url_for("web.login_page"), code=303)
    return render("code.html", demo_code=session.get("demo_code") if runtime.current().config.demo else None)


@bp.post("/login/code")
def verify_code():
    check_csrf()
    rate_limits.charge(runtime.current(), "login", request.remote_addr or "-")
    pending = session.get("pending_login")
    demo_code = session.get("demo_code") if runtime.current().config.demo else None
    try:
        citizen = mock_iam_smart.verify(runtime.current(), pending, request.form.get("code", "").strip(),
                                        request.cookies.get(mock_iam_smart.DEVICE_COOKIE))
    except Throttled as exc:
        minutes = -(-exc.retry_after // 60)
        resp = make_response(render("code.html", status=429, demo_code=demo_code,
                                    error=_message("code.error.too_many", minutes=minutes)))
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    except mock_iam_smart.LoginError as exc:
        if pending:
            session["pending_login"] = pending  # the attempt counter went up
        return render("code.html", status=400, error=_message(str(exc)), demo_code=demo_code)
    mark = mock_iam_smart.new_device_mark(runtime.current(), pending["hkid"])
    next_url = session.get("next", "/me")
    chosen = session.get("lang")
    console = session.get("demo_grant")   # a /demo request waiting for this login's answer
    session.clear()
    session.regenerate()
    session["subject_id"] = citizen["subject_id"]
    session["logged_in_at"] = runtime.current().clock.now()
    if chosen:
        session["lang"] = chosen
    if console and runtime.current().config.demo:
        session["demo_grant"] = console
    resp = redirect(local_path(next_url), code=303)
    # this browser now has a wrong-code budget of its own for this citizen (see gateway/login.py)
    resp.set_cookie(mock_iam_smart.DEVICE_COOKIE, mark, max_age=runtime.current().config.device_mark_ttl,
                    path="/login", httponly=True, samesite="Strict",
                    secure=runtime.current().config.production or runtime.current().config.issuer.startswith("https://"))
    return resp


@bp.post("/logout")
def logout():
    check_csrf()
    session.end()
    return redirect(url_for("web.login_page"), code=303)
