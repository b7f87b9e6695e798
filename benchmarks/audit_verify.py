"""How fast the sequencer integrates and `cdeg audit verify` checks a large log, on PostgreSQL.

    python benchmarks/audit_verify.py [--entries N]

Loads N entries (default 100 000) of the gateway's own shape into a fresh schema (bulk
insert, outside the timed parts), then times: the sequencer integrating all of them in batches
of 1000, and a full verify (streamed, one snapshot). Prints entries/s for each and the verify's
peak Python memory (tracemalloc, in a second untimed run). The schema is dropped at the end.
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit import entries, sequencer  # noqa: E402
from gateway.audit.verify import verify  # noqa: E402
from gateway.config import Config  # noqa: E402
from gateway.instance import Gateway  # noqa: E402
from gateway.store.db import audit_entries  # noqa: E402

DSN = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    instance = Path("/tmp") / schema
    try:
        from gateway.store import db
        engine = db.make_engine(url)
        db.upgrade(engine)
        engine.dispose()
        gw = Gateway(Config(instance_dir=instance, issuer="http://bench.test", env="test",
                            database_url=url, redis_url="redis://127.0.0.1:6379/0",
                            redis_prefix=schema + ":", jobs_inline=False))
        rows = []
        for i in range(args.entries):
            body = entries.body_of(entries.new_entry(
                1_800_000_000 + i, "data.released", client_id="bank-of-example",
                subject=f"s{i % 1000:04d}", consent_id=f"cns_{i % 5000:024d}",
                items=["identity.name_en", "identity.hkid"], route="api"))
            rows.append({"shard": 0, "consent_id": f"cns_{i % 5000:024d}",
                         "event": "data.released", "entry": body,
                         "leaf_hash": entries.leaf_hash(body)})
        with gw.db.begin() as conn:
            for start in range(0, len(rows), 10_000):
                conn.execute(audit_entries.insert(), rows[start:start + 10_000])
        t0 = time.perf_counter()
        integrated = sequencer.integrate_all(gw)
        t1 = time.perf_counter()
        del rows
        result = verify(gw)
        t2 = time.perf_counter()
        tracemalloc.start()        # a second, untimed verify: its peak Python memory
        verify(gw)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert integrated == result.entries == args.entries
        print("| entries | sequencer entries/s | verify entries/s | verify peak Python memory |")
        print("|---|---|---|---|")
        print(f"| {args.entries} | {integrated / (t1 - t0):,.0f} | {result.entries / (t2 - t1):,.0f}"
              f" | {peak / 2**20:.1f} MiB |")
        gw.close()
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        import shutil
        shutil.rmtree(instance, ignore_errors=True)


if __name__ == "__main__":
    main()
