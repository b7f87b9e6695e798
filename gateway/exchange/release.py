"""A data release, in the steps every route takes (the data API today; form prefill and CDI
jobs next), so none of them re-checks differently or fabricates bearer claims:

    grant  = live_grant(gw, claims)             the token's row, its consent, the requester's
                                                policy and the citizen, in one statement
    items  = decide(grant, asked, now)          pure: live ∩ consented ∩ allowed by policy ∩ asked
    values = gw.router.fetch(grant.hkid, items) the sources, outside any database transaction
    record(gw, grant, list(values), route=...)  the guarded write and its audit entry; once per
                                                idempotency key when the route gives one

``record`` re-checks the consent and the token inside its write (a guarded UPDATE, or on
PostgreSQL for an ongoing consent one statement with the audit insert), which serialises it
against a concurrent revocation: a consent revoked while its data was fetched releases nothing.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from sqlalchemy import Text, bindparam, cast, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway import metrics
from gateway.audit import entries, sequencer
from gateway.citizens import pairwise_subject
from gateway.consent import ledger, liveness
from gateway.consent.lifecycle import Status
from gateway.errors import BadRequest, InvalidToken, KeyReused, OutsideConsent
from gateway.store.db import citizens, consents, release_keys, requesters, tokens
from gateway.store.prepared import compiled
from gateway.tokens.access import VerifiedClaims
from policies.engine import PolicyError, allowed_items, check_consent

MAX_ITEMS_PARAM = 30


def parse_items(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    items = [i.strip() for i in raw.split(",")]
    if not raw.strip() or any(not i for i in items):
        raise BadRequest("items must be a comma-separated list of data item ids",
                         errors={"items": ["empty entry"]})
    if len(items) > MAX_ITEMS_PARAM or len(raw) > 2000:
        raise BadRequest("too many items", errors={"items": ["too many"]})
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class Grant:
    """What a verified access token stands for, read from the ledger: its consent as stored,
    the requester's current policy, the citizen (``hkid`` for the sources, ``subject`` the
    pairwise pseudonym this requester knows them by). Built only by ``live_grant``."""
    token_id: str
    consent_id: str
    client_id: str
    subject_id: str
    subject: str
    hkid: str = field(repr=False)       # never in a log line or a traceback
    status: str
    purpose: str
    data_items: tuple[str, ...]
    access: str
    expires_at: int | None
    decided_at: int | None
    policy: Mapping | None
    policy_digest: str | None = None    # PostgreSQL: md5 of the policy's stored text, as read

    def consent(self) -> dict:
        """The consent's columns, as the ledger and the liveness rule read them (a shallow
        copy: the policy is not the consent's and is not copied)."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["data_items"] = list(self.data_items)
        return row


_LIVE = (select(consents.c.consent_id, consents.c.client_id, consents.c.subject_id,
                consents.c.status, consents.c.purpose, consents.c.data_items, consents.c.access,
                consents.c.expires_at, consents.c.decided_at,
                tokens.c.revoked_at.label("token_revoked_at"),
                tokens.c.client_id.label("token_client_id"), requesters.c.policy,
                citizens.c.hkid_sealed)
         .select_from(tokens.join(consents, tokens.c.consent_id == consents.c.consent_id)
                      .join(requesters, requesters.c.client_id == consents.c.client_id)
                      .join(citizens, citizens.c.subject_id == consents.c.subject_id))
         .where(tokens.c.token_id == bindparam("jti"), tokens.c.kind == "access"))


# PostgreSQL reads the policy's digest too: the release's write re-checks it, so a grant read
# before a policy change (or kept in the cache below) releases nothing under the old policy.
POLICY_DIGEST = func.md5(cast(requesters.c.policy, Text))
_LIVE_PREPARED = compiled(_LIVE.add_columns(POLICY_DIGEST.label("policy_digest")))
_LIVE_COLUMNS = (*_LIVE.selected_columns.keys(), "policy_digest")


def _live_row(gw, jti: str) -> Mapping | None:
    if gw.prepared is not None:
        found = gw.prepared.one(_LIVE_PREPARED, {"jti": jti})
        return None if found is None else dict(zip(_LIVE_COLUMNS, found))
    with gw.reads.connect() as conn:
        return conn.execute(_LIVE, {"jti": jti}).mappings().first()


