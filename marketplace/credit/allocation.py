"""Set-based allocation of usage charges to contributors (the rule is documented in rules.py).

Each batch runs in one database transaction: an INSERT ... SELECT computes every credit line of the
batch with window functions (largest remainder per usage), the usage rows are marked allocated,
and the batch's postings (aggregated per contributor, system, expert and day) are written as one
balanced accounting transaction with its `credit.allocated` ledger entry. Allocating twice changes
nothing: allocated usage is never selected again, and the transaction reference is the batch.
"""
from dataclasses import dataclass
from collections.abc import Callable
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ledger.accounting.models import SettlementPeriod
from ledger.accounting.services import PostingSpec, post_transaction
from marketplace.credit import accounts
from marketplace.credit.rules import MAX_CHARGE_MINOR, MAX_WEIGHT_TOTAL, PLAIN_DECIMAL
from marketplace.models import ComposedSystem, ContributionMeasurement, CreditLine, Expert, Usage
from marketplace.ledger_refs import CREDIT_ACTOR

ADVISORY_LOCK_KEY = 7_000_007
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
            "mark_allocated": "UPDATE {usage} AS u SET allocated = %(yes)s WHERE {pending}",
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
        "mark_allocated": (
            "UPDATE {usage} SET allocated = %(yes)s "
            "WHERE id IN (SELECT u.id FROM {usage} u WHERE {pending})"
        ),
        "ppm": (
            f"CASE WHEN {value} REGEXP %(decimal_re)s THEN "
            f"CASE WHEN {dot} = 0 THEN CAST({value} AS INTEGER) * 1000000 "
            f"ELSE CAST(substr({value}, 1, {dot} - 1) AS INTEGER) * 1000000 "
            f"+ CAST(substr(substr({value}, {dot} + 1) || '000000', 1, 6) AS INTEGER) END "
            "ELSE 0 END"
        ),
    }


PENDING = """
    u.allocated = %(no)s AND u.id > %(after)s AND u.id <= %(upto)s AND u.created_at < %(until)s
    AND NOT EXISTS (
        SELECT 1 FROM {period} p
        WHERE {day} BETWEEN p.start_date AND p.end_date AND u.created_at < p.closed_at
    )
"""

