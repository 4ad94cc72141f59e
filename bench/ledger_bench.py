"""Ledger benchmark on PostgreSQL: `python -m bench.ledger_bench [--entries N] [--seconds S]`.

Uses its own database `mosaic_bench` on the server of DATABASE_URL (created afresh, dropped at
the end unless --keep). Measures: bulk load of N entries (hashes computed in Python, COPY);
signing a checkpoint at N; inclusion and consistency proofs at N from stored subtrees; appends per
second with 1 and 8 writer processes, one entry per transaction, durable and asynchronous
commits; a second checkpoint (consistency-checked against the first); full verify.
Writes bench/results/ledger.json and bench/results/ledger.md.
"""
import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import platform
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH_DB = "mosaic_bench"
RESULTS = Path(__file__).parent / "results"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mosaic")
    if not url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("The ledger benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    return url.rsplit("/", 1)[0]


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_server_url() + "/postgres", autocommit=True) as conn:
        conn.execute(sql)


def setup_django() -> None:
    os.environ["DATABASE_URL"] = f"{_server_url()}/{BENCH_DB}"
    os.environ["LEDGER_SIGNING_KEY"] = base64.b64encode(os.urandom(32)).decode()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mosaic.settings")
    import django

    django.setup()


def bulk_load(count: int) -> float:
    """Entries 0..count-1 and their complete subtrees, computed here and written with COPY."""
    import psycopg
    from django.conf import settings

    from ledger.canonical import ZERO_HASH, canonical_json, format_time, leaf_data
    from ledger.merkle import CompactRange, leaf_hash

    dsn = f"{_server_url()}/{BENCH_DB}"
    started = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    tree, prev = CompactRange(), ZERO_HASH
    with psycopg.connect(dsn) as entries_conn, psycopg.connect(dsn) as nodes_conn:
        with entries_conn.cursor().copy(
            "COPY ledger_entry (sequence, kind, payload, actor, created_at, prev_hash, entry_hash, leaf_hash) FROM STDIN"
        ) as entries, nodes_conn.cursor().copy('COPY ledger_merklenode ("level", "index", "hash") FROM STDIN') as nodes:
            for i in range(count):
                kind = "usage.recorded" if i % 5 else "credit.allocated"
                actor = f"org:{i % 97}"
                payload = canonical_json({"system": f"system:{i % 13}", "tokens": 100 + i % 900, "usage": f"usage:{i}"})
                moment = base + timedelta(microseconds=i * 37)
                data = leaf_data(sequence=i, kind=kind, payload=payload, actor=actor, time=format_time(moment), prev_hash=prev)
                digest, leaf = hashlib.sha256(data).digest(), leaf_hash(data)
                entries.write_row((i, kind, payload, actor, moment, prev, digest, leaf))
                for node in tree.append(leaf):
                    nodes.write_row(node)
                prev = digest
        nodes_conn.commit()
        entries_conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE ledger_entry")
        conn.execute("ANALYZE ledger_merklenode")
        try:  # write the bulk load's dirty pages now, not during the append runs (needs a superuser)
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass
    assert settings.DATABASES["default"]["NAME"] == BENCH_DB
    return time.perf_counter() - started


def _timings_ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "samples": len(ordered),
    }


def proofs(size: int, samples: int) -> dict:
    from ledger import merkle, stored_tree
    from ledger.models import Checkpoint

    root = bytes(Checkpoint.objects.order_by("-id").first().root_hash)
    rng = random.Random(7)
    inclusion, consistency = [], []
    from ledger.selectors import entry_get, entry_leaf_data

    for _ in range(samples):
        index = rng.randrange(size)
        started = time.perf_counter()
        proof = stored_tree.inclusion_proof(index, size)
        inclusion.append(time.perf_counter() - started)
        assert merkle.verify_inclusion(entry_leaf_data(entry_get(sequence=index)), index, size, proof, root)
    for _ in range(samples):
        old = rng.randrange(1, size)
        started = time.perf_counter()
        proof = stored_tree.consistency_proof(old, size)
        consistency.append(time.perf_counter() - started)
        assert merkle.verify_consistency(old, size, stored_tree.root(old), root, proof)
    return {"inclusion": _timings_ms(inclusion), "consistency": _timings_ms(consistency)}


def _writer(seconds: float, synchronous: bool, barrier, counts, slot: int) -> None:
    from django.conf import settings
    from django.db import connections

    from ledger.services import record_event

    settings.LEDGER_SYNCHRONOUS_COMMIT = synchronous
    record_event(kind="usage.recorded", payload={"warmup": slot}, actor=f"bench:{slot}")
    barrier.wait()
    deadline, done = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        record_event(kind="usage.recorded", payload={"writer": slot, "i": done}, actor=f"bench:{slot}")
        done += 1
    counts[slot] = done
    connections.close_all()


