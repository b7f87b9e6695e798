"""The audit log's writers vs connections (issue 7): the old chain head against insert-only.

    python benchmarks/log_writers.py [--seconds 5] [--pairs 2] [--conns 2,4,8,16,32]

PostgreSQL on 127.0.0.1:5432, durable commits (the server's synchronous_commit, on by
default). Writers are processes (multiprocessing, fork), one psycopg 3 connection each, in
autocommit: every entry is one single-statement transaction, committed before the next.
OLD: ``6c75091:gateway/audit/chain.py``'s APPEND_SQL (move the one shared ``audit_head`` row,
insert the chained entry into ``chain_entries``, the old table). NEW: the insert into
``audit_entries`` alone. NEW + sequencer: NEW while one more process integrates pending
entries in batches of 1000 as ``gateway.audit.sequencer.integrate`` does (pausing PAUSE s
after a short batch); the parent samples the backlog's age (now minus the oldest pending
entry's ``at``) every 50 ms. Per connection count and pair: OLD, NEW, NEW + sequencer, each
from empty tables after a CHECKPOINT; entries/s counts commits returned inside the window.
A fresh schema ``bench_<random>`` (the project's migrations plus the old tables by hand) is
dropped at the end. The markdown table goes to stdout, each run to stderr.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit import entries, merkle  # noqa: E402
from gateway.store import db  # noqa: E402

DSN = "postgresql://postgres@127.0.0.1:5432/test"
BATCH, PAUSE, LOCK_SPACE = 1000, 0.1, 0x4C4F47
ITEMS = ["identity.name_en", "identity.hkid", "address.residential", "contact.mobile",
         "employment.status"]

OLD_TABLES = """
CREATE TABLE audit_head (id integer PRIMARY KEY, seq integer NOT NULL,
                         hash varchar(64) NOT NULL, prev_hash varchar(64));
CREATE TABLE chain_entries (
    seq integer PRIMARY KEY, at varchar(32) NOT NULL, event varchar(32) NOT NULL,
    client_id varchar(64), subject varchar(64), consent_id varchar(40), items json NOT NULL,
    route varchar(32), outcome varchar(32) NOT NULL, prev_hash varchar(64) NOT NULL,
    hash varchar(64) NOT NULL);
CREATE INDEX ix_chain_consent ON chain_entries (consent_id);
"""
# 6c75091:gateway/audit/chain.py APPEND_SQL, audit_entries renamed chain_entries
OLD_SQL = """WITH head AS (
    UPDATE audit_head
    SET seq = seq + 1,
        hash = encode(sha256(convert_to(hash || ':' || (seq + 1)::text || ':' || %(body)s,
                                        'UTF8')), 'hex'),
        prev_hash = hash
    WHERE id = 1
    RETURNING seq, prev_hash, hash
)
INSERT INTO chain_entries (seq, at, event, client_id, subject, consent_id, items, route,
                           outcome, prev_hash, hash)
SELECT seq, %(at)s, %(event)s, %(client_id)s, %(subject)s, %(consent_id)s,
       CAST(%(items)s AS JSON), %(route)s, %(outcome)s, prev_hash, hash FROM head