LINES = """
WITH batch AS (
    SELECT u.id, u.system_id, u.created_at, u.attribution, u.charge_minor,
           u.charge_minor - ((u.charge_minor / 10000) * %(fee_bp)s + (u.charge_minor %% 10000) * %(fee_bp)s / 10000)
               AS pool,
           CASE WHEN s.attribution_alpha_bp > 10000 THEN 10000 ELSE s.attribution_alpha_bp END AS alpha
    FROM {usage} u JOIN {system} s ON s.id = u.system_id
    WHERE {pending}
),
served AS (
    SELECT b.id AS usage_id, b.system_id, b.pool, b.alpha, e.id AS expert_id, e.owner_id AS contributor_id,
           {ppm} AS a_ppm
    FROM batch b {each}
    JOIN {expert} e ON {expert_key} = a.key
    WHERE e.consent_revoked_at IS NULL OR e.consent_revoked_at > b.created_at
),
latest AS (
    SELECT m.system_id, m.expert_id, CAST(m.share_bp AS BIGINT) AS share_bp,
           ROW_NUMBER() OVER (PARTITION BY m.system_id, m.expert_id ORDER BY m.measured_at DESC, m.id DESC) AS rn
    FROM {measurement} m
    WHERE m.system_id IN (SELECT DISTINCT system_id FROM batch)
),
shared AS (
    SELECT sv.usage_id, sv.pool, sv.alpha, sv.expert_id, sv.contributor_id, sv.a_ppm,
           COALESCE(l.share_bp, 0) AS s_bp,
           CAST(SUM(sv.a_ppm) OVER (PARTITION BY sv.usage_id) AS BIGINT) AS a_total,
           CAST(SUM(COALESCE(l.share_bp, 0)) OVER (PARTITION BY sv.usage_id) AS BIGINT) AS s_total
    FROM served sv
    LEFT JOIN latest l ON l.system_id = sv.system_id AND l.expert_id = sv.expert_id AND l.rn = 1
),
weighted AS (
    SELECT usage_id, pool, expert_id, contributor_id,
           eff_alpha * (CASE WHEN a_total > 0 THEN a_ppm * 1000000 / a_total ELSE 0 END)
           + (10000 - eff_alpha) * (CASE WHEN s_total > 0 THEN s_bp * 1000000 / s_total ELSE 0 END) AS num
    FROM (
        SELECT sh.*, CASE WHEN s_total = 0 THEN 10000 WHEN a_total = 0 THEN 0 ELSE alpha END AS eff_alpha
        FROM shared sh
    ) x
),
-- Window functions over expert rows only (no regrouping and joining back): N per contributor,
-- D per usage, and a marker on each contributor's first row so that contributor sums count once.
totals AS (
    SELECT w.*,
           CAST(SUM(num) OVER (PARTITION BY usage_id, contributor_id) AS BIGINT) AS n,
           CAST(SUM(num) OVER (PARTITION BY usage_id) AS BIGINT) AS d,
           ROW_NUMBER() OVER (PARTITION BY usage_id, contributor_id ORDER BY expert_id) AS nth
    FROM weighted w
),
-- pool * n / d and pool * n mod d without forming pool * n (up to 10^25): see SPLIT_BASE below.
contributor_split AS (
    SELECT x.*, hi_q * {base} + lo / d AS cq, lo %% d AS cr
    FROM (
        SELECT t.*, (pool / {base} * n) / d AS hi_q,
               ((pool / {base} * n) %% d) * {base} + (pool %% {base}) * n AS lo
        FROM totals t WHERE d > 0
    ) x
),
contributor_ranked AS (
    SELECT c.*,
           pool - CAST(SUM(CASE WHEN nth = 1 THEN cq ELSE 0 END) OVER (PARTITION BY usage_id) AS BIGINT) AS c_left,
           DENSE_RANK() OVER (PARTITION BY usage_id ORDER BY cr DESC, contributor_id) AS c_rank
    FROM contributor_split c
),
expert_split AS (
    SELECT usage_id, expert_id, contributor_id, amount,
           CASE WHEN n > 0 THEN e_hi_q * {base} + e_lo / n ELSE 0 END AS q,
           CASE WHEN n > 0 THEN e_lo %% n ELSE 0 END AS r
    FROM (
        SELECT z.*,
               CASE WHEN n > 0 THEN (amount / {base} * num) / n ELSE 0 END AS e_hi_q,
               CASE WHEN n > 0 THEN ((amount / {base} * num) %% n) * {base} + (amount %% {base}) * num ELSE 0 END
                   AS e_lo
        FROM (
            SELECT cr.*, cq + CASE WHEN c_rank <= c_left THEN 1 ELSE 0 END AS amount FROM contributor_ranked cr
        ) z
    ) y
),
expert_ranked AS (
    SELECT usage_id, expert_id, contributor_id, q,
           amount - CAST(SUM(q) OVER (PARTITION BY usage_id, contributor_id) AS BIGINT) AS left_over,
           ROW_NUMBER() OVER (PARTITION BY usage_id, contributor_id ORDER BY r DESC, expert_id) AS rk
    FROM expert_split
),
final AS (
    SELECT usage_id, expert_id, contributor_id, q + CASE WHEN rk <= left_over THEN 1 ELSE 0 END AS amount
    FROM expert_ranked
),
paid AS (
    SELECT usage_id, SUM(amount) AS total FROM final GROUP BY usage_id
)
INSERT INTO {credit_line} (batch, usage_id, expert_id, contributor_id, amount_minor)
SELECT %(batch)s, usage_id, expert_id, contributor_id, amount FROM final WHERE amount > 0
UNION ALL
SELECT %(batch)s, b.id, NULL, NULL, b.charge_minor - COALESCE(p.total, 0)
FROM batch b LEFT JOIN paid p ON p.usage_id = b.id
"""

BATCH_END = """
SELECT MAX(id) FROM (SELECT u.id FROM {usage} u WHERE {pending} ORDER BY u.id LIMIT %(limit)s) t
"""

RECEIVABLES = """
SELECT u.organization_id, {day}, SUM(u.charge_minor), COUNT(*), MIN(u.id)
FROM {usage} u WHERE {pending} GROUP BY 1, 2
"""

PAYABLES = """
SELECT l.contributor_id, u.system_id, l.expert_id, {day}, SUM(l.amount_minor)
FROM {credit_line} l JOIN {usage} u ON u.id = l.usage_id
WHERE l.batch = %(batch)s GROUP BY 1, 2, 3, 4
"""

REFUSED = """
SELECT COUNT(*) FROM {usage} u WHERE u.allocated = %(no)s AND u.created_at < %(until)s AND EXISTS (
    SELECT 1 FROM {period} p
    WHERE {day} BETWEEN p.start_date AND p.end_date AND u.created_at < p.closed_at
)
"""

LARGEST_ID = 2**62


