"""A million consents (issue 7): does what a citizen or a requester does cost the same when the
ledger holds 10^6 consents as when it holds 10^3?

    python benchmarks/million.py                       # 10^6 against 10^3 (a few minutes)
    python benchmarks/million.py --consents 100000 --small 1000 --keep

For each size it creates a schema ``bench_million_<random>_<size>`` in the database
``postgres`` on 127.0.0.1:5432 (user postgres, trust auth), migrates it with
``gateway.store.db.upgrade``, seeds the demo requesters and citizen (``gateway.demo.seed``),
and bulk-loads, with psycopg COPY, a history of N consents for N/10 citizens: each consent's
pushed request, its authorization code and its tokens (access, and refresh for ``ongoing``),
and its audit entries (``consent.requested``, the decision, ``token.issued``, the reads'
``data.released``, the end), built by ``gateway.audit.entries`` and sharded by its
``shard_of``. Entries are written in the order of their times across all consents, as a
running gateway writes them. Fates: about 72 % approved and live (ongoing), 5 % ``once`` not yet
read, 3 % ``once`` read and ended, 8 % revoked, 7.5 % expired and swept, 4 % declined; 0.2 %
approved but lapsed within the last ten minutes and 0.1 % requests left unanswered, which the
first sweep ends (untimed).

What is not the gateway's own code path, said plainly: the Merkle tree over the bulk entries is
computed here with ``gateway.audit.merkle.Frontier`` (the sequencer's tree code; the real
sequencer, at the 7–17k entries/s benchmarks/README.md measured, would need 5–12 minutes for
the 5 million entries of 10^6 consents), and its leaf indexes,
nodes and head are written as the sequencer writes them; ``gateway.audit.verify`` checks the
result at both sizes every run. Foreign keys hold by construction and their per-row checks
are skipped during COPY (``session_replication_role = replica``). After loading:
``VACUUM (ANALYZE)``, as autovacuum would have done on a ledger that grew over a year.

Then it measures, through the Flask test client on a real Redis (a random key prefix, deleted
at the end), alternating the two sizes run by run, the median of:

- the data call ``GET /api/v1/data``, with access tokens obtained by the refresh grant
  (``POST /oauth/token``) for five bulk-loaded consents of a citizen the mock ImmD knows: each
  token's first call (the grant is read), and one token called again and again (where the
  gateway keeps grants of recent tokens, it is not read again);
- ``/me`` of a citizen (the demo citizen) with 10 consents and their reads, logged in;
- a revocation: the citizen's ``POST /me/consents/<id>/revoke``, each on another consent;
- the expiry sweep ``expire_consents`` with exactly 20 lapsed consents present;
- one sequencer batch (``sequencer.integrate``) of 1000 pending entries;

and the SQL statements each makes (SQLAlchemy's ``before_cursor_execute``, plus the data
path's statements prepared on psycopg where the gateway has them; BEGIN and COMMIT are not
counted). Everything it made is dropped at the end (also on Ctrl-C or an
error) unless ``--keep``.
"""
from __future__ import annotations

import argparse
import base64
import itertools
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from sqlalchemy import event, select, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import create_app  # noqa: E402
from gateway.audit import entries, merkle, sequencer  # noqa: E402
from gateway.audit.checkpoints import publish  # noqa: E402
from gateway.audit.verify import verify  # noqa: E402
from gateway.citizens import pairwise_subject  # noqa: E402
from gateway.config import Config  # noqa: E402
from gateway.demo.seed import DEMO_CITIZEN_HKID, demo_requesters, seed  # noqa: E402
from gateway.jobs.sweeps import expire_consents  # noqa: E402
from gateway.oauth.grant import REQUEST_URI_PREFIX  # noqa: E402
from gateway.store import db  # noqa: E402
from gateway.store.db import citizens as citizens_table, consents, log_heads  # noqa: E402
from gateway.tokens.token_rows import refresh_id  # noqa: E402
from policies.engine import POLICY_DIR, load_file, max_duration_seconds  # noqa: E402
from schemas.hkid import check_character, display  # noqa: E402
from schemas.duration import seconds  # noqa: E402
from tests.flow import Flow  # noqa: E402

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
ISSUER = "http://gateway.bench"
DAY = 86_400
ONGOING_DURATION = "P90D"