RETURNING seq"""
NEW_SQL = ("INSERT INTO audit_entries (shard, consent_id, event, entry, leaf_hash) "
           "VALUES (%(shard)s, %(consent_id)s, %(event)s, %(entry)s, %(leaf_hash)s)")


def connect(schema: str) -> psycopg.Connection:
    return psycopg.connect(DSN, options=f"-csearch_path={schema}", autocommit=True)


def entry(writer: int, n: int) -> dict:
    """A release as entries.new_entry makes it, ``at`` to the µs; ~340 bytes as JSON."""
    now = time.time()
    e = entries.new_entry(int(now), "data.released", client_id="bank-of-example",
                          subject=f"ppid_{writer:03d}{n % 997:040d}",
                          consent_id=f"cns_{writer:04d}{n:020d}", items=ITEMS, route="api")
    e["at"] = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return e


def wait_start(barrier, start) -> float:
    barrier.wait()
    time.sleep(max(0.0, start.value - time.time()))
    return start.value


def writer(kind, schema, wid, barrier, start, seconds, out):
    conn = connect(schema)
    sql = OLD_SQL if kind == "old" else NEW_SQL
    t0 = wait_start(barrier, start)
    n, end = 0, t0 + seconds
    while True:
        e = entry(wid, n)
        body = entries.body_of(e)
        if kind == "old":
            params = dict(e, items=json.dumps(e["items"]), body=body)
        else:
            params = {"shard": 0, "consent_id": e["consent_id"], "event": e["event"],
                      "entry": body, "leaf_hash": entries.leaf_hash(body)}
        conn.execute(sql, params)
        if time.time() > end:
            break
        n += 1
    out.put(n)
    conn.close()


def integrate(conn: psycopg.Connection) -> int:
    """gateway.audit.sequencer.integrate for shard 0, on one psycopg connection."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
        pending = conn.execute("SELECT id, entry, leaf_hash FROM audit_entries WHERE shard = 0 "
                               "AND leaf_index IS NULL ORDER BY id LIMIT %s", (BATCH,)).fetchall()
        if not pending:
            return 0
        row = conn.execute("SELECT tree_size FROM log_heads WHERE shard = 0").fetchone()

        def get_node(level, idx):
            q = ("SELECT leaf_hash FROM audit_entries WHERE shard = 0 AND leaf_index = %s"
                 if level == 0 else
                 "SELECT hash FROM log_nodes WHERE shard = 0 AND level = %s AND idx = %s")
            args = (idx,) if level == 0 else (level, idx)
            return bytes.fromhex(conn.execute(q, args).fetchone()[0])

        tree = merkle.Frontier.from_nodes(row[0] if row else 0, get_node)
        placed, nodes = [], []
        for eid, body, stored in pending:
            if entries.leaf_hash(body) != stored:
                continue
            placed.append((tree.size, eid))
            for level, idx, value in tree.append(bytes.fromhex(stored)):
                if level > 0:
                    nodes.append((level, idx, value.hex(), (idx + 1) << level))
        with conn.cursor() as cur:
            cur.executemany("UPDATE audit_entries SET leaf_index = %s WHERE id = %s", placed)
            if nodes:
                cur.executemany("INSERT INTO log_nodes (shard, level, idx, hash, span_end) "
                                "VALUES (0, %s, %s, %s, %s)", nodes)
        head = (tree.size, tree.root().hex(), int(time.time()))
        if conn.execute("UPDATE log_heads SET tree_size = %s, root_hash = %s, "
                        "integrated_at = %s WHERE shard = 0", head).rowcount == 0:
            conn.execute("INSERT INTO log_heads (shard, tree_size, root_hash, integrated_at) "
                         "VALUES (0, %s, %s, %s)", head)
    return len(placed)


def sequencer(schema, barrier, start, seconds, out):
    conn = connect(schema)
    t0 = wait_start(barrier, start)
    done = busy = 0.0
    while time.time() < t0 + seconds:
        began = time.time()
        count = integrate(conn)
        busy += time.time() - began
        done += count
        if count < BATCH:
            time.sleep(PAUSE)
    out.put((done, busy))
    conn.close()


def oldest_age(conn) -> float:
    row = conn.execute("SELECT entry FROM audit_entries WHERE shard = 0 AND leaf_index IS NULL "
                       "ORDER BY id LIMIT 1").fetchone()
    if row is None:
        return 0.0
    written = datetime.fromisoformat(json.loads(row[0])["at"].replace("Z", "+00:00"))
    return max(0.0, time.time() - written.timestamp())


