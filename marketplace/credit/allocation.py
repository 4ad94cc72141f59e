"""Allocation of usage charges to contributors, batch by batch (the rule is documented in rules.py).

Each batch runs in one database transaction: the database lists the batch's usage (charge, system, day) and,
per usage, its served experts with their attribution and measured share (one statement);
`split.allocate_batch` computes every credit line of the batch in integer arrays (largest remainder per usage);
the lines are written with one binary COPY, and the batch's postings (aggregated per contributor, system, expert
and day) as one balanced accounting transaction with its `credit.allocated` ledger entry.

A usage is allocated when it has credit lines (each allocated usage has at least its platform line, and all its
lines are written in one transaction), so allocating marks nothing: pending usage is usage without lines.
Allocating twice changes nothing: allocated usage is never selected again, and the transaction reference is the
batch.
"""
from dataclasses import dataclass
from collections.abc import Callable
from datetime import date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ledger.accounting.models import SettlementPeriod
from ledger.accounting.services import PostingSpec, post_transaction
from marketplace.credit import accounts
from marketplace.credit.rules import PLAIN_DECIMAL
from marketplace.credit.split import BatchLines, allocate_batch, exact_sums
from marketplace.models import ComposedSystem, ContributionMeasurement, CreditLine, Expert, Usage
from marketplace.ledger_refs import CREDIT_ACTOR
from domain.errors import DomainError
from mosaic.progress import QUIET, Progress

ADVISORY_LOCK_KEY = 7_000_007
# A batch is read as one value (bytea, at most 1 GB): 56 bytes a row, a few rows a usage.
MAX_BATCH_SIZE = 1_000_000
ACTOR = CREDIT_ACTOR


def _tables() -> dict[str, str]:
    """The quoted table of each model the statements read or write, as the templates name them."""
    models = {
        "usage": Usage,
        "system": ComposedSystem,
        "expert": Expert,
        "measurement": ContributionMeasurement,
        "credit_line": CreditLine,
        "period": SettlementPeriod,
    }
    return {name: connection.ops.quote_name(model._meta.db_table) for name, model in models.items()}


def _dialect() -> dict[str, str]:
    if connection.vendor == "postgresql":
        return {
            "day": "(u.created_at AT TIME ZONE 'UTC')::date",
            "each": (
                "CROSS JOIN LATERAL jsonb_each_text(CASE WHEN jsonb_typeof(b.attribution) = 'object' "
                "THEN b.attribution ELSE '{}'::jsonb END) AS a(key, value)"
            ),
            "expert_key": "e.id::text",
            "epoch_day": "CAST((u.created_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01' AS BIGINT)",
            "ppm": (
                "CASE WHEN a.value ~ %(decimal_re)s "
                "THEN floor(a.value::numeric * 1000000)::bigint ELSE 0 END"
            ),
        }
    value = "CAST(a.value AS TEXT)"
    dot = f"instr({value}, '.')"
    return {
        "day": "date(u.created_at)",
        "each": (
            "JOIN json_each(CASE WHEN json_type(b.attribution) = 'object' THEN b.attribution ELSE '{}' END) AS a"
        ),
        "expert_key": "CAST(e.id AS TEXT)",
        "epoch_day": "CAST(julianday(date(u.created_at)) - 2440587.5 AS INTEGER)",
        "ppm": (
            f"CASE WHEN {value} REGEXP %(decimal_re)s THEN "
            f"CASE WHEN {dot} = 0 THEN CAST({value} AS INTEGER) * 1000000 "
            f"ELSE CAST(substr({value}, 1, {dot} - 1) AS INTEGER) * 1000000 "
            f"+ CAST(substr(substr({value}, {dot} + 1) || '000000', 1, 6) AS INTEGER) END "
            "ELSE 0 END"
        ),
    }