DATA_CITIZEN_HKID = "G123456A"      # known to the mock ImmD and e-ME: the data call's source
REVOKER_HKID = "AB9876543"          # known to the mock ImmD: logs in to revoke
DATA_CONSENTS = 5                   # the data calls' tokens are for these
DATA_CALLS = 50
REVOCABLE_CONSENTS = 24             # 20 timed + 1 warm-up, and a few spare
DEMO_FATES = ("live", "live", "live", "revoked", "live", "swept", "live_once", "live",
              "declined", "read_once")   # the demo citizen's /me: 10 consents, 15 reads
FATES = {"live": 0.722, "live_once": 0.05, "read_once": 0.03, "revoked": 0.08,
         "swept": 0.075, "declined": 0.04, "lapsed": 0.002, "unanswered": 0.001}
SWEEP_LAPSED = 20                   # consents the timed sweep finds lapsed
BATCH = 1000                        # pending entries of the timed sequencer batch
SWEEP_SAMPLE = 200                  # live consents of ordinary citizens to make lapse


class BenchFailed(Exception):
    """The gateway did not answer as it must; the measurement would mean nothing."""


def expect(resp, status: int, what: str):
    if resp.status_code != status:
        raise BenchFailed(f"{what}: answered {resp.status_code}, not {status}: "
                          f"{resp.get_data(as_text=True)[:300]}")
    return resp


# -- the population -----------------------------------------------------------------------

@dataclass(frozen=True)
class Requester:
    """A demo requester's first purpose, as its policy file has it."""
    client_id: str
    redirect_uri: str
    purpose: str
    data_items: tuple[str, ...]
    once_lifetime: int              # a ``once`` consent without duration lasts this long

    def detail(self, access: str) -> dict:
        detail = {"type": "cdeg_data", "purpose": self.purpose,
                  "data_items": list(self.data_items), "access": access}
        if access == "ongoing":
            detail["duration"] = ONGOING_DURATION
        return detail


def demo_purposes() -> list[Requester]:
    out = []
    for entry in demo_requesters():
        policy = load_file(POLICY_DIR / entry["policy"])
        purpose, spec = next(iter(policy["purposes"].items()))
        out.append(Requester(entry["client_id"], entry["redirect_uris"][0], purpose,
                             tuple(spec["items"]["required"]),
                             max_duration_seconds(policy, purpose)))
    return out


@dataclass(frozen=True)
class Citizen:
    subject_id: str
    hkid: str


@dataclass(slots=True)
class Plan:
    """One consent's history, decided before anything is written."""
    consent_id: str
    requester: Requester
    citizen: Citizen | None
    subject: str | None             # the pairwise pseudonym its requester knows the citizen by
    fate: str
    access: str
    created_at: int
    decided_at: int | None = None
    expires_at: int | None = None
    ended_at: int | None = None
    reads: tuple[int, ...] = ()
    refresh_token: str | None = None   # kept only where the benchmark refreshes it

    @property
    def status(self) -> str:
        return {"live": "approved", "live_once": "approved", "lapsed": "approved",
                "read_once": "expired", "swept": "expired", "revoked": "revoked",
                "declined": "declined", "unanswered": "requested"}[self.fate]

    @property
    def approved(self) -> bool:
        return self.fate not in ("declined", "unanswered")

    def events(self) -> list[tuple[int, str, str | None]]:
        """(at, event, route) of its audit entries, in the order it happened."""
        out = [(self.created_at, "consent.requested", None)]
        if self.fate == "unanswered":
            return out
        if self.fate == "declined":
            return out + [(self.decided_at, "consent.declined", "web")]
        out += [(self.decided_at, "consent.approved", "web"),
                (self.decided_at + 2, "token.issued", "oauth")]
        out += [(at, "data.released", "api") for at in self.reads]
        end = {"revoked": ("consent.revoked", "web"), "swept": ("consent.expired", "sweep"),
               "read_once": ("consent.expired", "api")}.get(self.fate)
        if end:
            out.append((self.ended_at, *end))
        return out


def urlsafe(rng: random.Random, nbytes: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(nbytes)).decode().rstrip("=")


