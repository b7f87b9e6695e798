"""``/demo``, in demo mode only: a requester console for people trying the gateway (SPEC 6).

Pick a demo requester, a purpose, its optional items and the kind of consent; the console then
acts as that requester *through the gateway's own HTTP endpoints* — PAR with ``private_key_jwt``
(the demo keys) and PKCE, exactly as an outside client (``gateway/demo/agent.py``), sent
through the app's WSGI stack in this process (so a single-worker server cannot wait on
itself) — and sends the browser to the consent screen. The citizen logs in and answers; the
gateway redirects back to ``/demo/callback`` (a redirect URI every demo requester has), where
the console exchanges the code, reads the data, pulls a pre-filled form (a department whose
policy names one) or queries through the CDI bridge (an FI), and shows each: the token's
claims, the data released, the form, the CDI result decrypted and verified. Under
``CDEG_ENV=production`` none of it exists (404).
"""
from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

from flask import abort, current_app, redirect, request, session, url_for

from gateway import runtime
from gateway.consent.citizen_view import purpose_text, requester_name
from gateway.demo.agent import FI, Requester
from gateway.demo.seed import DEMO_CALLBACK as CALLBACK, console_callback, demo_requesters, \
    private_jwks
from policies.engine import load_file, POLICY_DIR
from schemas.catalogue import label

from .pages import bp, check_csrf, lang, render


class InProcessHTTP:
    """What ``requests.Session`` offers the demo agents, answered by this app's own WSGI
    stack (its test client): every call goes through the same endpoints as a real one."""

    class Answer:
        def __init__(self, resp):
            self.status_code, self.headers = resp.status_code, resp.headers
            self.text = resp.get_data(as_text=True)

        def json(self):
            return json.loads(self.text)

    def __init__(self, app, base: str):
        self.client, self.base = app.test_client(), base

    def _path(self, url: str) -> str:
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def post(self, url, data=None, headers=None, timeout=None, **_):
        return self.Answer(self.client.post(self._path(url), data=data, headers=headers or {},
                                            base_url=self.base))

    def get(self, url, params=None, headers=None, timeout=None, **_):
        return self.Answer(self.client.get(self._path(url), query_string=params,
                                           headers=headers or {}, base_url=self.base))


def _demo_only():
    if runtime.current().config.production:
        abort(404)


def _choices(current: str) -> list[dict]:
    """Each demo requester's purposes, with their items and kinds, as the page offers them."""
    out = []
    for entry in demo_requesters():
        policy = load_file(POLICY_DIR / entry["policy"])
        row = {"client_id": entry["client_id"], "name": entry["name"],
               "name_zh": entry.get("name_zh")}
        for purpose_id, purpose in policy["purposes"].items():
            out.append({
                "client_id": entry["client_id"], "kind": entry["kind"],
                "requester_name": requester_name(row, current),
                "purpose": purpose_id, "purpose_text": purpose_text(policy, purpose_id, current),
                "required": [{"id": i, "label": label(i, current)}
                             for i in purpose["items"]["required"]],
                "optional": [{"id": i, "label": label(i, current)}
                             for i in purpose["items"].get("optional", [])],
                "access": purpose["access"], "forms": purpose.get("forms", []),
            })
    return out


def _agent(kind: str, client_id: str, http):
    cls = FI if kind == "fi" else Requester
    return cls(runtime.current().config.issuer, client_id, private_jwks(client_id),
               runtime.current().config.issuer + CALLBACK, http=http)


@bp.get("/demo")
def demo_page():
    _demo_only()
    return render("demo.html", choices=_choices(lang()),
                  usable=bool(console_callback(runtime.current())))


@bp.post("/demo/start")
def demo_start():
    _demo_only()
    check_csrf()
    choice = next((c for c in _choices(lang())
                   if c["client_id"] == request.form.get("client_id")
                   and c["purpose"] == request.form.get("purpose")), None)
    if choice is None:
        return render("error.html", status=400, message="choose one of the demo requests")
    wanted = set(request.form.getlist("items"))
    items = [i["id"] for i in choice["required"]] + \
        [i["id"] for i in choice["optional"] if i["id"] in wanted]
    access = request.form.get("access", choice["access"][0])
    if access not in choice["access"]:
        return render("error.html", status=400, message="choose once or ongoing")
    detail = {"type": "cdeg_data", "purpose": choice["purpose"], "access": access,
              "data_items": items}
    if access == "ongoing":
        detail["duration"] = "P30D"
    gw = runtime.current()
    agent = _agent(choice["kind"], choice["client_id"],
                   InProcessHTTP(current_app, gw.config.issuer))
    state = secrets.token_urlsafe(16)
    resp, verifier = agent.push(detail, state=state)
    if resp.status_code != 201:
        return render("error.html", status=502,
                      message=f"the gateway refused the request: {resp.text[:300]}")
    session["demo_grant"] = {"client_id": choice["client_id"], "kind": choice["kind"],
                             "verifier": verifier, "state": state, "items": items,
                             "forms": choice["forms"], "access": access}
    return redirect(agent.authorize_url(resp.json()["request_uri"]), code=303)


@bp.get(CALLBACK)
def demo_callback():
    _demo_only()
    grant = session.get("demo_grant")
    if not grant or request.args.get("state") != grant.get("state"):
        return render("error.html", status=400,
                      message="this answer belongs to no request started here; start again")
    session.pop("demo_grant", None)
    if "error" in request.args:
        return render("demo_result.html", declined=request.args.get("error"))
    gw = runtime.current()
    http = InProcessHTTP(current_app, gw.config.issuer)
    agent = _agent(grant["kind"], grant["client_id"], http)
    answer = agent.token(request.args.get("code", ""), grant["verifier"])
    if answer.status_code != 200:
        return render("error.html", status=502, message=f"token exchange: {answer.text[:300]}")
    tokens = answer.json()
    claims = gw.access_tokens.verify(tokens["access_token"])
    shown: dict = {"claims": json.dumps(claims, indent=2, ensure_ascii=False)}
    if grant["kind"] == "fi":       # the data API (an ongoing consent), then through CDI
        if grant.get("access") == "ongoing":   # a once consent ends at its one read: CDI's
            data = agent.data(tokens["access_token"])
            shown["data"] = data.json() if data.status_code == 200 else {"error": data.text}
        query_id = "demo-" + secrets.token_hex(6)
        submitted = agent.submit(agent.message(query_id, tokens["access_token"], grant["items"]))
        if submitted.status_code == 202:
            polled = agent.wait(query_id, timeout=10)
            shown["cdi"] = json.dumps(agent.open_result(polled["result"]) if polled.get("result")
                                      else polled, indent=2, ensure_ascii=False)
        else:
            shown["cdi"] = submitted.text
    elif grant["forms"]:            # a department: its form, pre-filled
        form = agent.prefill(tokens["access_token"], grant["forms"][0])
        shown["form"] = form.json() if form.status_code == 200 else {"error": form.text}
    else:
        data = agent.data(tokens["access_token"])
        shown["data"] = data.json() if data.status_code == 200 else {"error": data.text}
    if "data" in shown:
        shown["data"] = json.dumps(shown["data"], indent=2, ensure_ascii=False)
    return render("demo_result.html", consent_id=tokens["consent_id"], **shown)
