"""CDI callbacks: a query that names a registered callback URL has its outcome POSTed there,
signed by the gateway, retried with exponential back-off until the receiver takes it, and ended
``failed`` after the last try, which the FI reads on its query; a receiver that is down, slow or
answers 500 never holds up another query's callback."""
from __future__ import annotations

import json
import threading
import time

import pytest
from jwcrypto import jwk, jws
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from gateway import requester_registry
from gateway.demo.seed import public_jwks
from gateway.jobs import callbacks
from policies.engine import POLICY_DIR, load_file
from tests.cdi_fi import FIClient
from tests.test_cdi import ITEMS


class Receiver:
    """An FI's callback endpoint on loopback: per path, answer ``status`` after ``delay``."""

    def __init__(self):
        self.posts: list[tuple[str, str, str, float]] = []   # path, content type, body, when
        self.behaviour: dict[str, tuple[int, float]] = {}

        @Request.application
        def app(request):
            status, delay = self.behaviour.get(request.path, (200, 0.0))
            time.sleep(delay)
            self.posts.append((request.path, request.mimetype, request.get_data(as_text=True),
                               time.monotonic()))
            return Response("", status=status)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def bank(flow, receiver):
    """The demo bank, its callback URLs pointing at the receiver (demo mode: http loopback)."""
    gw = flow.gw
    with gw.transaction() as conn:
        requester_registry.register(
            conn, gw.clock.now(), client_id="bank-of-example", name="Bank of Example", kind="fi",
            jwks=public_jwks("bank-of-example"), redirect_uris=[flow.redirect_uri],
            policy=load_file(POLICY_DIR / "bank-of-example.yaml"), demo=True,
            callback_urls=[receiver.url(p) for p in ("/ok", "/fails", "/slow", "/other")]
            + ["http://127.0.0.1:9/closed"])
    return FIClient(flow)


def _submit(flow, bank, query_id, callback_url, tokens=None):
    tokens = tokens or flow.tokens()
    resp = bank.submit(bank.message(tokens["access_token"], ITEMS, query_id=query_id,
                                    callback_url=callback_url))
    assert resp.status_code == 202, resp.get_json()
    return tokens


def test_the_outcome_is_posted_signed_to_the_callback_url_once(flow, bank, receiver):
    _submit(flow, bank, "q-cb", receiver.url("/ok"))
    assert callbacks.pump(flow.gw) == 1
    assert callbacks.pump(flow.gw) == 0            # delivered: nothing more to send
    [(path, mimetype, body, _)] = receiver.posts
    assert mimetype == "application/jose"
    signed = jws.JWS()
    signed.deserialize(body)
    keys = jwk.JWKSet.from_json(bank.http.get("/jwks.json").get_data(as_text=True))
    signed.verify(keys.get_key(signed.jose_header["kid"]), alg="ES256")
    claims = json.loads(signed.payload)
    assert signed.jose_header["typ"] == "cdeg-cdi-callback+jwt"
    assert claims["iss"] == flow.issuer and claims["aud"] == "bank-of-example"
    assert claims["query_id"] == "q-cb" and claims["status"] == "done" and claims["jti"]
    polled = bank.poll("q-cb").get_json()
    assert claims["result"] == polled["result"]
    assert bank.open(claims["result"])[1]["items"]["identity.hkid"]["value"] == "A123456(3)"
    assert polled["callback"] == {"url": receiver.url("/ok"), "delivery": "delivered",
                                  "attempts": 1}


def test_a_receiver_answering_500_is_tried_again_with_back_off_then_failed(flow, bank, receiver):
    receiver.behaviour["/fails"] = (500, 0.0)
    gw = flow.gw
    _submit(flow, bank, "q-500", receiver.url("/fails"))
    waits = []
    for attempt in range(1, gw.config.callback_attempts + 1):
        assert callbacks.pump(gw) == 1, attempt
        assert callbacks.pump(gw) == 0             # not due again yet
        state = bank.poll("q-500").get_json()["callback"]
        assert state["attempts"] == attempt and state["last_error"] == "answered 500"
        if state["delivery"] == "failed":
            break
        from sqlalchemy import select
        from gateway.store.db import cdi_queries
        with gw.db.connect() as conn:
            due = conn.execute(select(cdi_queries.c.next_delivery_at)).scalar()
        waits.append(due - gw.clock.now())
        gw.clock.advance(due - gw.clock.now())
    assert state["delivery"] == "failed" and attempt == gw.config.callback_attempts
    assert waits == [2, 4, 8, 16, 32]              # exponential back-off
    assert len(receiver.posts) == gw.config.callback_attempts
    assert bank.poll("q-500").get_json()["status"] == "done"   # the result is still there


