"""Server-side citizen sessions in Redis.

The cookie holds only a random id; the data lives under ``session:<id>`` with an idle timeout.
Logging in issues a new id (no fixation); logging out deletes the data server-side.
"""
from __future__ import annotations

import json
import secrets

from flask.sessions import SessionInterface, SessionMixin
from redis.exceptions import RedisError
from werkzeug.datastructures import CallbackDict

COOKIE = "cdeg_session"


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

    def _key(self, sid: str) -> str:
        return self.gw.redis.key("session", sid)

    def open_session(self, app, request):
        sid = request.cookies.get(COOKIE)
        if sid and 20 <= len(sid) <= 64:
            try:
                raw = self.gw.redis.client.get(self._key(sid))
            except RedisError:
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
        except RedisError:
            pass  # the page already answered; the next request will find Redis down and say so

    def _save(self, session, response):
        secure = self.gw.config.production or self.gw.config.issuer.startswith("https://")
        for old in session.old_sids:
            self.gw.redis.client.delete(self._key(old))
        if not session:
            if not session.new or session.old_sids:
                response.delete_cookie(COOKIE, path="/")
            return
        ttl = self.gw.config.session_idle_seconds
        if session.modified or session.new:
            self.gw.redis.client.set(self._key(session.sid), json.dumps(dict(session)), ex=ttl)
        else:
            self.gw.redis.client.expire(self._key(session.sid), ttl)
        response.set_cookie(COOKIE, session.sid, httponly=True, secure=secure, samesite="Lax",
                            path="/", max_age=ttl)
        response.vary.add("Cookie")
