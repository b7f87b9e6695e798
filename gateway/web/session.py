"""Server-side citizen sessions in Redis.

The cookie holds only a random id; the data lives under ``session:<id>`` with an idle timeout.
Logging in issues a new id (no fixation); logging out deletes the data server-side.
"""
from __future__ import annotations

import json
import secrets

from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from gateway.errors import StoreUnavailable

COOKIE = "cdeg_session"
# The bearer-token edges (the data API, forms, CDI): a machine calls them, never a citizen's
# browser, so no session is read or written for them (Flask's null session: none to save).
SESSIONLESS_PATHS = ("/api/", "/cdi/")


class CitizenSession(CallbackDict, SessionMixin):
    def __init__(self, initial=None, sid=None, new=False):
        def on_update(_self):
            _self.modified = True
        super().__init__(initial, on_update)
        self.sid = sid or secrets.token_urlsafe(32)
        self.new = new
        self.modified = False
        self.old_sids: list[str] = []
        self.unavailable = False       # Redis did not answer: pages answer 503

    def regenerate(self) -> None:
        """A new id for the same data (called at login)."""
        self.old_sids.append(self.sid)
        self.sid = secrets.token_urlsafe(32)
        self.modified = True

    def end(self) -> None:
        self.old_sids.append(self.sid)
        self.clear()
        self.sid = secrets.token_urlsafe(32)
        self.modified = True


class RedisSessionInterface(SessionInterface):
    def __init__(self, gw):
        self.gw = gw

    def open_session(self, app, request):
        if request.path.startswith(SESSIONLESS_PATHS):
            return self.make_null_session(app)
        sid = request.cookies.get(COOKIE)
        if sid and 20 <= len(sid) <= 64:
            try:
                raw = self.gw.redis.session_get(sid)
            except StoreUnavailable:
                broken = CitizenSession(new=True)
                broken.unavailable = True
                return broken
            if raw is not None:
                try:
                    return CitizenSession(json.loads(raw), sid=sid)
                except ValueError:
                    pass
        return CitizenSession(new=True)

    def save_session(self, app, session, response):
        if getattr(session, "unavailable", False):
            return
        try:
            self._save(session, response)
        except StoreUnavailable:
            pass  # the page already answered; the next request will find Redis down and say so

    def _save(self, session, response):
        secure = self.gw.config.production or self.gw.config.issuer.startswith("https://")
        if not session:
            if session.old_sids:
                self.gw.redis.session_save(session.sid, None, 0, session.old_sids)
            if not session.new or session.old_sids:
                response.delete_cookie(COOKIE, path="/")
            return
        ttl = self.gw.config.session_idle_seconds
        data = json.dumps(dict(session)) if session.modified or session.new else None
        self.gw.redis.session_save(session.sid, data, ttl, session.old_sids)
        response.set_cookie(COOKIE, session.sid, httponly=True, secure=secure, samesite="Lax",
                            path="/", max_age=ttl)
        response.vary.add("Cookie")