@dataclass
class AllocationRun:
    batches: int = 0
    usage_count: int = 0
    charged_minor: int = 0
    to_contributors_minor: int = 0
    refused_in_closed_periods: int = 0


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# Exact in 64-bit integers (SQLite has no wider type, and PostgreSQL's bigint overflows) for any charge up to
# MAX_CHARGE_MINOR: a pool P < 2^50 times a weight n <= D <= 10^10 (step 3 of rules.py: the attribution and share
# terms each sum to at most 10^6, times at most 10^4) would need 84 bits. With P = hi * B + lo_part (B = 2^21):
#   P * n = B * (hi * n) = B * (q1 * D + r1) + lo_part * n,  so  P * n // D = B * q1 + (B * r1 + lo_part * n) // D
# where hi * n < 2^29 * 2^34 and B * r1 + lo_part * n < 2^56 fit in 63 bits. The fee is split the same way
# (charge // 10^4 * fee_bp + charge % 10^4 * fee_bp // 10^4).
SPLIT_BASE = 2**21
assert MAX_CHARGE_MINOR < 2**50 and (MAX_CHARGE_MINOR // SPLIT_BASE) * MAX_WEIGHT_TOTAL < 2**63


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
    return template.format(pending=pending, base=SPLIT_BASE, **dialect, **tables)


def _mark_allocated_sql() -> str:
    dialect, tables = _dialect(), _tables()
    return dialect["mark_allocated"].format(pending=PENDING.format(**dialect, **tables), **tables)


def allocation_reference(batch: int) -> str:
    return f"credit:batch:{batch}"


def _allocate_batch(*, after: int, until: datetime, batch_size: int, actor: str) -> tuple[int, int, int, int] | None:
    """Allocate the next batch of pending usage with ids above `after`.
    Returns (last usage id, usage count, charged, to contributors) or None when nothing is pending."""
    fee_bp = settings.PLATFORM_FEE_BASIS_POINTS
    params = {
        "no": False,
        "yes": True,
        "after": after,
        "upto": LARGEST_ID,
        "until": connection.ops.adapt_datetimefield_value(until),
        "limit": batch_size,
        "fee_bp": fee_bp,
        "decimal_re": PLAIN_DECIMAL,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
            # One big set-based statement per batch: sort in memory, and skip JIT compilation.
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(_sql(BATCH_END), params)
        last = cursor.fetchone()[0]
        if last is None:
            return None
        params["upto"] = last
        params["batch"] = last
        cursor.execute(_sql(LINES), params)
        cursor.execute(_sql(RECEIVABLES), params)
        receivables = cursor.fetchall()
        cursor.execute(_sql(PAYABLES), params)
        payables = cursor.fetchall()
        cursor.execute(_mark_allocated_sql(), params)

        value_date = _value_dates()
        postings: list[PostingSpec] = []
        usage_count = charged = first_usage = 0
        for organization_id, day, charge, count, first in receivables:
            postings.append(
                PostingSpec(account=accounts.receivable(organization_id), amount=int(charge), value_date=value_date(day))
            )
            usage_count += count
            charged += int(charge)
            first_usage = min(first_usage or first, first)
        to_contributors = 0
        for contributor_id, system_id, expert_id, day, amount in payables:
            amount = int(amount)
            if contributor_id is None:
                account, dimension = accounts.PLATFORM_REVENUE, accounts.system_dimension(system_id)
            else:
                account, dimension = accounts.payable(contributor_id), accounts.earning_dimension(system_id, expert_id)
                to_contributors += amount
            postings.append(PostingSpec(account=account, amount=-amount, value_date=value_date(day), dimension=dimension))
        post_transaction(
            kind="credit.allocated",
            reference=allocation_reference(last),
            postings=postings,
            actor=actor,
            memo={
                "batch": last,
                "usage_count": usage_count,
                "first_usage": first_usage,
                "last_usage": last,
                "fee_bp": fee_bp,
            },
        )
    return last, usage_count, charged, to_contributors


def allocate_pending_usage(
    *, until: datetime | None = None, batch_size: int = 50_000, actor: str = ACTOR
) -> AllocationRun:
    """Allocate every unallocated usage created before `until` (default: now), batch by batch.
    Usage dated inside a settlement period closed after it was recorded is refused (left unallocated and
    counted); usage recorded after the close of a period that holds its day goes to the next period."""
    until = until or timezone.now()
    run = AllocationRun()
    after = 0
    while True:
        done = _allocate_batch(after=after, until=until, batch_size=batch_size, actor=actor)
        if done is None:
            break
        after, count, charged, to_contributors = done
        run.batches += 1
        run.usage_count += count
        run.charged_minor += charged
        run.to_contributors_minor += to_contributors
    with connection.cursor() as cursor:
        cursor.execute(
            _sql(REFUSED), {"no": False, "until": connection.ops.adapt_datetimefield_value(until)}
        )
        run.refused_in_closed_periods = cursor.fetchone()[0]
    return run