def citizen_hkid(number: int) -> str:
    digits = f"{number:06d}"
    return "Z" + digits + check_character("Z", digits)


class Planner:
    """Draws consents' histories: times relative to ``now``, fates by FATES."""

    def __init__(self, rng: random.Random, now: int, pairwise_secret: bytes):
        self.rng, self.now, self.secret = rng, now, pairwise_secret
        self.ongoing = seconds(ONGOING_DURATION)

    def plan(self, requester: Requester, citizen: Citizen, fate: str,
             reads: int | None = None) -> Plan:
        rng, now = self.rng, self.now
        access = "once" if fate in ("live_once", "read_once") else "ongoing"
        lifetime = requester.once_lifetime if access == "once" else self.ongoing
        plan = Plan("cns_" + urlsafe(rng, 18), requester, citizen, None, fate, access, 0)
        if fate == "unanswered":
            plan.created_at = now - rng.randint(91, 600)   # its pushed request lapsed
            plan.citizen = None
            return plan
        plan.subject = pairwise_subject(self.secret, citizen.subject_id, requester.client_id)
        if fate in ("live", "live_once"):
            plan.decided_at = now - rng.randint(3600, lifetime - 3600)
        elif fate == "swept":
            plan.decided_at = now - rng.randint(1200, 300 * DAY) - lifetime
        elif fate == "lapsed":
            plan.decided_at = now - rng.randint(1, 600) - lifetime
        else:   # revoked, read_once, declined: decided some time in the last year
            plan.decided_at = now - rng.randint(DAY, 365 * DAY)
        plan.created_at = plan.decided_at - rng.randint(20, 300)
        if fate == "declined":
            return plan
        plan.expires_at = plan.decided_at + lifetime
        if fate == "revoked":
            plan.ended_at = plan.decided_at + rng.randint(120, min(lifetime, now - plan.decided_at))
        elif fate == "swept":
            plan.ended_at = plan.expires_at + rng.randint(1, 600)
        elif fate == "read_once":
            plan.ended_at = plan.decided_at + rng.randint(60, 7 * DAY)
            plan.reads = (plan.ended_at,)
            return plan
        if access == "ongoing":
            count = rng.choice((0, 1, 2, 2, 3, 4)) if reads is None else reads
            until = min(plan.ended_at or plan.expires_at, now) - 1
            plan.reads = tuple(sorted(rng.randint(plan.decided_at + 60, until)
                                      for _ in range(count)))
        return plan


@dataclass
class Population:
    citizens: list[Citizen]                 # to load (the demo citizen is seeded already)
    plans: list[Plan]                       # in the order they were created
    data_refresh_tokens: list[str]
    revocable: list[str]
    sample: list[Plan]                      # live consents of ordinary citizens


