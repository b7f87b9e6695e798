"""``GatewayFlask.ensure_sync`` answers what Flask's does, asking once per function, and never
keeps more than ``SYNC_KEPT`` of them (a function made per request is not hoarded)."""
from __future__ import annotations

import pytest
from flask import Flask

from gateway import GatewayFlask


def test_a_view_or_hook_is_asked_about_once(monkeypatch):
    app = GatewayFlask(__name__)
    asked = []
    original = Flask.ensure_sync
    monkeypatch.setattr(Flask, "ensure_sync", lambda self, f: asked.append(f) or original(self, f))

    def view():
        return "ok"
    assert [app.ensure_sync(view) for _ in range(3)] == [view] * 3
    assert asked == [view]


def test_a_coroutine_function_is_refused_or_wrapped_exactly_as_flask_does():
    async def view():
        return "ok"
    try:
        expected = Flask(__name__).ensure_sync(view)
    except RuntimeError as exc:                 # Flask without its async extra (asgiref)
        with pytest.raises(RuntimeError, match=str(exc)[:30]):
            GatewayFlask(__name__).ensure_sync(view)
    else:
        assert GatewayFlask(__name__).ensure_sync(view) is not view and expected is not view


def test_functions_made_per_request_are_not_hoarded():
    app = GatewayFlask(__name__)
    for _ in range(app.SYNC_KEPT * 3):
        app.ensure_sync(lambda response: response)
    assert len(app._sync) == app.SYNC_KEPT