# Pending: not yet allocated (no credit line: a usage's lines are written together), created before the run's
# horizon, and not dated inside a period closed after it was recorded.
PENDING = """
    u.id > %(after)s AND u.created_at < %(until)s
    AND NOT EXISTS (SELECT 1 FROM {credit_line} l WHERE l.usage_id = u.id AND l.usage_id > %(after)s)
    AND NOT EXISTS (
        SELECT 1 FROM {period} p
        WHERE {day} BETWEEN p.start_date AND p.end_date AND u.created_at < p.closed_at
    )
"""

# The next batch, in one statement (the pending condition is evaluated once): a row per usage (kind 0: id,
# organization, system, day as days since 1970-01-01, charge, the system's alpha) and a row per served expert of
# each (kind 1: usage id, expert, contributor, attribution in ppm, measured share in bp).
BATCH_ROWS = """
WITH batch AS (
    SELECT u.id, u.organization_id, u.system_id, u.created_at, u.attribution, u.charge_minor, {epoch_day} AS day
    FROM {usage} u WHERE {pending} ORDER BY u.id LIMIT %(limit)s
),
latest AS (
    SELECT m.system_id, m.expert_id, m.share_bp,
           ROW_NUMBER() OVER (PARTITION BY m.system_id, m.expert_id ORDER BY m.measured_at DESC, m.id DESC) AS rn
    FROM {measurement} m
    WHERE m.system_id IN (SELECT DISTINCT system_id FROM batch)
)
SELECT 0, CAST(b.id AS BIGINT), CAST(b.organization_id AS BIGINT), CAST(b.system_id AS BIGINT), b.day,
       CAST(b.charge_minor AS BIGINT), CAST(s.attribution_alpha_bp AS BIGINT)
FROM batch b JOIN {system} s ON s.id = b.system_id
UNION ALL
SELECT 1, CAST(b.id AS BIGINT), CAST(e.id AS BIGINT), CAST(e.owner_id AS BIGINT), {ppm},
       CAST(COALESCE(l.share_bp, 0) AS BIGINT), 0
FROM batch b {each}
JOIN {expert} e ON {expert_key} = a.key
LEFT JOIN latest l ON l.system_id = b.system_id AND l.expert_id = e.id AND l.rn = 1
WHERE e.consent_revoked_at IS NULL OR e.consent_revoked_at > b.created_at
"""

REFUSED = """
SELECT COUNT(*) FROM {usage} u
WHERE u.created_at < %(until)s AND u.created_at < (SELECT MAX(p.closed_at) FROM {period} p)
AND NOT EXISTS (SELECT 1 FROM {credit_line} l WHERE l.usage_id = u.id)
AND EXISTS (
    SELECT 1 FROM {period} p
    WHERE {day} BETWEEN p.start_date AND p.end_date AND u.created_at < p.closed_at
)
"""

@dataclass
class AllocationRun:
    batches: int = 0
    usage_count: int = 0
    charged_minor: int = 0
    to_contributors_minor: int = 0
    refused_in_closed_periods: int = 0


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _value_dates() -> Callable[[object], date]:
    """A usage's value date: the day it was served, or, when that day is in a period closed before it was
    recorded (a period closed up to now, the same day), the day after the latest closed period: the next
    period starts where the closed one ended."""
    closed = list(SettlementPeriod.objects.values_list("start_date", "end_date"))
    first_open = max((end for _, end in closed), default=None)

    def value_date(day) -> date:
        day = _as_date(day)
        if any(start <= day <= end for start, end in closed):
            return first_open + timedelta(days=1)
        return day

    return value_date


def _sql(template: str) -> str:
    dialect, tables = _dialect(), _tables()
    pending = PENDING.format(**dialect, **tables)
    return template.format(pending=pending, **dialect, **tables)


def allocation_reference(batch: int) -> str:
    return f"credit:batch:{batch}"


# PostgreSQL's binary COPY of all-bigint rows: a 19-byte header, then per row a 16-bit field count and per field
# a 32-bit length (8, or -1 for NULL) and the big-endian value, then a 16-bit -1.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"