def plan_population(gw, size: int, rng: random.Random) -> Population:
    """``size`` consents for ``size // 10`` citizens: three citizens the mock departments know
    with the consents the measurements use, everyone else at random."""
    with gw.db.connect() as conn:
        demo_subject = conn.execute(select(citizens_table.c.subject_id).where(
            citizens_table.c.hkid_index == gw.sealer.index(DEMO_CITIZEN_HKID))).scalar_one()
    demo = Citizen(demo_subject, DEMO_CITIZEN_HKID)
    data_citizen = Citizen(rng.randbytes(16).hex(), DATA_CITIZEN_HKID)
    revoker = Citizen(rng.randbytes(16).hex(), REVOKER_HKID)
    ordinary = [Citizen(rng.randbytes(16).hex(), citizen_hkid(i))
                for i in range(max(1, size // 10 - 3))]
    requesters = demo_purposes()
    bank = next(r for r in requesters if r.client_id == "bank-of-example")
    planner = Planner(rng, gw.clock.now(), gw.pairwise_secret)
    special = [planner.plan(requesters[i % len(requesters)], demo, fate, reads=2)
               for i, fate in enumerate(DEMO_FATES)]
    data = [planner.plan(bank, data_citizen, "live") for _ in range(DATA_CONSENTS)]
    for plan in data:
        plan.refresh_token = "rt_" + urlsafe(rng, 32)
    revocable = [planner.plan(bank, revoker, "live") for _ in range(REVOCABLE_CONSENTS)]
    fates, weights = list(FATES), list(FATES.values())
    rest = size - len(special) - len(data) - len(revocable)
    drawn = [planner.plan(rng.choice(requesters), rng.choice(ordinary), fate)
             for fate in rng.choices(fates, weights, k=rest)]
    live = [p for p in drawn if p.fate == "live"]
    plans = sorted(special + data + revocable + drawn, key=lambda p: p.created_at)
    return Population(citizens=[data_citizen, revoker] + ordinary, plans=plans,
                      data_refresh_tokens=[p.refresh_token for p in data],
                      revocable=[p.consent_id for p in revocable],
                      sample=rng.sample(live, min(SWEEP_SAMPLE, len(live))))


# -- loading ------------------------------------------------------------------------------

COPIES = {
    "citizens": "COPY citizens (subject_id, hkid_index, hkid_sealed, created_at) FROM STDIN",
    "consents": "COPY consents (consent_id, client_id, subject_id, status, purpose, data_items, "
                "access, duration, authorization_details, created_at, decided_at, expires_at, "
                "ended_at) FROM STDIN",
    "pushed_requests": "COPY pushed_requests (request_uri, client_id, consent_id, redirect_uri, "
                       "state, code_challenge, expires_at, used_at) FROM STDIN",
    "authorization_codes": "COPY authorization_codes (code_hash, consent_id, client_id, "
                           "redirect_uri, code_challenge, expires_at, used_at) FROM STDIN",
    "tokens": "COPY tokens (token_id, kind, consent_id, client_id, code_hash, issued_at, "
              "expires_at, revoked_at) FROM STDIN",
    "audit_entries": "COPY audit_entries (shard, leaf_index, consent_id, event, entry, "
                     "leaf_hash) FROM STDIN",
    "log_nodes": "COPY log_nodes (shard, level, idx, hash, span_end) FROM STDIN",
}


@contextmanager
def copy_into(schema: str, statement: str):
    """One COPY on a connection of its own (several run side by side), committed at the end."""
    with psycopg.connect(DSN, options=f"-c search_path={schema}") as conn:
        conn.execute("SET session_replication_role = replica")   # FKs hold by construction
        with conn.cursor() as cur, cur.copy(statement) as copy:
            yield copy


def write_citizens(copy, citizens: list[Citizen], now: int, sealer) -> None:
    """Sealed as the gateway seals them (gateway/identifiers.py): a keyed hash and AES-GCM."""
    for citizen in citizens:
        copy.write_row((citizen.subject_id, sealer.index(citizen.hkid),
                        sealer.seal(citizen.hkid, citizen.subject_id), now - 400 * DAY))


def write_consent(copies: dict, plan: Plan, rng: random.Random) -> int:
    """Its ledger rows (consent, pushed request, code, tokens); answers how many tokens."""
    requester = plan.requester
    detail = requester.detail(plan.access)
    challenge = urlsafe(rng, 32)
    copies["consents"].write_row((
        plan.consent_id, requester.client_id, plan.citizen and plan.citizen.subject_id,
        plan.status, requester.purpose, json.dumps(detail["data_items"]), plan.access,
        detail.get("duration"), json.dumps([detail]), plan.created_at, plan.decided_at,
        plan.expires_at, plan.ended_at))
    copies["pushed_requests"].write_row((
        REQUEST_URI_PREFIX + urlsafe(rng, 24), requester.client_id, plan.consent_id,
        requester.redirect_uri, "st-" + urlsafe(rng, 6), challenge, plan.created_at + 90,
        plan.decided_at))
    if not plan.approved:
        return 0
    code_hash = rng.randbytes(32).hex()
    issued = plan.decided_at + 2
    copies["authorization_codes"].write_row((
        code_hash, plan.consent_id, requester.client_id, requester.redirect_uri, challenge,
        plan.decided_at + 60, issued))
    copies["tokens"].write_row((urlsafe(rng, 18), "access", plan.consent_id,
                                requester.client_id, code_hash, issued, issued + 600,
                                plan.ended_at))
    if plan.access != "ongoing":
        return 1
    refresh = plan.refresh_token or "rt_" + urlsafe(rng, 32)
    copies["tokens"].write_row((refresh_id(refresh), "refresh", plan.consent_id,
                                requester.client_id, code_hash, issued, plan.expires_at,
                                plan.ended_at))
    return 2


IDX_BITS, SEQ_BITS = 24, 4


def entry_order(plans: list[Plan]) -> list[int]:
    """Every entry of every consent as one int (time, consent, its ordinal), sorted: the order
    a running gateway would have written them in."""
    if len(plans) >= 1 << IDX_BITS:
        raise ValueError(f"at most {(1 << IDX_BITS) - 1:,} consents")
    keys = []
    for idx, plan in enumerate(plans):
        for seq, (at, _event, _route) in enumerate(plan.events()):
            keys.append(at << (IDX_BITS + SEQ_BITS) | idx << SEQ_BITS | seq)
    keys.sort()
    return keys


def write_log(entries_copy, nodes_copy, plans: list[Plan], trees: dict, shards: int) -> int:
    """The audit entries in time order, already sequenced: leaf indexes, and the tree's nodes
    as the sequencer stores them. Answers how many entries."""
    keys = entry_order(plans)
    for key in keys:
        plan = plans[key >> SEQ_BITS & ((1 << IDX_BITS) - 1)]
        at, name, route = plan.events()[key & ((1 << SEQ_BITS) - 1)]
        requested = name == "consent.requested"
        items = plan.requester.data_items
        body = entries.body_of(entries.new_entry(
            at, name, client_id=plan.requester.client_id,
            subject=None if requested else plan.subject, consent_id=plan.consent_id,
            items=items, route=route))
        citizen = None if requested or plan.citizen is None else plan.citizen.subject_id
        shard = entries.shard_of(citizen or plan.consent_id, shards)
        digest = entries.leaf_hash(body)
        tree = trees[shard]
        entries_copy.write_row((shard, tree.size, plan.consent_id, name, body, digest))
        for level, index, value in tree.append(bytes.fromhex(digest)):
            if level > 0:
                nodes_copy.write_row((shard, level, index, value.hex(), (index + 1) << level))
    return len(keys)


def stored_trees(gw) -> dict[int, merkle.Frontier]:
    with gw.db.connect() as conn:
        return {shard: merkle.Frontier.from_nodes(sequencer.head(conn, shard)[0],
                                                  sequencer.TreeReader(conn, shard))
                for shard in range(gw.config.log_shards)}


def store_heads(gw, trees: dict[int, merkle.Frontier]) -> None:
    with gw.transaction() as conn:
        for shard, tree in trees.items():
            values = {"tree_size": tree.size, "root_hash": tree.root().hex(),
                      "integrated_at": gw.clock.now()}
            if not conn.execute(update(log_heads).where(log_heads.c.shard == shard)
                                .values(**values)).rowcount:
                conn.execute(log_heads.insert().values(shard=shard, **values))


VACUUMED = ("citizens, consents, pushed_requests, authorization_codes, tokens, audit_entries, "
            "log_nodes, log_heads")


@dataclass
class Loaded:
    consents: int = 0
    citizens: int = 0
    tokens: int = 0
    entries: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    swept_backlog: int = 0
    verified: int | None = None


def load(gw, schema: str, population: Population, rng: random.Random) -> Loaded:
    """COPY the population in, sequenced, then vacuum and analyze; answers what was loaded."""
    sequencer.integrate_all(gw)          # whatever seeding wrote, before the bulk's leaves
    trees = stored_trees(gw)
    loaded = Loaded(consents=len(population.plans), citizens=len(population.citizens) + 1)
    started = time.perf_counter()
    with ExitStack() as stack:
        copies = {name: stack.enter_context(copy_into(schema, sql))
                  for name, sql in COPIES.items()}
        write_citizens(copies["citizens"], population.citizens, gw.clock.now(), gw.sealer)
        for plan in population.plans:
            loaded.tokens += write_consent(copies, plan, rng)
        loaded.entries = write_log(copies["audit_entries"], copies["log_nodes"],
                                   population.plans, trees, gw.config.log_shards)
    store_heads(gw, trees)
    publish(gw)
    loaded.seconds["generate + COPY"] = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}") as conn:
        conn.execute(f"VACUUM (ANALYZE) {VACUUMED}")
    loaded.seconds["VACUUM (ANALYZE)"] = time.perf_counter() - started
    started = time.perf_counter()
    while swept := expire_consents(gw):   # the backlog the loaded history left for the sweep
        loaded.swept_backlog += swept
    sequencer.integrate_all(gw)
    loaded.seconds["first sweep + sequencing it"] = time.perf_counter() - started
    return loaded


# -- one loaded schema and its gateway ---------------------------------------------------

class StatementCounter:
    """SQL statements a gateway sends: through SQLAlchemy (``before_cursor_execute``) and, when
    the gateway has them, the data path's statements prepared on psycopg
    (``gateway/store/prepared.py``), which SQLAlchemy's events do not see."""

    def __init__(self, gw):
        self.count = 0
        event.listen(gw.db.engine, "before_cursor_execute", self._seen)
        prepared = getattr(gw, "prepared", None)
        if prepared is not None:
            one = prepared.one

            def counted_one(statement, given):
                self._seen()
                return one(statement, given)
            prepared.one = counted_one

    def _seen(self, *_args) -> None:
        self.count += 1


class Site:
    """A schema of ``size`` consents, migrated, seeded and loaded, with the gateway app on it;
    after ``sign_in`` also the clients the measurements use: the requester, the demo citizen's
    browser, the revoker's browser."""

    def __init__(self, size: int, schema: str, redis_prefix: str, instance: Path):
        self.size, self.schema = size, schema
        url = (DSN.replace("postgresql://", "postgresql+psycopg://", 1)
               + f"?options=-csearch_path%3D{schema}")
        engine = db.make_engine(url)
        try:
            db.upgrade(engine)
        finally:
            engine.dispose()
        self.app = create_app(Config(env="demo", instance_dir=instance, issuer=ISSUER,
                                     database_url=url, redis_url=REDIS_URL,
                                     redis_prefix=redis_prefix, jobs_inline=False))
        self.gw = self.app.extensions["cdeg"]
        seed(self.gw)
        rng = random.Random(size)           # the same history at every run of a size
        started = time.perf_counter()
        population = plan_population(self.gw, size, rng)
        planned = time.perf_counter() - started
        self.loaded = load(self.gw, schema, population, rng)
        self.loaded.seconds = {"plan": planned, **self.loaded.seconds}
        self.statements = StatementCounter(self.gw)
        self.refresh_tokens = population.data_refresh_tokens
        self.revocable = iter(population.revocable)
        self.sample = population.sample
        self.to_lapse = iter(population.sample)

    def check_log(self) -> None:
        """The loaded log is the one the sequencer would have built (``cdeg audit verify``)."""
        started = time.perf_counter()
        self.loaded.verified = verify(self.gw).entries
        self.loaded.seconds["verify"] = time.perf_counter() - started

    def sign_in(self) -> None:
        """Access tokens by the refresh grant, and the two citizens logged in (untimed)."""
        self.api = Flow(self.app)
        self.new_tokens = iter(self._access_tokens(DATA_CALLS + 1))
        self.same_token = self._access_tokens(1)[0]
        self.citizen = self._logged_in(DEMO_CITIZEN_HKID)
        self.revoker = self._logged_in(REVOKER_HKID)
        self.revoker_csrf = Flow.csrf(self.revoker.get("/me").get_data(as_text=True))

    def _access_tokens(self, count: int) -> list[str]:
        """``count`` access tokens, round the data citizen's consents, each by the refresh
        grant (which rotates that consent's refresh token)."""
        out = []
        for i in range(count):
            k = i % len(self.refresh_tokens)
            body = expect(self.api.requester.post("/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": self.refresh_tokens[k],
                **self.api.auth()}), 200, "refresh grant").get_json()
            self.refresh_tokens[k] = body["refresh_token"]
            out.append(body["access_token"])
        return out

    def _logged_in(self, hkid: str):
        flow = Flow(self.app)
        resp = expect(flow.login(hkid=display(hkid)), 303, "login")
        if resp.headers["Location"] != "/me":
            raise BenchFailed(f"login led to {resp.headers['Location']}")
        return flow.browser

    # the timed operations and what each needs beforehand
    def data_call_new_token(self) -> None:
        self._data_call(next(self.new_tokens))

    def data_call_same_token(self) -> None:
        self._data_call(self.same_token)

    def _data_call(self, token: str) -> None:
        resp = expect(self.api.requester.get("/api/v1/data", headers={
            "Authorization": f"Bearer {token}"}), 200, "data call")
        if len(resp.get_json()["items"]) != 4:
            raise BenchFailed(f"data call released {resp.get_json()['items']}")

    def me_page(self) -> None:
        page = expect(self.citizen.get("/me"), 200, "/me").get_data(as_text=True)
        if page.count("/revoke") < 6:
            raise BenchFailed("/me does not show the demo citizen's live consents")

    def revocation(self) -> None:
        consent_id = next(self.revocable)
        resp = expect(self.revoker.post(f"/me/consents/{consent_id}/revoke",
                                        data={"csrf_token": self.revoker_csrf}), 303, "revoke")
        if resp.headers["Location"] != "/me":
            raise BenchFailed(f"revoke led to {resp.headers['Location']}")

    def plant_lapsed(self) -> None:
        lapsing = [next(self.to_lapse).consent_id for _ in range(SWEEP_LAPSED)]
        with self.gw.transaction() as conn:
            conn.execute(update(consents).where(consents.c.consent_id.in_(lapsing))
                         .values(expires_at=self.gw.clock.now() - 1))

    def sweep(self) -> None:
        if (done := expire_consents(self.gw)) != SWEEP_LAPSED:
            raise BenchFailed(f"the sweep expired {done}, not {SWEEP_LAPSED}")

    def plant_pending(self) -> None:
        """Exactly BATCH entries waiting: the rest integrated, then BATCH written as a release
        writes them."""
        sequencer.integrate_all(self.gw)
        now = self.gw.clock.now()
        with self.gw.transaction() as conn:
            for plan in itertools.islice(itertools.cycle(self.sample), BATCH):
                entries.append(conn, now, "data.released", citizen=plan.citizen.subject_id,
                               client_id=plan.requester.client_id, subject=plan.subject,
                               consent_id=plan.consent_id, items=plan.requester.data_items,
                               route="api")

    def sequencer_batch(self) -> None:
        if (done := sequencer.integrate(self.gw, 0)) != BATCH:
            raise BenchFailed(f"the sequencer integrated {done}, not {BATCH}")

    def close(self) -> None:
        self.gw.close()


@dataclass(frozen=True)
class Operation:
    name: str
    repeats: int
    run: Callable[[Site], None]
    prepare: Callable[[Site], None] | None = None


OPERATIONS = (
    Operation("data call, a token's first call", DATA_CALLS, Site.data_call_new_token),
    Operation("data call, the same token again", DATA_CALLS, Site.data_call_same_token),
    Operation("citizen's `/me` (10 consents)", 20, Site.me_page),
    Operation("revocation `POST /me/consents/<id>/revoke`", 20, Site.revocation),
    Operation(f"expiry sweep, {SWEEP_LAPSED} lapsed", 5, Site.sweep, Site.plant_lapsed),
    Operation(f"sequencer batch of {BATCH}", 3, Site.sequencer_batch, Site.plant_pending),
)


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)


