"""The Consented Data Exchange Gateway.

``create_app(config)`` is the only place that wires things together: configuration, the
runtime (database, Redis, keys, connectors), the edges (OAuth, data API, citizen pages) and
the one error mapping.
"""
from __future__ import annotations

import re
import time

from flask import Flask, g, request

from gateway import runtime
from gateway.config import Config
from gateway.instance import Gateway

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; form-action 'self'{form_targets}; "
                                "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# A form-action source the consent page may add: a bare origin, nothing that could end the
# directive (';'), start another policy (',') or carry a keyword or quoted source.
_CLEAN_ORIGIN = re.compile(r"https?://(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)"
                           r"(?::[0-9]{1,5})?\Z")


class GatewayFlask(Flask):
    """Flask, asking once per view or hook whether it is a coroutine function (Flask's own
    ``ensure_sync`` asks ``inspect`` for each of them on every request). Bounded: the first
    ``SYNC_KEPT`` functions asked about are kept for the life of the process — the app's views
    and hooks, a few dozen; functions made per request (``after_this_request``, which nothing
    here uses) would fill it and then be asked about as Flask does."""

    SYNC_KEPT = 512

    def ensure_sync(self, func):
        kept = self.__dict__.setdefault("_sync", {})
        try:
            return kept[func]
        except KeyError:
            found = super().ensure_sync(func)
            if len(kept) < self.SYNC_KEPT:
                kept[func] = found
            return found
        except TypeError:          # not hashable
            return super().ensure_sync(func)


def create_app(config: Config | None = None, *, clock=None, departments=None) -> Flask:
    config = config or Config.from_env()
    from schemas.forms import forms
    forms()   # every form file valid before anything serves (FormError names file and key)
    app = GatewayFlask(__name__, static_folder="web/static", template_folder="web/templates")
    gw = Gateway(config, clock=clock, departments=departments)
    from gateway.requester_registry import check_stored_policies
    try:
        with gw.db.connect() as conn:
            check_stored_policies(conn)   # PolicyError names the requester and the key
    except Exception:
        gw.close()
        raise
    runtime.attach(app, gw)
    app.config.update(
        CDEG_ISSUER=config.issuer,
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=config.max_body_bytes,
        SECRET_KEY=gw.session_secret,
        JSON_SORT_KEYS=False,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.json.ensure_ascii = False
    app.jinja_env.autoescape = True

    from gateway.web.session import RedisSessionInterface
    app.session_interface = RedisSessionInterface(gw)

    from gateway import api_docs, http_errors, wellknown
    from gateway.api import consents as _consents, data, forms, log  # noqa: F401 - routes
    from gateway.cdi import views as cdi_views
    from gateway.oauth import views
    from gateway.web import auth, consent, demo_console, me, pages, profile  # noqa: F401 - they register their routes
    for blueprint in (wellknown.bp, api_docs.bp, views.bp, data.bp, forms.bp, log.bp,
                      cdi_views.bp, pages.bp):  # each renders its errors
        app.register_blueprint(blueprint)
    http_errors.init_app(app)
    from gateway import logs, metrics
    from gateway.logs import new_request_id
    metrics.init_app(app)
    logs.configure()

    @app.before_request
    def _begin():
        g.request_id, g.started = new_request_id(), time.perf_counter()

    plain = [(name, name.lower(), value.replace("{form_targets}", ""))
             for name, value in SECURITY_HEADERS.items()]

    @app.after_request
    def _headers(resp):
        extra = _form_targets()
        headers = resp.headers
        present = {name.lower() for name, _ in headers.items()}   # a view may set its own
        for name, lower, value in plain:
            if lower not in present:
                headers.add(name, value if not extra else
                            SECURITY_HEADERS[name].replace("{form_targets}", extra))
        if request.path.startswith(("/me", "/login", "/oauth/", "/api/", "/log/")):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    def _form_targets() -> str:
        # Approve/Decline redirect (303) to the requester's registered URI; browsers apply
        # form-action to redirects after a form post, so the page names the requester's origin
        # (set by the view from the parsed redirect URI); anything else keeps 'self' alone.
        origin = g.get("form_action_extra")
        return " " + origin if isinstance(origin, str) and _CLEAN_ORIGIN.match(origin) else ""

    return app
