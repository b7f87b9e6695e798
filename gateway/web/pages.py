"""What every citizen page shares: the blueprint, language, CSRF and rendering."""
from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from flask import Blueprint, render_template, request, session

from gateway import http_errors
from gateway.errors import FormExpired, StoreUnavailable

from .i18n import LANGS, pick, translator
from .session import SESSIONLESS_PATHS

bp = Blueprint("web", __name__, template_folder="templates")
http_errors.use(bp, http_errors.as_page)



@bp.before_app_request
def _session_store_answers_and_language_is_remembered():
    if request.path.startswith(SESSIONLESS_PATHS):
        return                  # no session there (web/session.py), and no language to keep
    if getattr(session, "unavailable", False):
        raise StoreUnavailable("session store did not answer")
    if request.args.get("lang") in LANGS:
        lang()  # remember ?lang= even on a page that only redirects (to the login)


def lang() -> str:
    chosen = pick(request.args.get("lang"), session.get("lang"))
    if request.args.get("lang") in ("en", "zh-HK") and session.get("lang") != chosen:
        session["lang"] = chosen
    return chosen


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    token = session.get("csrf")
    if not token or not isinstance(sent, str) or not hmac.compare_digest(sent, token):
        raise FormExpired()


@bp.app_context_processor
def page_context() -> dict:
    """Language, translations and the CSRF token for every template (error pages too)."""
    current = lang()
    other = "zh-HK" if current == "en" else "en"
    args = {k: v for k, v in request.args.items() if k != "lang"}
    args["lang"] = other
    t, zh = translator(current)
    from gateway import runtime
    return {"lang": current, "other_lang": other, "t": t, "zh": zh,
            "lang_query": urlencode(args), "csrf_token": csrf_token(),
            "demo_mode": runtime.current().config.demo}


def render(template: str, status: int = 200, **context):
    return render_template(template, **context), status, {"Cache-Control": "no-store"}


def local_path(target) -> str:
    """Only paths on this site (no scheme, no host, no backslashes) may be redirected to."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//") \
            or "\\" in target or len(target) > 2000 or any(ord(c) < 32 for c in target):
        return "/me"
    return target


HONG_KONG = timezone(timedelta(hours=8), "HKT")   # no summer time since 1979
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@bp.app_template_filter("hk_time")
def hk_time(rfc3339_utc: str | None) -> str:
    """A UTC time as Hong Kong reads it, in the page's language: ``6 Dec 2026, 13:09`` or
    ``2026年12月6日 13:09`` (Hong Kong time)."""
    if not rfc3339_utc:
        return "—"
    try:
        when = datetime.strptime(rfc3339_utc, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return rfc3339_utc
    local = when.astimezone(HONG_KONG)
    if lang() == "zh-HK":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
    return f"{local.day} {_MONTHS[local.month - 1]} {local.year}, {local:%H:%M}"


ADDRESS_PARTS = (("flat", "Flat "), ("floor", "Floor "), ("block", ""), ("building", ""),
                 ("street", ""), ("district", ""), ("region", ""))


@bp.app_template_filter("format_value")
def format_value(value: dict) -> str:
    """A structured value on one line: an address as it is written, anything else key: value."""
    if "district" in value:
        return ", ".join(f"{prefix}{value[key]}" for key, prefix in ADDRESS_PARTS
                         if value.get(key))
    if {"issuer", "account_reference", "bill_date"} <= set(value):   # an address proof
        return f"{value['issuer']} {value['account_reference']}, {value['bill_date']}"
    return ", ".join(f"{key}: {item}" for key, item in value.items())


def signed_in() -> str | None:
    return session.get("subject_id")