def test_a_receiver_that_is_down_is_tried_again(flow, bank):
    _submit(flow, bank, "q-down", "http://127.0.0.1:9/closed")
    assert callbacks.pump(flow.gw) == 1
    state = bank.poll("q-down").get_json()["callback"]
    assert state["delivery"] == "pending" and "could not connect" in state["last_error"]


def test_slow_receivers_never_hold_up_another_hosts_callbacks_nor_get_one_twice(
        flow, bank, receiver):
    from gateway.jobs.push import Pusher
    receiver.behaviour["/slow"] = (200, 0.5)
    slow = receiver.url("/slow")                                  # host 127.0.0.1
    fast = receiver.url("/other").replace("127.0.0.1", "localhost")   # another host
    with flow.gw.transaction() as conn:
        requester_registry.register(
            conn, flow.gw.clock.now(), client_id="bank-of-example", name="Bank of Example",
            kind="fi", jwks=public_jwks("bank-of-example"), redirect_uris=[flow.redirect_uri],
            policy=load_file(POLICY_DIR / "bank-of-example.yaml"), demo=True,
            callback_urls=[slow, fast])
    tokens = flow.tokens()
    for i in range(8):
        _submit(flow, bank, f"q-slow-{i}", slow, tokens)
    _submit(flow, bank, "q-fast", fast, tokens)
    pusher = Pusher("test-callback", threads=4, per_host=2)
    try:
        started = time.monotonic()
        assert callbacks.pump(flow.gw, pusher) == 3              # 2 for the slow host, the fast
        assert callbacks.pump(flow.gw, pusher) == 0              # the slow host has its share
        deadline = started + 0.45
        while time.monotonic() < deadline and not any(p[0] == "/other" for p in receiver.posts):
            time.sleep(0.01)
        assert [p[0] for p in receiver.posts] == ["/other"]      # before any slow one answered
        while bank.poll("q-slow-7").get_json()["callback"]["delivery"] != "delivered":
            assert time.monotonic() < started + 10
            callbacks.pump(flow.gw, pusher)
            time.sleep(0.05)
    finally:
        pusher.pool.shutdown(wait=True)
    slow_posts = [json.loads(jws.JWS().from_jose_token(p[2]).objects["payload"])["query_id"]
                  for p in receiver.posts if p[0] == "/slow"]
    assert sorted(slow_posts) == [f"q-slow-{i}" for i in range(8)]   # each exactly once


def test_a_failed_query_is_called_back_with_its_error(flow, bank, receiver, monkeypatch):
    tokens = flow.tokens()
    departments = flow.gw.departments.in_process
    real = departments.answer
    monkeypatch.setattr(departments, "answer", lambda path, payload: (
        (503, {}) if path.startswith("/immd/") else real(path, payload)))
    _submit(flow, bank, "q-err", receiver.url("/ok"), tokens)
    callbacks.pump(flow.gw)
    claims = json.loads(jws.JWS().from_jose_token(receiver.posts[0][2]).objects["payload"])
    assert claims["status"] == "failed" and claims["error"]["code"] == "source-failed"
    assert "result" not in claims


def test_a_callback_still_being_tried_here_is_not_claimed_again_past_its_lease(flow, bank,
                                                                              receiver):
    from gateway.jobs import push
    from gateway.jobs.push import Pusher
    receiver.behaviour["/slow"] = (200, 1.5)
    _submit(flow, bank, "q-drip", receiver.url("/slow"))
    pusher = Pusher("test-callback", threads=2, per_host=2)
    try:
        assert callbacks.pump(flow.gw, pusher) == 1
        flow.gw.clock.advance(push.lease(flow.gw) + 1)      # its lease has ended
        assert callbacks.pump(flow.gw, pusher) == 0         # but a thread here still tries it
    finally:
        pusher.pool.shutdown(wait=True)
    assert len(receiver.posts) == 1