def _row_type(columns: int) -> np.dtype:
    fields = [("count", ">i2")]
    for index in range(columns):
        fields += [(f"length{index}", ">i4"), (f"value{index}", ">i8")]
    return np.dtype(fields)


def _fetch_columns(cursor, sql: str, params: dict, columns: int) -> list[np.ndarray]:
    """The result's columns (all integers, never NULL) as int64 arrays. On PostgreSQL the rows come back as one
    value, every column packed big-endian by int8send (a COPY would send, and psycopg read, a message per row)."""
    if connection.vendor != "postgresql":
        cursor.execute(sql, params)
        rows = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, columns)
        return [rows[:, index].copy() for index in range(columns)]
    packed = " || ".join(f"int8send(t.c{index})" for index in range(columns))
    names = ", ".join(f"c{index}" for index in range(columns))
    cursor.execute(f"SELECT string_agg({packed}, ''::bytea) FROM ({sql}) AS t({names})", params)
    data = cursor.fetchone()[0]
    rows = np.frombuffer(data or b"", dtype=">i8").reshape(-1, columns).astype(np.int64)
    return [rows[:, index].copy() for index in range(columns)]


def _write_lines(cursor, *, batch: int, lines: BatchLines) -> None:
    """The batch's credit lines: expert lines, then one platform line (no expert, no contributor) per usage."""
    table = _tables()["credit_line"]
    columns = "batch, usage_id, expert_id, contributor_id, amount_minor"
    if connection.vendor != "postgresql":
        rows = [(batch, u, e, c, a) for u, e, c, a in zip(lines.usage_id.tolist(), lines.expert_id.tolist(),
                                                          lines.contributor_id.tolist(), lines.amount.tolist())]
        rows += [(batch, u, None, None, a) for u, a in zip(lines.platform_usage_id.tolist(),
                                                           lines.platform_amount.tolist())]
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s)", rows)
        return
    expert_rows = np.zeros(len(lines.amount), dtype=_row_type(5))
    expert_rows["count"] = 5
    for index, values in enumerate((batch, lines.usage_id, lines.expert_id, lines.contributor_id, lines.amount)):
        expert_rows[f"length{index}"] = 8
        expert_rows[f"value{index}"] = values
    platform_rows = np.zeros(len(lines.platform_amount), dtype=np.dtype([
        ("count", ">i2"), ("length0", ">i4"), ("value0", ">i8"), ("length1", ">i4"), ("value1", ">i8"),
        ("null_expert", ">i4"), ("null_contributor", ">i4"), ("length4", ">i4"), ("value4", ">i8"),
    ]))
    platform_rows["count"] = 5
    platform_rows["length0"] = platform_rows["length1"] = platform_rows["length4"] = 8
    platform_rows["null_expert"] = platform_rows["null_contributor"] = -1
    platform_rows["value0"] = batch
    platform_rows["value1"] = lines.platform_usage_id
    platform_rows["value4"] = lines.platform_amount
    with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_COPY_HEADER)
        copy.write(expert_rows.tobytes())
        copy.write(platform_rows.tobytes())
        copy.write(_COPY_TRAILER)


