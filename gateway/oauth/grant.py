"""The authorization-code grant as domain calls: push a request, decide it, exchange the code,
refresh, revoke, introspect. No Flask here: views parse and render around these."""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from marshmallow import ValidationError
from sqlalchemy import bindparam, select, update

from gateway import citizens, requester_registry
from gateway.audit import entries, sequencer
from gateway.consent import citizen_view, ledger, liveness
from gateway.consent.lifecycle import ConsentError, Status
from gateway.exchange.release import POLICY_DIGEST
from gateway.store.db import authorization_codes, consents, pushed_requests, requesters
from gateway.store.prepared import compiled
from gateway.tokens import access
from gateway.tokens import token_rows
from policies.engine import PolicyError, check_consent, check_request, max_duration_seconds
from schemas.authorization import PushedRequestSchema, parse_authorization_details
from schemas.duration import seconds

from . import client_auth, pkce
from .errors import (InvalidAuthorizationDetails, InvalidGrant, InvalidRequest,
                     InvalidRequestURI, UnsupportedResponseType)

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
_REQUEST_URI = re.compile(re.escape(REQUEST_URI_PREFIX) + r"[A-Za-z0-9_-]{32}")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def _first_error(messages) -> str:
    if isinstance(messages, dict):
        key = sorted(messages)[0]
        inner = messages[key]
        return f"{key}: {_first_error(inner)}" if key != "_schema" else _first_error(inner)
    if isinstance(messages, list) and messages:
        return _first_error(messages[0])
    return str(messages)


# -- PAR ------------------------------------------------------------------------------------

def push(gw, conn, requester: dict, form: dict) -> dict:
    """RFC 9126: check and store a pushed authorization request; answer its request_uri."""
    if "request_uri" in form or "request" in form:
        raise InvalidRequest("request_uri and request objects are not accepted at the PAR endpoint")
    try:
        params = PushedRequestSchema().load(form)
    except ValidationError as exc:
        raise InvalidRequest(_first_error(exc.messages)) from exc
    if params["response_type"] != "code":
        raise UnsupportedResponseType("response_type must be code")
    if params["client_id"] != requester["client_id"]:
        raise InvalidRequest("client_id does not match the authenticated client")
    pkce.check_method(params["code_challenge_method"])
    if params["redirect_uri"] not in requester["redirect_uris"]:
        raise InvalidRequest("redirect_uri is not registered for this client")
    try:
        details = parse_authorization_details(params["authorization_details"])
    except ValidationError as exc:
        raise InvalidAuthorizationDetails(_first_error(exc.messages)) from exc
    try:
        check_request(requester["policy"], details[0])
    except PolicyError as exc:
        raise InvalidAuthorizationDetails(str(exc)) from exc
    now = gw.clock.now()
    consent_id = ledger.create_requested(conn, now, client_id=requester["client_id"],
                                         detail=details[0])
    request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(24)
    conn.execute(pushed_requests.insert().values(
        request_uri=request_uri, client_id=requester["client_id"], consent_id=consent_id,
        redirect_uri=params["redirect_uri"], state=params.get("state"),
        code_challenge=params["code_challenge"], expires_at=now + gw.config.pushed_request_ttl))
    return {"request_uri": request_uri, "expires_in": gw.config.pushed_request_ttl}


def load_pushed(gw, conn, client_id, request_uri) -> dict:
    """The pending request behind a request_uri, bound to its client, unexpired, unused."""
    if not isinstance(request_uri, str) or not _REQUEST_URI.fullmatch(request_uri):
        raise InvalidRequestURI("request_uri missing: push the request to /oauth/par first")
    row = conn.execute(select(pushed_requests)
                       .where(pushed_requests.c.request_uri == request_uri)).mappings().first()
    if row is None or row["client_id"] != client_id:
        raise InvalidRequestURI("request_uri unknown for this client")
    if row["used_at"] is not None:
        raise InvalidRequestURI("request_uri was already used")
    if row["expires_at"] <= gw.clock.now():
        raise InvalidRequestURI("request_uri expired; the requester must ask again")
    consent = ledger.get(conn, row["consent_id"])
    if consent["status"] != Status.REQUESTED.value:
        raise InvalidRequestURI("this request was already decided")
    return {**dict(row), "consent": consent}