def cell(kind: str, schema: str, conns: int, seconds: float, admin) -> dict:
    admin.execute("TRUNCATE audit_entries, log_nodes, log_heads, chain_entries, audit_head "
                  "RESTART IDENTITY")
    admin.execute("INSERT INTO audit_head VALUES (1, 0, %s, NULL)", (db.GENESIS_HASH,))
    admin.execute("CHECKPOINT")
    ctx = mp.get_context("fork")
    seq = kind == "new+seq"
    barrier, start = ctx.Barrier(conns + 1 + seq, timeout=60), ctx.Value("d", 0.0)
    out, seq_out = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=writer, args=("old" if kind == "old" else "new", schema, i,
                                              barrier, start, seconds, out))
             for i in range(conns)]
    if seq:
        procs.append(ctx.Process(target=sequencer, args=(schema, barrier, start, seconds,
                                                         seq_out)))
    for p in procs:
        p.start()
    start.value = time.time() + 0.3
    barrier.wait()
    ages = []
    if seq:
        time.sleep(max(0.0, start.value - time.time()))
        while time.time() < start.value + seconds:
            ages.append(oldest_age(admin))
            time.sleep(0.05)
    total = sum(out.get(timeout=seconds + 60) for _ in range(conns))
    result = {"rate": total / seconds}
    if seq:
        done, busy = seq_out.get(timeout=seconds + 60)
        result.update(seq_rate=done / seconds, seq_capacity=done / busy if busy else 0.0,
                      age_p50=statistics.median(ages), age_max=max(ages))
        result["pending_end"] = admin.execute(
            "SELECT count(*) FROM audit_entries WHERE leaf_index IS NULL").fetchone()[0]
    for p in procs:
        p.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--conns", default="2,4,8,16,32")
    args = parser.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = psycopg.connect(DSN, autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    load_before = os.getloadavg()
    try:
        engine = db.make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test"
                                f"?options=-csearch_path%3D{schema}")
        db.upgrade(engine)
        engine.dispose()
        admin.execute(f'SET search_path TO "{schema}"')
        admin.execute(OLD_TABLES)
        sync = admin.execute("SHOW synchronous_commit").fetchone()[0]
        print(f"schema {schema}, synchronous_commit={sync}, {os.cpu_count()} CPUs, writers "
              f"are processes; {args.seconds:g} s per run, {args.pairs} pairs", file=sys.stderr)
        rows = []
        for conns in [int(c) for c in args.conns.split(",")]:
            runs = {"old": [], "new": [], "new+seq": []}
            for pair in range(1, args.pairs + 1):
                for kind in runs:
                    r = cell(kind, schema, conns, args.seconds, admin)
                    runs[kind].append(r)
                    extra = (f"  sequencer {r['seq_rate']:.0f}/s ({r['seq_capacity']:.0f} per "
                             f"busy s), backlog age p50 {r['age_p50']:.2f} s max "
                             f"{r['age_max']:.2f} s, {r['pending_end']} pending at the end"
                             if kind == "new+seq" else "")
                    print(f"{conns:3d} conns pair {pair} {kind:8s} {r['rate']:8.0f}/s{extra}",
                          file=sys.stderr)
            med = {k: statistics.median(r["rate"] for r in v) for k, v in runs.items()}
            ratio = statistics.median(n["rate"] / o["rate"]
                                      for o, n in zip(runs["old"], runs["new"]))
            s = runs["new+seq"]
            rows.append(f"| {conns} | {med['old']:.0f} | {med['new']:.0f} | {ratio:.2f} | "
                        f"{med['new+seq']:.0f} | "
                        f"{statistics.median(r['seq_rate'] for r in s):.0f} "
                        f"({statistics.median(r['seq_capacity'] for r in s):.0f} per busy s) | "
                        f"{statistics.median(r['age_p50'] for r in s):.2f} / "
                        f"{max(r['age_max'] for r in s):.2f} s |")
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
    print("| connections | OLD entries/s | NEW entries/s | NEW/OLD | NEW + sequencer entries/s "
          "| sequencer entries/s | backlog age p50 / max |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nload average before {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
