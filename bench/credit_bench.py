"""Credit benchmark (issues 7 and 20), on PostgreSQL in its own database (`mosaic_bench_credit`, or
CREDIT_BENCH_DATABASE) and a copy of it (`<that name>_reference`).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mosaic python -m bench.credit_bench

1. Allocation of 1,000,000 usage records across 1,000 experts of 500 contributors (50 systems of
   20 experts, 1 to 3 experts attributed per request, measured shares for every expert), twice on the same
   records: by the allocation before issue 20 (bench/credit_reference.py, on a copy of the loaded database
   with its old `allocated` column added back) and by the current one (marketplace/credit/allocation.py).
   Both must write the same credit lines (compared by a checksum over every line).
2. Closing a period for 10,000 contributors (9,500 more contributors with one expert each and
   50,000 more requests, then allocation and the close: statements and payouts for everyone).
Rows are bulk-loaded with COPY. Prints a table; writes bench/results/credit.json and credit.md.
Sizes can be lowered for a quick run: CREDIT_BENCH_USAGE, CREDIT_BENCH_CONTRIBUTORS.
"""
import json
import os
import platform
import random
import sys
import time
from datetime import date, datetime, timedelta, timezone as dt_timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BENCH_DB = os.environ.get("CREDIT_BENCH_DATABASE", "mosaic_bench_credit")
RESULTS = Path(__file__).resolve().parent / "results"
USAGE = int(os.environ.get("CREDIT_BENCH_USAGE", 1_000_000))
CLOSE_CONTRIBUTORS = int(os.environ.get("CREDIT_BENCH_CONTRIBUTORS", 10_000))
EXPERTS, CONTRIBUTORS, SYSTEMS = 1_000, 500, 50
OCTOBER = date(2026, 10, 1)


def _bench_database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("The credit benchmark runs on PostgreSQL: set DATABASE_URL=postgres://user@host:port/any")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{BENCH_DB}"))


def _recreate_database(url: str, name: str, template: str | None = None) -> None:
    import psycopg

    admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))


def _drop_database(url: str, name: str) -> None:
    import psycopg

    admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


LINES_CHECKSUM = """
SELECT COUNT(*), SUM(amount_minor),
       SUM(hashtext(usage_id || ':' || COALESCE(expert_id, 0) || ':' || COALESCE(contributor_id, 0) || ':'
                    || amount_minor)::bigint)
FROM marketplace_creditline
"""