def timed(site: Site, operation: Operation, samples: Samples | None) -> None:
    if operation.prepare:
        operation.prepare(site)
    site.statements.count = 0
    started = time.perf_counter()
    operation.run(site)
    elapsed = time.perf_counter() - started
    if samples is not None:
        samples.seconds.append(elapsed)
        samples.statements.append(site.statements.count)


def measure(sites: list[Site]) -> dict[tuple[str, int], Samples]:
    """Each operation once untimed per site (warm-up), then its repeats alternating sites."""
    results = {}
    for operation in OPERATIONS:
        for site in sites:
            timed(site, operation, None)
        for _ in range(operation.repeats):
            for site in sites:
                timed(site, operation, results.setdefault((operation.name, site.size),
                                                          Samples()))
    return results


# -- the report ---------------------------------------------------------------------------

def power(size: int) -> str:
    exponent = len(str(size)) - 1
    return f"10^{exponent}" if size == 10 ** exponent else f"{size:,}"


def statement_range(counts: list[int]) -> str:
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}–{high}"


def report(results: dict, small: Site, large: Site) -> str:
    lines = [f"| operation | runs | median at {power(small.size)} | median at "
             f"{power(large.size)} | ratio | SQL statements ({power(small.size)} / "
             f"{power(large.size)}) |", "|---|---|---|---|---|---|"]
    for operation in OPERATIONS:
        a, b = results[operation.name, small.size], results[operation.name, large.size]
        ma, mb = statistics.median(a.seconds), statistics.median(b.seconds)
        flag = "" if mb <= 1.5 * ma else " **over 1.5×**"
        lines.append(f"| {operation.name} | {operation.repeats} | {ma * 1000:.2f} ms | "
                     f"{mb * 1000:.2f} ms | {mb / ma:.2f}{flag} | "
                     f"{statement_range(a.statements)} / {statement_range(b.statements)} |")
    return "\n".join(lines)