class GrantCache:
    """Grants read for recent tokens, by token id, each until its token's ``exp``, in one
    process; bounded. A cached grant spares the next call with that token its read, never its
    checks: ``record`` re-checks the consent, the token and the policy's digest inside the
    release's write, and a call whose cached grant turns out stale is decided again from a
    fresh read (``release``). Only the consent's fixed columns and the citizen's HKID are used
    from it — no status is trusted. PostgreSQL only (``Gateway.grants``)."""

    def __init__(self, clock, size: int = 4096):
        self.clock, self.size = clock, size
        self._grants: dict[str, tuple[int, Grant]] = {}

    def get(self, claims: VerifiedClaims) -> Grant | None:
        found = self._grants.get(claims["jti"])
        if found is None:
            return None
        if found[0] <= self.clock.now():
            self._grants.pop(claims["jti"], None)
            return None
        return found[1]

    def keep(self, claims: VerifiedClaims, grant: Grant) -> None:
        if len(self._grants) >= self.size:
            now = self.clock.now()
            for jti in [j for j, (exp, _) in self._grants.items() if exp <= now] or \
                    list(self._grants)[: self.size // 4]:
                self._grants.pop(jti, None)
        self._grants[claims["jti"]] = (claims["exp"], grant)

    def forget(self, claims: VerifiedClaims) -> None:
        self._grants.pop(claims["jti"], None)


def live_grant(gw, claims: VerifiedClaims) -> Grant:
    """The grant behind a verified access token (one statement); refused when the token was
    revoked or does not match its row. Whether the consent is still live is ``decide``'s."""
    row = _live_row(gw, claims["jti"])
    if row is None or row["token_revoked_at"] is not None:
        raise InvalidToken("the access token was revoked")
    if row["consent_id"] != claims["consent_id"] or row["client_id"] != claims["client_id"] \
            or row["token_client_id"] != claims["client_id"]:
        raise InvalidToken("the access token does not match its consent")
    return Grant(token_id=claims["jti"], consent_id=row["consent_id"],
                 client_id=row["client_id"], subject_id=row["subject_id"],
                 subject=pairwise_subject(gw.pairwise_secret, row["subject_id"],
                                          row["client_id"]),
                 hkid=gw.sealer.open(row["hkid_sealed"], row["subject_id"]),
                 status=row["status"], purpose=row["purpose"],
                 data_items=tuple(row["data_items"]), access=row["access"],
                 expires_at=row["expires_at"], decided_at=row["decided_at"],
                 policy=row["policy"], policy_digest=row.get("policy_digest"))


def decide(grant: Grant, asked: list[str] | None, now: int) -> list[str]:
    """The items that may leave now: the consent live, its kind and length still within the
    policy, and the items consented ∩ allowed by the policy ∩ asked (all of them when
    ``asked`` is None). Pure: no I/O, no clock of its own."""
    consent = grant.consent()
    if not liveness.is_live(consent, now):
        raise InvalidToken("the consent was revoked or has expired")
    policy = grant.policy or {}
    if grant.purpose in policy.get("purposes", {}):  # a withdrawn purpose: nothing allowed below
        try:  # the policy narrowed the consent's kind or length since it was approved
            check_consent(policy, consent, now)
        except PolicyError as exc:
            raise InvalidToken(str(exc)) from exc
    allowed = allowed_items(grant.policy, grant.purpose)
    permitted = [i for i in grant.data_items if i in allowed]
    if asked is None:
        items = permitted
    else:
        outside = [i for i in asked if i not in permitted]
        if outside:
            raise OutsideConsent("items outside the consent were asked for",
                                 errors={"items": [f"{i}: not within the consent" for i in outside]})
        items = list(asked)
    if not items:
        raise OutsideConsent("the requester's policy no longer allows any of the consented items",
                             errors={"items": ["nothing allowed"]})
    return items


# Re-check inside the write transaction; the UPDATE also locks the consent row against a
# concurrent revocation until this release is committed.
_STILL_LIVE = (update(consents)
               .where(consents.c.consent_id == bindparam("cid"),
                      liveness.live_clause(consents, bindparam("now")),
                      # the token row locked first (the ledger's lock order): a concurrent
                      # revocation waits for this release, or this release sees it
                      select(tokens.c.token_id)
                      .where(tokens.c.token_id == bindparam("jti"),
                             tokens.c.revoked_at.is_(None))
                      .with_for_update(key_share=True).exists())
               .values(status=consents.c.status))  # a touch: takes the row lock

_ENDED = "the consent was revoked or has expired"


@dataclass(frozen=True)
class Recorded:
    first: bool      # False: this idempotency key was recorded before; nothing written now


def _scoped(grant: Grant, key: str) -> str:
    return f"{grant.client_id}:{key}"   # one requester's key never meets another's


def already_recorded(gw, grant: Grant, key: str) -> bool:
    """Whether a release with this idempotency key was recorded for this grant's requester
    (so a retried job need not fetch again)."""
    with gw.reads.connect() as conn:
        return conn.execute(select(release_keys.c.key)
                            .where(release_keys.c.key == _scoped(grant, key))).first() is not None


def record(gw, grant: Grant, items: list[str], *, route: str, key: str | None = None) -> Recorded:
    """Write the release of ``items`` under ``grant``: re-check the consent and the token,
    append the ``data.released`` entry, end a ``once`` consent — all or nothing.

    With ``key`` (an idempotency key of the requester's: a CDI query id, say) the release is
    recorded once: a second call with the same key for the same consent writes nothing and
    answers ``first=False`` — which permits sending nothing new: the caller answers with what
    it kept from the first time. The consent and token are re-checked on every call, a repeat
    included (a revoked consent refuses it), and a key the requester already used for another
    consent is refused (``KeyReused``)."""
    now = gw.clock.now()
    audit = dict(client_id=grant.client_id, subject=grant.subject,
                 consent_id=grant.consent_id, items=list(items), route=route)
    if key is None and grant.access == "ongoing" and gw.prepared is not None:
        # autocommit: the one statement is its own transaction
        recorded = gw.retried(lambda: entries.release_prepared(
            gw.prepared, gw.config.log_shards, now, grant.token_id, grant.policy_digest,
            citizen=grant.subject_id, **audit))
        if recorded is None:
            raise InvalidToken(_ENDED)
        sequencer.after_commit(gw)
        metrics.released(items, route)
        return Recorded(first=True)

    recorded = gw.in_transaction(lambda conn: record_in(conn, gw, grant, items, route=route,
                                                        key=key, now=now))
    if recorded.first:
        metrics.released(items, route)
    return recorded


def record_in(conn, gw, grant: Grant, items: list[str], *, route: str, key: str | None,
              now: int) -> Recorded:
    """``record``'s write inside the caller's transaction on ``conn`` (a CDI job stores its
    sealed result in the same transaction as the release, so the two happen together or not
    at all)."""
    still = conn.execute(_STILL_LIVE, {"cid": grant.consent_id, "now": now,
                                       "jti": grant.token_id}).rowcount
    if still != 1:
        raise InvalidToken(_ENDED)
    if key is not None:
        scoped = _scoped(grant, key)
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        taken = conn.execute(dialect.insert(release_keys)
                             .values(key=scoped, consent_id=grant.consent_id, recorded_at=now)
                             .on_conflict_do_nothing(index_elements=["key"])
                             .returning(release_keys.c.key)).first()
        if taken is None:   # recorded before (or by a concurrent release that committed first)
            earlier = conn.execute(select(release_keys.c.consent_id)
                                   .where(release_keys.c.key == scoped)).scalar()
            if earlier != grant.consent_id:
                raise KeyReused("this idempotency key was used for another consent") from None
            return Recorded(first=False)
    audit = dict(client_id=grant.client_id, subject=grant.subject,
                 consent_id=grant.consent_id, items=list(items), route=route)
    entries.append(conn, now, "data.released", citizen=grant.subject_id, **audit)
    if grant.access == "once":
        ledger.transition(conn, now, {**grant.consent(), "status": Status.APPROVED.value},
                          "expired", subject=grant.subject, route=route)
    return Recorded(first=True)


def release(gw, claims: VerifiedClaims, asked: list[str] | None, route: str = "api") -> dict:
    """The data API's release: the four steps, answered as the API's body. With a grant cached
    for this token the read is skipped; if the write then finds the consent, the token or the
    policy changed, the call is decided again from a fresh read, so its answer (data, or the
    refusal and its reason) is the one a fresh read gives."""
    cached = gw.grants.get(claims) if gw.grants is not None else None
    if cached is not None:
        try:
            return _release(gw, cached, asked, route)
        except (InvalidToken, OutsideConsent):
            gw.grants.forget(claims)
    grant = live_grant(gw, claims)
    body = _release(gw, grant, asked, route)
    if gw.grants is not None and grant.access == "ongoing":
        gw.grants.keep(claims, grant)
    return body


def _release(gw, grant: Grant, asked: list[str] | None, route: str) -> dict:
    values = gw.router.fetch(grant.hkid, decide(grant, asked, gw.clock.now()))
    record(gw, grant, list(values), route=route)
    return {"consent_id": grant.consent_id, "subject": grant.subject, "items": values}