def _allocate_timed(label: str, allocate, phase_of, wrap_phases=()) -> dict:
    """Run one allocation of every pending usage, timing it and its phases (SQL statements classified by
    `phase_of`; functions in `wrap_phases`, (module, attribute, phase), timed around each call)."""
    from django.db import connection

    phases: dict[str, float] = {}

    def trace(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            phase = phase_of(sql)
            if phase:
                phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - started

    originals = []
    for module, attribute, phase in wrap_phases:
        original = getattr(module, attribute)
        originals.append((module, attribute, original))

        def timed(*args, _original=original, _phase=phase, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                phases[_phase] = phases.get(_phase, 0.0) + time.perf_counter() - started

        setattr(module, attribute, timed)
    try:
        load_before = round(os.getloadavg()[0], 2)
        with connection.execute_wrapper(trace):
            started = time.perf_counter()
            run = allocate(batch_size=100_000)
            seconds = time.perf_counter() - started
        load_after = round(os.getloadavg()[0], 2)
    finally:
        for module, attribute, original in originals:
            setattr(module, attribute, original)
    phases["everything else"] = seconds - sum(phases.values())
    with connection.cursor() as cursor:
        cursor.execute(LINES_CHECKSUM)
        count, total, checksum = cursor.fetchone()
    print(f"  {label}: {seconds:.2f} s ({run.usage_count} usage, {run.batches} batches, {count} lines); "
          f"load {load_before} -> {load_after}", flush=True)
    for name, value in phases.items():
        print(f"    {name}: {value:.2f} s", flush=True)
    return {
        "seconds": round(seconds, 2),
        "phases_s": {name: round(value, 2) for name, value in phases.items()},
        "usage": run.usage_count,
        "batches": run.batches,
        "credit_lines": count,
        "lines_total_minor": int(total or 0),
        "lines_checksum": int(checksum or 0),
        "load_average_before": load_before,
        "load_average_after": load_after,
    }


def _copy(cursor, table: str, columns: list[str], rows) -> None:
    with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _timed(label: str, results: dict, fn):
    started = time.perf_counter()
    value = fn()
    results[label] = round(time.perf_counter() - started, 2)
    print(f"  {label}: {results[label]} s", flush=True)
    return value


def _load_world(cursor, *, contributors: int, experts_per_contributor: int, first_user: int, systems: int,
                experts_per_system: int, payouts_enabled: bool) -> tuple[list[int], dict[int, list[int]]]:
    """Users, contributors, experts (with a valid version), systems, members and measurements."""
    now = datetime.now(dt_timezone.utc)
    rng = random.Random(first_user)
    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM auth_user")
    user0 = cursor.fetchone()[0]
    _copy(cursor, "auth_user", ["id", "password", "is_superuser", "username", "first_name", "last_name", "email",
                                "is_staff", "is_active", "date_joined"],
          ((user0 + i + 1, "!", False, f"bench{first_user + i}", "", "", f"bench{first_user + i}@example.org", False,
            True, now) for i in range(contributors)))
    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM marketplace_contributor")
    contributor0 = cursor.fetchone()[0]
    # What a payout needs besides Stripe: a verified email and an authenticator (marketplace.services.security).
    _copy(cursor, "marketplace_contributor", ["id", "user_id", "display_name", "bio", "priorities", "stripe_account_id",
                                              "payouts_enabled", "verified_email", "created_at"],
          ((contributor0 + i + 1, user0 + i + 1, f"Bench {first_user + i}", "", "[]",
            f"acct_bench{first_user + i}", payouts_enabled, f"bench{first_user + i}@example.org", now)
           for i in range(contributors)))
    _copy(cursor, "otp_totp_totpdevice", ["user_id", "name", "confirmed", "throttling_failure_count", "created_at",
                                          "key", "step", "t0", "digits", "tolerance", "drift", "last_t"],
          ((user0 + i + 1, "bench", True, 0, now, "00" * 20, 30, 0, 6, 1, 0, -1) for i in range(contributors)))
    cursor.execute("SELECT id FROM marketplace_basemodel LIMIT 1")
    base = cursor.fetchone()
    if base is None:
        cursor.execute(
            "INSERT INTO marketplace_basemodel (name, local_path, architecture, hidden_size, num_layers, vocab_size, "
            "module_shapes, content_hash, created_at, chat_template, end_token_ids, license) "
            "VALUES ('bench-base', '/none', 'llama', 128, 4, 96, '{}', %s, %s, '', '[]', '') "
            "RETURNING id", ["0" * 64, now])
        base = cursor.fetchone()
    base_id = base[0]
    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM marketplace_expert")
    expert0 = cursor.fetchone()[0]
    expert_ids = [expert0 + i + 1 for i in range(contributors * experts_per_contributor)]
    _copy(cursor, "marketplace_expert", ["id", "owner_id", "slug", "name", "description", "tags", "priorities",
                                         "base_model_id", "is_public", "created_at"],
          ((e, contributor0 + 1 + (e - expert0 - 1) // experts_per_contributor, f"e{e}", f"Expert {e}", "", "[]", "[]",
            base_id, True, now) for e in expert_ids))
    _copy(cursor, "marketplace_expertversion", ["id", "expert_id", "number", "sha256", "storage_path", "size_bytes",
                                                "model_card", "card_metadata", "adapter_config", "target_modules",
                                                "status", "failure_reason", "created_at"],
          ((e, e, 1, f"{e:064x}", f"/none/{e}", 0, "", "{}", "{}", "[]", "valid", "", now) for e in expert_ids))
    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM marketplace_composedsystem")
    system0 = cursor.fetchone()[0]
    system_ids = [system0 + i + 1 for i in range(systems)]
    _copy(cursor, "marketplace_composedsystem", ["id", "slug", "name", "description", "base_model_id", "strategy",
                                                 "strategy_config", "attribution_alpha_bp", "on_revocation", "status",
                                                 "quality", "license_summary", "created_at", "updated_at"],
          ((s, f"bench-system-{s}", f"System {s}", "", base_id, "routing", "{}", 5000, "run_without", "active", "{}",
            "{}", now, now) for s in system_ids))
    members: dict[int, list[int]] = {}
    for index, system in enumerate(system_ids):
        members[system] = expert_ids[index * experts_per_system:(index + 1) * experts_per_system]
    _copy(cursor, "marketplace_systemexpert", ["system_id", "expert_id", "version_id", "position"],
          ((s, e, e, p) for s, es in members.items() for p, e in enumerate(es)))
    _copy(cursor, "marketplace_contributionmeasurement", ["system_id", "expert_id", "method", "metric", "dataset_hash",
                                                          "value", "share_bp", "samples", "std_error", "measured_at"],
          ((s, e, "shapley_mc", "exact_match", "0" * 64, "0", rng.randint(0, 2000), 200, "", now)
           for s, es in members.items() for e in es))
    return system_ids, members


def _load_usage(cursor, *, count: int, members: dict[int, list[int]], organizations: list[int], seed: int,
                max_experts: int) -> None:
    rng = random.Random(seed)
    systems = list(members)
    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM marketplace_usage")
    usage0 = cursor.fetchone()[0]

    def rows():
        for i in range(count):
            system = systems[i % len(systems)]
            chosen = rng.sample(members[system], rng.randint(1, min(max_experts, len(members[system]))))
            raw = [rng.randint(1, 1000) for _ in chosen]
            total = sum(raw)
            attribution = {str(e): f"{w / total:.6f}" for e, w in zip(chosen, raw)}
            # Ids follow arrival time, as they do in production: spread evenly over October.
            created = datetime.combine(OCTOBER, datetime.min.time(), tzinfo=dt_timezone.utc)
            created += timedelta(seconds=i * (31 * 86_400 - 1) // count)
            tokens = rng.randint(10, 600)
            yield (f"bench-{usage0 + i + 1}", rng.choice(organizations), system, tokens // 3, tokens - tokens // 3,
                   rng.randint(5, 900), 0, json.dumps(attribution), tokens * 2, False, created)

    _copy(cursor, "marketplace_usage", ["request_id", "organization_id", "system_id", "prompt_tokens",
                                        "completion_tokens", "latency_ms", "engine_ms", "attribution", "charge_minor",
                                        "reported_to_stripe", "created_at"], rows())


def main() -> None:
    url = _bench_database_url()
    _recreate_database(url, BENCH_DB)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mosaic.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from ledger.accounting.selectors import balances
    from ledger.accounting.verification import check_balances
    from marketplace.credit.allocation import allocate_pending_usage
    from marketplace.credit.settlement import close_period
    from marketplace.models import Usage

    results: dict = {}
    print(f"credit benchmark on {BENCH_DB}: migrating", flush=True)
    call_command("migrate", verbosity=0)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO marketplace_organization (name, slug, is_commercial, domains, stripe_customer_id, "
                       "created_at) SELECT 'Org ' || g, 'org-' || g, true, '[]', '', now() FROM generate_series(1, 20) g "
                       "RETURNING id")
        organizations = [row[0] for row in cursor.fetchall()]
        print(f"loading {CONTRIBUTORS} contributors, {EXPERTS} experts, {SYSTEMS} systems, {USAGE} usage rows (COPY)",
              flush=True)
        _, members = _timed("load_world_s", results, lambda: _load_world(
            cursor, contributors=CONTRIBUTORS, experts_per_contributor=EXPERTS // CONTRIBUTORS, first_user=0,
            systems=SYSTEMS, experts_per_system=EXPERTS // SYSTEMS, payouts_enabled=True))
        _timed("load_usage_s", results, lambda: _load_usage(
            cursor, count=USAGE, members=members, organizations=organizations, seed=1, max_experts=3))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    # The same records, allocated by the old code on a copy of the database (its `allocated` column back) and then
    # by the current code here.
    reference_db = f"{BENCH_DB}_reference"
    connection.close()
    _recreate_database(url, reference_db, template=BENCH_DB)
    connection.settings_dict["NAME"] = reference_db
    from bench import credit_reference

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE marketplace_usage ADD COLUMN allocated boolean NOT NULL DEFAULT false")
    print("allocating with the old code (bench/credit_reference.py)", flush=True)
    old = _allocate_timed(
        "old", credit_reference.allocate_pending_usage,
        lambda sql: ("credit lines (INSERT ... SELECT)" if "INSERT INTO \"marketplace_creditline\"" in sql
                     else "mark usage allocated (UPDATE)" if sql.lstrip().startswith("UPDATE \"marketplace_usage\"")
                     else None),
    )
    connection.close()
    _drop_database(url, reference_db)
    connection.settings_dict["NAME"] = BENCH_DB

    from marketplace.credit import allocation

    print("allocating with the current code (marketplace/credit/allocation.py)", flush=True)
    new = _allocate_timed(
        "new", allocate_pending_usage,
        lambda sql: "choose the batch (SELECT ... LIMIT)" if "SELECT MAX(id)" in sql else None,
        wrap_phases=[(allocation, "_fetch_columns", "read the batch (one SELECT, rows packed by int8send)"),
                     (allocation, "allocate_batch", "compute the lines (numpy)"),
                     (allocation, "_write_lines", "write credit lines (COPY FROM)")],
    )
    if (old["credit_lines"], old["lines_total_minor"], old["lines_checksum"]) != (
            new["credit_lines"], new["lines_total_minor"], new["lines_checksum"]):
        sys.exit(f"The two allocations wrote different credit lines: old {old}, new {new}")
    results["allocate_old"] = old
    results["allocate_new"] = new
    results["allocate_speedup"] = round(old["seconds"] / new["seconds"], 2)
    results["allocate_1m_s"] = new["seconds"]
    results["allocated_usage"] = new["usage"]
    results["allocation_batches"] = new["batches"]
    results["credit_lines"] = new["credit_lines"]
    results["allocate_usage_per_s"] = round(new["usage"] / new["seconds"])
    again = _timed("allocate_again_s", results, lambda: allocate_pending_usage(batch_size=100_000))
    results["allocate_again_usage"] = again.usage_count

    more = CLOSE_CONTRIBUTORS - CONTRIBUTORS
    print(f"loading {more} more contributors with one expert each, {more * 5} more usage rows", flush=True)
    with transaction.atomic(), connection.cursor() as cursor:
        _, members_more = _load_world(cursor, contributors=more, experts_per_contributor=1, first_user=CONTRIBUTORS,
                                      systems=max(1, more // 100), experts_per_system=100, payouts_enabled=True)
        _load_usage(cursor, count=more * 5, members=members_more, organizations=organizations, seed=2, max_experts=2)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    _timed("allocate_more_s", results, lambda: allocate_pending_usage(batch_size=100_000))
    print("closing October", flush=True)
    closed = _timed("close_period_s", results, lambda: close_period(start=OCTOBER, end=date(2026, 10, 31)))
    results["close_statements"] = closed.statements
    results["close_payouts"] = closed.payouts
    results["close_paid_out_minor"] = closed.paid_out_minor
    _timed("close_again_s", results, lambda: close_period(start=OCTOBER, end=date(2026, 10, 31)))
    check = _timed("verify_balances_s", results, check_balances)
    results["verify_balances_ok"] = check.ok
    results["unallocated_left"] = Usage.objects.unallocated().count()
    results["platform_revenue_minor"] = -balances(prefix="platform:revenue").get("platform:revenue", 0)

    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "postgres": connection.cursor().connection.info.server_version}
    results["sizes"] = {"usage": USAGE, "experts": EXPERTS, "contributors": CONTRIBUTORS, "systems": SYSTEMS,
                        "close_contributors": CLOSE_CONTRIBUTORS}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "credit.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    size = f"{USAGE:,}"
    rows = [
        (f"allocate {size} usage (1,000 experts, 500 contributors)", "", "", "goal <= 20 s"),
        ("  total", f"{old['seconds']} s", f"{new['seconds']} s", f"{results['allocate_speedup']}x faster"),
        *((f"  of which {name}", f"{seconds} s", "", "") for name, seconds in old["phases_s"].items()),
        *((f"  of which {name}", "", f"{seconds} s", "") for name, seconds in new["phases_s"].items()),
        ("  usage allocated / batches", f"{old['usage']} / {old['batches']}", f"{new['usage']} / {new['batches']}", ""),
        ("  credit lines (same checksum)", f"{old['credit_lines']}", f"{new['credit_lines']}", "identical"),
        ("  1-minute load average before -> after", f"{old['load_average_before']} -> {old['load_average_after']}",
         f"{new['load_average_before']} -> {new['load_average_after']}", ""),
        ("allocate again (idempotent)", "", f"{results['allocate_again_s']} s", f"{results['allocate_again_usage']} usage"),
        (f"close a period for {closed.statements} contributors", "", f"{results['close_period_s']} s",
         f"{closed.payouts} payouts"),
        ("close the same period again", "", f"{results['close_again_s']} s", "no-op"),
        ("recompute every balance from the ledger", "", f"{results['verify_balances_s']} s",
         "ok" if check.ok else check.message),
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"| {a.ljust(width)} | {b:>16} | {c:>16} | {d} |" for a, b, c, d in rows)
    header = (f"| {'step'.ljust(width)} | {'old code':>16} | {'current code':>16} | note |\n"
              f"|{'-' * (width + 2)}|{'-' * 18}|{'-' * 18}|------|")
    print(header + "\n" + table)
    (RESULTS / "credit.md").write_text(
        "# Credit benchmark (issues 7 and 20)\n\n"
        f"PostgreSQL {results['machine']['postgres']}, {results['machine']['cpus']} CPUs shared with other work "
        "(1-minute load averages in the table), `python -m bench.credit_bench`. The old code "
        "(bench/credit_reference.py: window functions in one INSERT ... SELECT, then an UPDATE marking usage "
        "allocated) ran first, on a copy of the same loaded database; the current code "
        "(marketplace/credit/allocation.py: one read per batch, numpy, one binary COPY write, no UPDATE) "
        "second. Both wrote the same credit lines (count, sum and a checksum over every line). Both post through "
        "the current accounting service (postings written by COPY), so the old figure is already lower than the "
        "old code's own.\n\n"
        + header + "\n" + table + "\n"
    )


if __name__ == "__main__":
    main()