def load_summary(site: Site) -> str:
    loaded = site.loaded
    phases = ", ".join(f"{name} {secs:.1f} s" for name, secs in loaded.seconds.items())
    verified = f"; `verify` checked {loaded.verified:,} entries" if loaded.verified else ""
    return (f"- {power(site.size)}: {loaded.consents:,} consents, {loaded.citizens:,} citizens, "
            f"{loaded.tokens:,} tokens, {loaded.entries:,} audit entries; {phases} "
            f"(total {sum(loaded.seconds.values()):.1f} s); the first sweep ended "
            f"{loaded.swept_backlog:,} lapsed consents and unanswered requests{verified}")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def commit() -> str:
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=root).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=root).stdout.strip()
    return head + (" (working tree differs)" if dirty else "")


# -- the run ------------------------------------------------------------------------------

def drop_everything(schemas: list[str], redis_prefix: str, instances: Path) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    client = redis.Redis.from_url(REDIS_URL)
    for pattern in (redis_prefix + "*", f"rq:*{redis_prefix}*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    shutil.rmtree(instances, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consents", type=int, default=1_000_000,
                        help="consents of the large ledger (default 1000000)")
    parser.add_argument("--small", type=int, default=1000,
                        help="consents of the small ledger (default 1000)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the schemas, the instance folders and the Redis keys")
    args = parser.parse_args()
    if args.small < 500 or args.consents <= args.small:
        parser.error("--small must be at least 500 (the sweeps need 120 live consents to make "
                     "lapse) and --consents larger than --small")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # cleaned up like Ctrl-C
    run = uuid.uuid4().hex[:8]
    redis_prefix = f"cdeg-million-{run}:"
    instances = Path(tempfile.mkdtemp(prefix=f"cdeg-million-{run}-"))
    schemas, sites = [], []
    before = uptime()
    print(f"uptime before: {before}", file=sys.stderr)
    try:
        with psycopg.connect(DSN, autocommit=True) as conn:
            for size in (args.small, args.consents):
                schemas.append(f"bench_million_{run}_{size}")
                conn.execute(f'CREATE SCHEMA "{schemas[-1]}"')
        for size, schema in zip((args.small, args.consents), schemas):
            print(f"loading {size:,} consents into {schema} ...", file=sys.stderr)
            sites.append(Site(size, schema, f"{redis_prefix}{size}:", instances / str(size)))
            print(load_summary(sites[-1]), file=sys.stderr)
        for site in sites:
            site.check_log()
        for site in sites:
            site.sign_in()
        print("measuring ...", file=sys.stderr)
        results = measure(sites)
        print(f"\ncommit {commit()}\nuptime before: {before}\nuptime after:  {uptime()}\n")
        for site in sites:
            print(load_summary(site))
        print()
        print(report(results, *sites))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the clean-up is not cut short
        for site in sites:
            site.close()
        if args.keep:
            print(f"kept schemas {', '.join(schemas)} (database postgres), instance folders in "
                  f"{instances}, Redis prefix {redis_prefix}", file=sys.stderr)
        else:
            drop_everything(schemas, redis_prefix, instances)


if __name__ == "__main__":
    main()
