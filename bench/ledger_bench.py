"""Ledger benchmark on PostgreSQL: `python -m bench.ledger_bench [--entries N] [--seconds S] [--database D]`.

Uses its own database (`mosaic_bench` unless --database) on the server of DATABASE_URL (created
afresh, dropped at the end unless --keep). Measures: bulk load of N entries (hashes computed in
Python, COPY); signing a checkpoint at N; inclusion and consistency proofs at N from stored
subtrees; then, in the same run and durable commits, events per second with 1 and 8 writer
processes, one event per transaction:
- the previous write path (one advisory lock per append, held until the writer commits; its code
  is kept below as `locked_append`);
- today's path: `record_event` queues a pending event, one sequencer process integrates the queue in
  batches (as `ledger sequence --follow` does) and signs a checkpoint at most once a second; the
  integration lag of every event (its commit ... its batch's commit) is measured;
- the same with the writers sequencing after their own commits (LEDGER_SEQUENCING=after_commit).
Then a second checkpoint (consistency-checked against the first) and a full verify.
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


def locked_append(*, kind: str, payload: dict, actor: str) -> None:
    """The previous write path, verbatim but for the lock key: the sequencer's, so that it can
    never interleave with a batch. Every append holds it until its caller commits."""
    from django.db import connection, transaction
    from django.utils import timezone

    from ledger.canonical import ZERO_HASH, canonical_json, format_time, leaf_data
    from ledger.merkle import leaf_hash, node_hash
    from ledger.services import SEQUENCER_LOCK_KEY

    payload_bytes = canonical_json(payload)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK_KEY])
        cursor.execute("SELECT sequence, entry_hash, leaf_hash FROM ledger_entry ORDER BY sequence DESC LIMIT 1")
        last = cursor.fetchone()
        if last is None:
            sequence, prev_hash, prev_leaf = 0, ZERO_HASH, None
        else:
            sequence, prev_hash, prev_leaf = last[0] + 1, bytes(last[1]), bytes(last[2])
        created_at = timezone.now()
        data = leaf_data(sequence=sequence, kind=kind, payload=payload_bytes, actor=actor,
                         time=format_time(created_at), prev_hash=prev_hash)
        entry_hash, leaf = hashlib.sha256(data).digest(), leaf_hash(data)
        closing = (sequence ^ (sequence + 1)).bit_length() - 1
        stored = {}
        if closing > 1:
            wanted = [(level, (sequence >> level) - 1) for level in range(1, closing)]
            cursor.execute(
                'SELECT "level", "index", "hash" FROM ledger_merklenode WHERE '
                + " OR ".join(['("level" = %s AND "index" = %s)'] * len(wanted)),
                [value for key in wanted for value in key],
            )
            stored = {(level, position): bytes(h) for level, position, h in cursor.fetchall()}
        closed, h = [], leaf
        for level in range(closing):
            left = prev_leaf if level == 0 else stored[(level, (sequence >> level) - 1)]
            h = node_hash(left, h)
            closed.append((level + 1, sequence >> (level + 1), h))
        insert_entry = (
            "INSERT INTO ledger_entry (sequence, kind, payload, actor, created_at, prev_hash, entry_hash, leaf_hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
        )
        entry_values = [sequence, kind, payload_bytes, actor, created_at, prev_hash, entry_hash, leaf]
        if closed:
            insert_nodes = 'INSERT INTO ledger_merklenode ("level", "index", "hash") VALUES ' + ", ".join(
                ["(%s, %s, %s)"] * len(closed)
            )
            cursor.execute(f"WITH nodes AS ({insert_nodes}) {insert_entry}",
                           [value for node in closed for value in node] + entry_values)
        else:
            cursor.execute(insert_entry, entry_values)


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
    from django.conf import settings

    settings.LEDGER_SEQUENCING = "background"  # each run below says who sequences


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


PATHS = {
    "bare": "PostgreSQL alone: the same prepared INSERT of a constant event from psycopg, no Django, no hashing, "
            "no sequencer (what the machine allows at that moment)",
    "writers_only": "record_event with no sequencer running (the queue is integrated afterwards, timed alone)",
    "locked": "previous path: one advisory lock per append, held to the writer's commit",
    "queued": "queued events + one sequencer process (batches, checkpoint <= 1/s)",
    "after_commit": "queued events, each writer sequencing after its own commits",
}


SEQUENCER_INTERVAL = 0.05  # `ledger sequence --follow`'s default

RUNS = (("bare", 8), ("writers_only", 8), ("locked", 1), ("locked", 8), ("queued", 1), ("queued", 8), ("after_commit", 8))


def _writer(path: str, seconds: float, barrier, counts, slot: int) -> None:
    from django.conf import settings
    from django.db import connections

    from ledger.services import record_event

    append = {"locked": locked_append, "bare": _bare_append()}.get(path, record_event)
    settings.LEDGER_SEQUENCING = "after_commit" if path == "after_commit" else "background"
    append(kind="usage.recorded", payload={"warmup": slot}, actor=f"bench:{slot}")
    barrier.wait()
    deadline, done = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        append(kind="usage.recorded", payload={"writer": slot, "i": done}, actor=f"bench:{slot}")
        done += 1
    counts[slot] = done
    connections.close_all()


BARE_TABLES = {"ledger_pendingevent": "bench_bare_pendingevent", "ledger_unsequencedevent": "bench_bare_unsequencedevent"}


def _bare_append():
    """The floor under record_event: its INSERT statement, prepared, on a plain autocommit psycopg
    connection, with constant values (no content hash computed), into copies of its two tables with
    their indexes (so that the ledger's own queue holds only events to integrate)."""
    import psycopg
    from django.utils import timezone

    from ledger.services import QUEUE_EVENT_SQL

    statement = QUEUE_EVENT_SQL
    for table, copy in BARE_TABLES.items():
        statement = statement.replace(table, copy)
    conn = psycopg.connect(f"{_server_url()}/{BENCH_DB}", autocommit=True)
    values = ["usage.recorded", b'{"i":0,"writer":0}', "bench:0", timezone.now(), bytes(32)]

    def append(**_):
        conn.execute(statement, values, prepare=True).fetchone()

    return append


def _sequencer(stop, lags_out) -> None:
    """`ledger sequence --follow` (ledger.services.follow_queue), recording each event's lag: its batch's
    commit minus the event's time (taken just before its writer's INSERT, so the lag includes the writer's
    own commit)."""
    from django.db import connections

    from ledger.services import follow_queue

    lags = []

    def measure(batch):
        committed = time.time()
        lags.extend(committed - entry.created_at.timestamp() for entry in batch)

    follow_queue(interval=SEQUENCER_INTERVAL, should_stop=stop.is_set, on_batch=measure)
    lags_out.put(lags)
    connections.close_all()


def appends(path: str, writers: int, seconds: float) -> dict:
    from django.db import connections

    from ledger.models import UnsequencedEvent

    connections.close_all()
    load_before = [round(x, 2) for x in os.getloadavg()]
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(writers + 1)
    counts = context.Array("l", writers)
    processes = [context.Process(target=_writer, args=(path, seconds, barrier, counts, w)) for w in range(writers)]
    stop, lags_out = context.Event(), context.Queue()
    sequencer = context.Process(target=_sequencer, args=(stop, lags_out)) if path == "queued" else None
    if sequencer:
        sequencer.start()
    for process in processes:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    assert all(p.exitcode == 0 for p in processes), "a writer failed"
    total = sum(counts)
    run = {"path": path, "writers": writers, "synchronous_commit": True, "events": total,
           "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
           "seconds": round(elapsed, 2), "events_per_second": round(total / elapsed, 1)}
    if sequencer:
        stop.set()
        lags = sorted(lags_out.get(timeout=600))
        sequencer.join()
        run["integration_lag_ms"] = {
            "median": round(statistics.median(lags) * 1000, 1),
            "p99": round(lags[int(len(lags) * 0.99) - 1] * 1000, 1),
            "max": round(lags[-1] * 1000, 1),
            "events": len(lags),
        }
    run["left_unsequenced"] = UnsequencedEvent.objects.count()
    if path == "writers_only":  # the sequencer alone on the queue they left, as `ledger sequence` would
        from ledger.services import sequence_pending

        queued = run["left_unsequenced"]
        started = time.perf_counter()
        assert sequence_pending(wait=True) == queued
        elapsed = time.perf_counter() - started
        run["sequencer_alone"] = {"events": queued, "seconds": round(elapsed, 2),
                                  "events_per_second": round(queued / elapsed, 1)}
    connections.close_all()
    return run


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def main() -> None:
    global BENCH_DB
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each append run")
    parser.add_argument("--samples", type=int, default=300, help="proofs timed per kind")
    parser.add_argument("--database", default=BENCH_DB, help="the benchmark's own database (created afresh)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--api-clients", type=int, default=16, help="concurrent /v1/completions clients")
    parser.add_argument("--api-seconds", type=float, default=10.0,
                        help="seconds of /v1/completions per ledger path (0: skip that part)")
    parser.add_argument("--runs", default=",".join(f"{path}:{writers}" for path, writers in RUNS),
                        help="append runs, path:writers, comma-separated (paths: " + ", ".join(PATHS) + ")")
    args = parser.parse_args()
    BENCH_DB = args.database

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
        for table, copy in BARE_TABLES.items():
            cursor.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
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
    runs = []
    for run in args.runs.split(","):
        path, _, writers = run.partition(":")
        if path not in PATHS or not writers.isdigit() or not 1 <= int(writers) <= 64:
            parser.error(f"--runs: {run!r} is not path:writers (a path of {', '.join(PATHS)}; 1 to 64 writers)")
        runs.append((path, int(writers)))
    for path, writers in runs:
        print(f"appending: {PATHS[path]}, {writers} writer(s), durable ...", flush=True)
        results["appends"].append(appends(path, writers, args.seconds))
    from ledger.services import sequence_pending

    sequence_pending()
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

    if args.api_seconds > 0:
        from bench.api_bench import completions_by_ledger_path

        print(f"/v1/completions, {args.api_clients} clients, per ledger path ...", flush=True)
        results["completions"] = completions_by_ledger_path(
            database_url=f"{_server_url()}/{BENCH_DB}_api", clients=args.api_clients, seconds=args.api_seconds,
            workers=2,
        )
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
        f"{machine['load_average_at_start']}), Python {machine['python']}. One event per transaction, "
        "durable commits (synchronous_commit on); every path measured in the same run, one after another. "
        "The 2 cores are shared with other people's test runs, and the writers, the sequencer and "
        "PostgreSQL share them too.",
        "",
    ]
    load = machine["load_average_at_start"][0]
    if load > machine["cpus"]:
        lines += [
            f"**The machine was loaded: load average {load} on {machine['cpus']} cores at the start** (each append "
            "row gives the load before and after it). The rates below are what this run got of the machine at "
            "that moment, not what the code can do on it: the row \"PostgreSQL alone\" is the ceiling that "
            "moment allowed (a bare prepared INSERT per durable transaction, no Django, no sequencer), and "
            "the queued path's ratio to it is the figure to compare across runs.",
            "",
        ]
    lines += [
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
        goal = ">= 5,000/s" if run["writers"] == 8 and run["path"] in ("queued", "after_commit") else ""
        lines.append(
            f"| events/s committed, {run['writers']} writer(s), durable; {PATHS[run['path']]} | "
            f"{run['events_per_second']:,} ({run['events']:,} in {run['seconds']} s; load average "
            f"{run['load_average_before'][0]} before, {run['load_average_after'][0]} after) | {goal} |"
        )
        if "sequencer_alone" in run:
            alone = run["sequencer_alone"]
            lines.append(
                f"| then the sequencer alone on those {alone['events']:,} queued events (batches, one transaction "
                f"each, durable) | {alone['events_per_second']:,} ({alone['seconds']} s) | |"
            )
        if "integration_lag_ms" in run:
            lag = run["integration_lag_ms"]
            lines.append(
                f"| integration lag of those {lag['events']:,} events (median / p99 / max) | "
                f"{lag['median']:,} / {lag['p99']:,} / {lag['max']:,} ms | p99 <= 1,000 ms |"
            )
    by_path = {(run["path"], run["writers"]): run["events_per_second"] for run in results["appends"]}
    if ("locked", 8) in by_path and ("queued", 8) in by_path:
        lines.append(
            f"| 8 writers: queued path / previous path | {by_path[('queued', 8)] / by_path[('locked', 8)]:.1f}x | |"
        )
    if ("bare", 8) in by_path and ("queued", 8) in by_path:
        lines.append(
            f"| 8 writers: queued path / PostgreSQL alone | {by_path[('queued', 8)] / by_path[('bare', 8)]:.2f} | |"
        )
    second = results["second_checkpoint"]
    lines.append(f"| consistency-checked checkpoint at {second['tree_size']:,} | {second['ms']} ms | |")
    v = results["verify"]
    lines.append(
        f"| full verify of {v['entries']:,} entries, {v['checkpoints']} checkpoints | {v['seconds']} s "
        f"({'OK' if v['ok'] else 'FAILED: ' + v['message']}) | <= 60 s |"
    )
    if "completions" in results:
        from bench.api_bench import LEDGER_PATHS

        for path, run in results["completions"].items():
            lines.append(
                f"| POST /v1/completions on the toy model, {run['clients']} clients, gunicorn 2 workers; "
                f"{LEDGER_PATHS[path]} | {run['req_per_s']:,} req/s ({run['requests_ok']:,} ok in {run['wall_s']} s; "
                f"p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms; load average {run['load_average_before']}) | |"
            )
        by_path = {path: run["req_per_s"] for path, run in results["completions"].items()}
        if by_path.get("inline"):
            for path in ("after_commit", "background"):
                if path in by_path:
                    lines.append(f"| /v1/completions requests/s: {path} / inline (before) | "
                                 f"{by_path[path] / by_path['inline']:.2f} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