def _redirect(uri: str, params: dict) -> str:
    sep = "&" if "?" in uri else "?"
    return uri + sep + urlencode({k: v for k, v in params.items() if v is not None})


def kept_items(consent: dict, policy: dict | None, dropped: set[str]) -> list[str]:
    """The items a consent keeps when the citizen unticked ``dropped`` on the consent screen:
    only items the policy marks optional for the purpose can go; required ones always stay."""
    purpose = (policy or {}).get("purposes", {}).get(consent["purpose"], {})
    optional = set(purpose.get("items", {}).get("optional", []))
    return [i for i in consent["data_items"] if i not in (dropped & optional)]


def decide(gw, conn, pushed: dict, citizen: dict, approve: bool,
           dropped: set[str] = frozenset(), lang: str = "en") -> str:
    """Record the citizen's answer and answer the URL to send the browser to (RFC 9207 iss).
    ``dropped``: optional items the citizen unticked; the consent, its tokens and every release
    then hold only the rest. The notice the screen showed (in ``lang``) is kept with the
    answer, and its digest (``citizen_view.notice``)."""
    now = gw.clock.now()
    taken = conn.execute(update(pushed_requests)
                         .where(pushed_requests.c.request_uri == pushed["request_uri"],
                                pushed_requests.c.used_at.is_(None))
                         .values(used_at=now)).rowcount
    if taken != 1:
        raise InvalidRequestURI("request_uri was already used")
    consent = pushed["consent"]
    subject = citizens.pairwise_subject(gw.pairwise_secret, citizen["subject_id"],
                                        consent["client_id"])
    base = {"state": pushed["state"], "iss": gw.config.issuer}
    requester = gw.requester(conn, consent["client_id"])
    if not approve:
        shown = citizen_view.notice(requester, consent, consent["data_items"], lang)
        ledger.transition(conn, now, consent, "declined", subject=subject,
                          values={"subject_id": citizen["subject_id"], "notice": shown,
                                  "notice_digest": citizen_view.notice_digest(shown)})
        return _redirect(pushed["redirect_uri"], {"error": "access_denied", **base})
    try:  # the policy may have narrowed since the request was pushed
        check_request(requester["policy"], consent["authorization_details"][0])
    except PolicyError:
        ledger.transition(conn, now, consent, "expired", subject=subject,
                          values={"subject_id": citizen["subject_id"]})
        return _redirect(pushed["redirect_uri"], {
            "error": "invalid_authorization_details",
            "error_description": "the requester's policy no longer allows this request", **base})
    lifetime = seconds(consent["duration"]) if consent["duration"] else \
        max_duration_seconds(requester["policy"], consent["purpose"])
    items = kept_items(consent, requester["policy"], dropped)
    narrowed = {} if items == consent["data_items"] else {
        "data_items": items,
        "authorization_details": [{**consent["authorization_details"][0], "data_items": items}]}
    shown = citizen_view.notice(requester, consent, items, lang)
    ledger.transition(conn, now, consent, "approved", subject=subject,
                      values={"subject_id": citizen["subject_id"], "expires_at": now + lifetime,
                              "notice": shown, "notice_digest": citizen_view.notice_digest(shown),
                              **narrowed})
    code = secrets.token_urlsafe(32)
    conn.execute(authorization_codes.insert().values(
        code_hash=_hash(code), consent_id=consent["consent_id"], client_id=consent["client_id"],
        redirect_uri=pushed["redirect_uri"], code_challenge=pushed["code_challenge"],
        expires_at=now + gw.config.authorization_code_ttl))
    return _redirect(pushed["redirect_uri"], {"code": code, **base})


# -- token endpoint -------------------------------------------------------------------------

@dataclass(frozen=True)
class Issue:
    """A token response decided and signed, not yet written: its body, its token rows, and the
    ``token.issued`` entry's fields."""
    body: dict
    rows: list[dict]
    audit: dict