def appends(writers: int, seconds: float, synchronous: bool) -> dict:
    from django.db import connections

    connections.close_all()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(writers + 1)
    counts = context.Array("l", writers)
    processes = [context.Process(target=_writer, args=(seconds, synchronous, barrier, counts, w)) for w in range(writers)]
    for process in processes:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    assert all(p.exitcode == 0 for p in processes), "a writer failed"
    total = sum(counts)
    return {"writers": writers, "synchronous_commit": synchronous, "appends": total,
            "seconds": round(elapsed, 2), "appends_per_second": round(total / elapsed, 1)}


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each append run")
    parser.add_argument("--samples", type=int, default=300, help="proofs timed per kind")
    parser.add_argument("--keep", action="store_true", help="keep the mosaic_bench database")
    args = parser.parse_args()

    _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    _admin(f"CREATE DATABASE {BENCH_DB}")
    setup_django()
    from django.core.management import call_command
    from django.db import connection, connections

    from ledger import stored_tree
    from ledger.services import create_checkpoint
    from ledger.verification import verify_database

    call_command("migrate", "ledger", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "postgresql": server},
        "entries": args.entries,
    }
    print(f"bulk-loading {args.entries:,} entries ...", flush=True)
    results["bulk_load_seconds"] = round(bulk_load(args.entries), 1)
    connections.close_all()
    checkpoint, seconds = timed(create_checkpoint)
    assert checkpoint.tree_size == args.entries
    results["checkpoint_at_n_ms"] = round(seconds * 1000, 1)
    print("timing proofs ...", flush=True)
    results["proofs_at_n"] = proofs(args.entries, args.samples)
    results["appends"] = []
    for synchronous in (True, False):
        for writers in (1, 8):
            print(f"appending: {writers} writer(s), synchronous_commit={'on' if synchronous else 'off'} ...", flush=True)
            results["appends"].append(appends(writers, args.seconds, synchronous))
    second, seconds = timed(create_checkpoint)
    results["second_checkpoint"] = {"tree_size": second.tree_size, "ms": round(seconds * 1000, 1)}
    print(f"verifying {second.tree_size:,} entries ...", flush=True)
    outcome, seconds = timed(verify_database, extra_checks=False)
    results["verify"] = {"entries": outcome.entries, "checkpoints": outcome.checkpoints, "ok": outcome.ok,
                         "message": outcome.message, "seconds": round(seconds, 1)}
    assert stored_tree.tree_size() == second.tree_size
    connections.close_all()
    if not args.keep:
        _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")

    table = render(results)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ledger.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "ledger.md").write_text(table + "\n")


def render(results: dict) -> str:
    n = results["entries"]
    machine = results["machine"]
    lines = [
        "# Ledger benchmark",
        "",
        f"PostgreSQL {machine['postgresql']}, {machine['cpus']} CPUs (load average at start "
        f"{machine['load_average_at_start']}), Python {machine['python']}. One entry per transaction for appends.",
        "",
        "| measure | result | goal |",
        "|---|---|---|",
        f"| bulk load of {n:,} entries (hashes in Python, COPY) | {results['bulk_load_seconds']} s | |",
        f"| sign a checkpoint at {n:,} | {results['checkpoint_at_n_ms']} ms | |",
    ]
    for kind in ("inclusion", "consistency"):
        t = results["proofs_at_n"][kind]
        lines.append(
            f"| {kind} proof at {n:,} (median / p95 / max of {t['samples']}) | "
            f"{t['median_ms']} / {t['p95_ms']} / {t['max_ms']} ms | <= 5 ms |"
        )
    for run in results["appends"]:
        mode = "durable (synchronous_commit on)" if run["synchronous_commit"] else "asynchronous commit"
        goal = ">= 2,000/s" if run["writers"] == 8 else ""
        lines.append(
            f"| appends/s, {run['writers']} writer(s), {mode} | {run['appends_per_second']:,} "
            f"({run['appends']:,} in {run['seconds']} s) | {goal} |"
        )
    second = results["second_checkpoint"]
    lines.append(f"| consistency-checked checkpoint at {second['tree_size']:,} | {second['ms']} ms | |")
    v = results["verify"]
    lines.append(
        f"| full verify of {v['entries']:,} entries, {v['checkpoints']} checkpoints | {v['seconds']} s "
        f"({'OK' if v['ok'] else 'FAILED: ' + v['message']}) | <= 60 s |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