def _allocate_batch(*, after: int, until: datetime, batch_size: int, actor: str) -> tuple[int, int, int, int] | None:
    """Allocate the next batch of pending usage with ids above `after`.
    Returns (last usage id, usage count, charged, to contributors) or None when nothing is pending."""
    fee_bp = settings.PLATFORM_FEE_BASIS_POINTS
    params = {
        "after": after,
        "until": connection.ops.adapt_datetimefield_value(until),
        "limit": batch_size,
        "decimal_re": PLAIN_DECIMAL,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
            # Hash the batch's expert rows in memory (the planner takes jsonb_each for 100 rows a usage), and skip
            # JIT compilation.
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute("SET LOCAL jit = off")
        kind, *columns = _fetch_columns(cursor, _sql(BATCH_ROWS), params, 7)
        if not (kind == 0).any():
            return None
        usage_rows, expert_rows = kind == 0, kind == 1
        by_id = np.argsort(columns[0][usage_rows], kind="stable")
        usage_id, organization, system, day, charge, alpha = (column[usage_rows][by_id] for column in columns[:6])
        row_usage, row_expert, row_contributor, row_attribution, row_share = (
            column[expert_rows] for column in columns[:5]
        )
        last = int(usage_id[-1])
        lines = allocate_batch(
            usage_id=usage_id, charge=charge, alpha_bp=alpha, fee_bp=fee_bp, row_usage=row_usage,
            row_expert=row_expert, row_contributor=row_contributor, row_attribution_ppm=row_attribution,
            row_share_bp=row_share,
        )
        _write_lines(cursor, batch=last, lines=lines)

        value_date = _value_dates()
        epoch = date(1970, 1, 1)
        postings: list[PostingSpec] = []

        def post(account: str, amount: int, epoch_day: int, dimension: str = "") -> None:
            day = value_date(epoch + timedelta(days=epoch_day))
            postings.append(PostingSpec(account=account, amount=amount, value_date=day, dimension=dimension))

        receivables = exact_sums(charge, np.stack([organization, day], axis=1))
        for (organization_id, epoch_day), amount in sorted(receivables.items()):
            post(accounts.receivable(organization_id), amount, epoch_day)
        index = np.searchsorted(usage_id, lines.usage_id)
        payables = exact_sums(lines.amount, np.stack([lines.contributor_id, system[index], lines.expert_id, day[index]],
                                                     axis=1))
        for (contributor_id, system_id, expert_id, epoch_day), amount in sorted(payables.items()):
            post(accounts.payable(contributor_id), -amount, epoch_day, accounts.earning_dimension(system_id, expert_id))
        platform = exact_sums(lines.platform_amount, np.stack([system, day], axis=1))
        for (system_id, epoch_day), amount in sorted(platform.items()):
            if amount:
                post(accounts.PLATFORM_REVENUE, -amount, epoch_day, accounts.system_dimension(system_id))
        charged = sum(receivables.values())
        to_contributors = sum(payables.values())
        post_transaction(
            kind="credit.allocated",
            reference=allocation_reference(last),
            postings=postings,
            actor=actor,
            memo={
                "batch": last,
                "usage_count": len(usage_id),
                "first_usage": int(usage_id[0]),
                "last_usage": last,
                "fee_bp": fee_bp,
            },
        )
    return last, len(usage_id), charged, to_contributors


def allocate_pending_usage(
    *, until: datetime | None = None, batch_size: int = 50_000, actor: str = ACTOR, progress: Progress = QUIET
) -> AllocationRun:
    """Allocate every unallocated usage created before `until` (default: now), batch by batch.
    Usage dated inside a settlement period closed after it was recorded is refused (left unallocated and
    counted); usage recorded after the close of a period that holds its day goes to the next period.
    `progress` counts the usage records allocated, out of those pending when it starts (counted only when
    someone watches: the count is an anti-join over every usage)."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise DomainError(f"An allocation batch holds 1 to {MAX_BATCH_SIZE:,} usage records, not {batch_size}.",
                          param="batch_size")
    until = until or timezone.now()
    run = AllocationRun()
    after = 0
    pending = None if progress is QUIET else Usage.objects.unallocated().filter(created_at__lt=until).count()
    with progress.stage("allocating usage", total=pending, unit="usage") as step:
        while True:
            done = _allocate_batch(after=after, until=until, batch_size=batch_size, actor=actor)
            if done is None:
                break
            after, count, charged, to_contributors = done
            run.batches += 1
            run.usage_count += count
            run.charged_minor += charged
            run.to_contributors_minor += to_contributors
            step.update(count)
    with connection.cursor() as cursor:
        cursor.execute(
            _sql(REFUSED), {"until": connection.ops.adapt_datetimefield_value(until)}
        )
        run.refused_in_closed_periods = cursor.fetchone()[0]
    return run