def _tokens_for(gw, requester: dict, consent: dict, code_hash: str | None) -> Issue:
    now = gw.clock.now()
    subject = citizens.pairwise_subject(gw.pairwise_secret, consent["subject_id"],
                                        requester["client_id"])
    token, claims = access.mint(gw.keyring, issuer=gw.config.issuer,
                                audience=gw.config.api_audience, subject=subject,
                                client_id=requester["client_id"],
                                consent_id=consent["consent_id"],
                                authorization_details=consent["authorization_details"], now=now,
                                ttl=gw.config.access_token_ttl,
                                notice_digest=consent.get("notice_digest"))
    rows = [dict(token_id=claims["jti"], kind="access", consent_id=consent["consent_id"],
                 client_id=requester["client_id"], code_hash=code_hash, issued_at=now,
                 expires_at=claims["exp"])]
    body = {"access_token": token, "token_type": "Bearer", "expires_in": claims["exp"] - now,
            "consent_id": consent["consent_id"],
            "authorization_details": consent["authorization_details"]}
    if consent["access"] == "ongoing":
        refresh = "rt_" + secrets.token_urlsafe(32)
        rows.append(dict(rows[0], token_id=token_rows.refresh_id(refresh), kind=token_rows.REFRESH,
                         expires_at=consent["expires_at"]))
        body["refresh_token"] = refresh
    return Issue(body, rows, dict(citizen=consent["subject_id"], client_id=requester["client_id"],
                                  subject=subject, consent_id=consent["consent_id"],
                                  items=consent["data_items"], route="oauth"))


def _token_response(gw, conn, requester: dict, consent: dict, code_hash: str | None) -> dict:
    issue = _tokens_for(gw, requester, consent, code_hash)
    token_rows.issue(conn, issue.rows)
    entries.append(conn, gw.clock.now(), "token.issued", **issue.audit)
    return issue.body


def _usable_consent(gw, conn, consent_id: str, client_id: str, *, lock: bool = False,
                    policy=None) -> dict:
    """The live consent behind a grant; ``lock`` when tokens are about to be issued for it, so
    a concurrent revocation either waits for them (and revokes them) or is seen here. ``policy``:
    the requester's, when the caller has its row already."""
    consent = ledger.get(conn, consent_id, share_lock=lock)
    if policy is None:
        policy = gw.requester(conn, client_id)["policy"]
    _check_usable(consent, client_id, policy, gw.clock.now())
    return consent


def _check_usable(consent: dict, client_id: str, policy, now: int) -> None:
    if consent["client_id"] != client_id:
        raise InvalidGrant("grant was issued to another client")
    if not liveness.is_live(consent, now):
        raise InvalidGrant("the consent behind this grant is no longer active")
    try:  # the requester's policy may have narrowed the consent's kind or length since
        check_consent(policy, consent, now)
    except PolicyError as exc:
        raise InvalidGrant(str(exc)) from exc


@dataclass(frozen=True)
class Refused:
    """A refusal whose writes must be kept — a spent code, a revoked token family. It is
    returned, not raised: the caller commits the transaction, then raises ``error``."""
    error: InvalidGrant


def _code_and_redirect(form: dict) -> tuple[str, str]:
    code, redirect_uri = form.get("code"), form.get("redirect_uri")
    if not isinstance(code, str) or not code or len(code) > 100:
        raise InvalidRequest("code missing")
    if not isinstance(redirect_uri, str) or not redirect_uri:
        raise InvalidRequest("redirect_uri missing")
    return code, redirect_uri


def exchange_code(gw, conn, requester: dict, form: dict) -> dict | Refused:
    code, redirect_uri = _code_and_redirect(form)
    now = gw.clock.now()
    code_hash = _hash(code)
    # Take the code in one statement; only when that fails, look at why.
    row = conn.execute(update(authorization_codes)
                       .where(authorization_codes.c.code_hash == code_hash,
                              authorization_codes.c.client_id == requester["client_id"],
                              authorization_codes.c.used_at.is_(None))
                       .values(used_at=now)
                       .returning(*authorization_codes.columns)).mappings().first()
    if row is None:
        row = conn.execute(select(authorization_codes)
                           .where(authorization_codes.c.code_hash == code_hash)).mappings().first()
        if row is None or row["client_id"] != requester["client_id"]:
            raise InvalidGrant("code unknown")
        # RFC 6749 4.1.2: a reused code revokes what it issued; the consent itself stays
        _revoke_family(gw, conn, requester, row, now, outcome="code_reused")
        return Refused(InvalidGrant("code was already used; the tokens it issued are revoked"))
    try:  # from here on the code is spent whatever happens: one attempt per code
        _check_code(row, redirect_uri, form, now)
        # the policy read again here: ``requester`` may have been read before this transaction
        consent = _usable_consent(gw, conn, row["consent_id"], requester["client_id"], lock=True)
    except InvalidGrant as exc:
        return Refused(exc)
    return _token_response(gw, conn, requester, consent, code_hash)


def _check_code(row, redirect_uri: str, form: dict, now: int) -> None:
    if row["expires_at"] <= now:
        raise InvalidGrant("code expired")
    if redirect_uri != row["redirect_uri"]:
        raise InvalidGrant("redirect_uri does not match the authorization request")
    pkce.check_verifier(form.get("code_verifier"), row["code_challenge"])


# PostgreSQL's code exchange in two statements (``exchange_code_at_once``): the code, its
# consent and its client read together, then the one-statement write of token_rows.py.
_TOGETHER = (("code", authorization_codes), ("consent", consents), ("requester", requesters))
_CODE_READ = select(*[c.label(f"{name}__{c.name}") for name, table in _TOGETHER for c in table.c],
                    POLICY_DIGEST.label("policy_digest")) \
    .select_from(authorization_codes
                 .join(consents, consents.c.consent_id == authorization_codes.c.consent_id)
                 .join(requesters, requesters.c.client_id == authorization_codes.c.client_id)) \
    .where(authorization_codes.c.code_hash == bindparam("code_hash"))
_CODE_READ_PREPARED = compiled(_CODE_READ)
_CODE_READ_COLUMNS = tuple(_CODE_READ.selected_columns.keys())


@dataclass(frozen=True)
class AtOnce:
    """What ``exchange_code_at_once`` did: the token response (None: take the transactional
    path), and the requester it authenticated (that path must not authenticate it again: the
    assertion's jti is spent)."""
    body: dict | None
    requester: dict


def exchange_code_at_once(gw, form: dict, endpoint: str) -> AtOnce:
    """PostgreSQL, the usual exchange in two statements: read the code with its consent and
    client (one prepared SELECT), authenticate the client and check everything in Python, sign
    the tokens, then write it all in one statement (``token_rows.issue_for_code``). Anything
    unusual — an unknown, spent or expired code, a wrong verifier or redirect_uri, a consent no
    longer live, a policy changed meanwhile — writes nothing here and answers ``body=None``:
    ``exchange_code`` then decides it in a transaction, with the same answers as always."""
    code, redirect_uri = _code_and_redirect(form)
    code_hash = _hash(code)
    found = gw.prepared.one(_CODE_READ_PREPARED, {"code_hash": code_hash})
    parts: dict[str, dict] = {"code": {}, "consent": {}, "requester": {}}
    digest = None
    if found is not None:
        row = dict(zip(_CODE_READ_COLUMNS, found))
        digest = row.pop("policy_digest")
        for key, value in row.items():
            name, _, column = key.partition("__")
            parts[name][column] = value

    def find(client_id: str) -> dict:
        if parts["requester"].get("client_id") == client_id:
            return parts["requester"]
        with gw.reads.connect() as conn:
            return requester_registry.get(conn, client_id)

    requester = client_auth.authenticate_with(gw, form, endpoint, find)
    code_row, consent = parts["code"], parts["consent"]
    now = gw.clock.now()
    if found is None or code_row["client_id"] != requester["client_id"] \
            or code_row["used_at"] is not None:
        return AtOnce(None, requester)
    try:
        _check_code(code_row, redirect_uri, form, now)
        _check_usable(consent, requester["client_id"], requester["policy"], now)
    except InvalidGrant:
        return AtOnce(None, requester)
    issue = _tokens_for(gw, requester, consent, code_hash)
    written = gw.retried(lambda: token_rows.issue_for_code(
        gw.prepared, now=now, code_hash=code_hash, policy_digest=digest, rows=issue.rows,
        entry=entries.row_for(gw.config.log_shards, now, "token.issued", **issue.audit)))
    if not written:
        return AtOnce(None, requester)
    sequencer.after_commit(gw)
    return AtOnce(issue.body, requester)


def refresh(gw, conn, requester: dict, form: dict) -> dict | Refused:
    presented = form.get("refresh_token")
    if not isinstance(presented, str) or not presented or len(presented) > 200:
        raise InvalidRequest("refresh_token missing")
    now = gw.clock.now()
    token_id = token_rows.refresh_id(presented)
    row = token_rows.find(conn, token_id, token_rows.REFRESH)
    if row is None or row["client_id"] != requester["client_id"]:
        raise InvalidGrant("refresh_token unknown")
    if row["expires_at"] <= now:
        raise InvalidGrant("refresh_token expired")
    if not token_rows.spend(conn, token_id, now):
        return _refresh_replayed(gw, conn, requester, row, now)
    consent = _usable_consent(gw, conn, row["consent_id"], requester["client_id"], lock=True,
                              policy=requester["policy"])
    return _token_response(gw, conn, requester, consent, row["code_hash"])


def _refresh_replayed(gw, conn, requester: dict, row: dict, now: int) -> Refused:
    """A refresh token that was already rotated or revoked came back. If its consent is still
    live, someone holds a stolen copy: RFC 9700 section 4.14.2 — revoke the whole family (every
    token descended from the same authorization code), and keep that even though the request
    fails."""
    consent = ledger.get(conn, row["consent_id"])
    if not liveness.is_live(consent, now):
        raise InvalidGrant("refresh_token revoked: the consent behind it has ended")
    _revoke_family(gw, conn, requester, row, now, outcome="refresh_token_reused")
    return Refused(InvalidGrant("refresh_token was already used; every token of this grant is "
                                "revoked"))


def _revoke_family(gw, conn, requester: dict, row: dict, now: int, *, outcome: str) -> None:
    """Revoke every token descended from ``row``'s authorization code, and audit it."""
    token_rows.revoke_for_code(conn, row["code_hash"], now)
    consent = ledger.get(conn, row["consent_id"])
    entries.append(conn, now, "token.revoked", citizen=consent["subject_id"],
                   client_id=requester["client_id"],
                   subject=ledger.subject_of(gw, consent), consent_id=row["consent_id"],
                   items=consent["data_items"], route="oauth", outcome=outcome)


# -- revocation and introspection -----------------------------------------------------------

def _find_token(gw, conn, presented) -> dict | None:
    """The tokens row for an access JWT (by jti, signature checked) or a refresh token."""
    if not isinstance(presented, str) or not presented or len(presented) > 8192:
        return None
    if presented.startswith("rt_"):
        return token_rows.find(conn, token_rows.refresh_id(presented), token_rows.REFRESH)
    try:
        claims = gw.access_tokens.verify(presented)
    except Exception:  # noqa: BLE001 - any bad token is simply unknown here (RFC 7009/7662)
        return None
    row = token_rows.find(conn, claims["jti"], token_rows.ACCESS)
    return {**row, "claims": claims} if row else None


def revoke(gw, conn, requester: dict, form: dict) -> None:
    """RFC 7009: revoke the client's own token; unknown tokens are answered 200 all the same."""
    row = _find_token(gw, conn, form.get("token"))
    if row is None or row["client_id"] != requester["client_id"] or row["revoked_at"]:
        return
    now = gw.clock.now()
    if row["kind"] == token_rows.REFRESH:  # RFC 7009 2.1: the whole grant goes with it
        token_rows.revoke_for_code(conn, row["code_hash"], now)
    else:
        token_rows.revoke(conn, row["token_id"], now)
    consent = ledger.get(conn, row["consent_id"])
    entries.append(conn, now, "token.revoked", citizen=consent["subject_id"],
                   client_id=requester["client_id"],
                   subject=ledger.subject_of(gw, consent), consent_id=row["consent_id"],
                   items=consent["data_items"], route="oauth")


def introspect(gw, conn, requester: dict, form: dict) -> dict:
    """RFC 7662: details for an active token of this client; otherwise only active false."""
    row = _find_token(gw, conn, form.get("token"))
    now = gw.clock.now()
    if row is None or row["client_id"] != requester["client_id"] or row["revoked_at"] \
            or row["expires_at"] <= now:
        return {"active": False}
    try:
        consent = _usable_consent(gw, conn, row["consent_id"], requester["client_id"])
    except (InvalidGrant, ConsentError):
        return {"active": False}
    answer = {"active": True, "client_id": row["client_id"], "consent_id": consent["consent_id"],
              "token_type": "Bearer" if row["kind"] == "access" else "refresh_token",
              "exp": row["expires_at"], "iat": row["issued_at"], "iss": gw.config.issuer,
              "authorization_details": consent["authorization_details"]}
    if "claims" in row:
        answer.update(sub=row["claims"]["sub"], aud=row["claims"]["aud"], jti=row["claims"]["jti"])
    return answer

