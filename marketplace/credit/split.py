"""The allocation rule of rules.py over whole batches at once, in exact 64-bit integer arrays (numpy).

The database gathers, per usage, its charge and system's alpha and, per served expert, the expert's contributor,
its attribution in parts per million and its measured share in basis points (allocation.py); this module computes
every credit line of the batch from those arrays. It equals `rules.allocate_usage` for every charge up to
MAX_CHARGE_MINOR and any weights (tests/credit/test_split.py checks it against the rule).

Products that could exceed 63 bits (a pool below 2^50 times a weight up to 10^10) are split at SPLIT_BASE:
with P = hi * B + lo_part,
    P * n // D = B * q1 + (B * r1 + lo_part * n) // D    where  hi * n = q1 * D + r1,
and hi * n < 2^29 * 2^34, B * r1 + lo_part * n < 2^56 fit. The fee is split at 10^4 the same way.
Sums of money over many rows (receivables, payables) are taken in two 32-bit halves and joined as Python integers.
"""
from dataclasses import dataclass

import numpy as np

from marketplace.credit.rules import BASIS_POINTS, MAX_CHARGE_MINOR, MAX_WEIGHT_TOTAL, PPM

SPLIT_BASE = 2**21
assert MAX_CHARGE_MINOR < 2**50 and (MAX_CHARGE_MINOR // SPLIT_BASE) * MAX_WEIGHT_TOTAL < 2**63
INT = np.int64


@dataclass
class BatchLines:
    """Expert lines (usage, expert, contributor, amount; amount > 0) and one platform line per usage."""

    usage_id: np.ndarray
    expert_id: np.ndarray
    contributor_id: np.ndarray
    amount: np.ndarray
    platform_usage_id: np.ndarray
    platform_amount: np.ndarray


def _mul_div(total: np.ndarray, weight: np.ndarray, denominator: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(total * weight // denominator, total * weight % denominator) without forming total * weight;
    denominator > 0, 0 <= weight <= denominator <= MAX_WEIGHT_TOTAL, 0 <= total <= MAX_CHARGE_MINOR."""
    high, low = np.divmod(total, SPLIT_BASE)
    q1, r1 = np.divmod(high * weight, denominator)
    q2, remainder = np.divmod(r1 * SPLIT_BASE + low * weight, denominator)
    return q1 * SPLIT_BASE + q2, remainder


def _starts(*keys: np.ndarray) -> np.ndarray:
    """Indices where a run of equal key tuples begins, in arrays already sorted by those keys."""
    size = len(keys[0])
    if size == 0:
        return np.zeros(0, dtype=np.intp)
    change = np.zeros(size, dtype=bool)
    change[0] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def _group_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(values, starts) if len(starts) else np.zeros(0, dtype=INT)


def _rank_within(group: np.ndarray, remainder: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Each row's 0-based rank inside its group by remainder descending, then tie ascending."""
    order = np.lexsort((tie, -remainder, group))
    ranks = np.empty(len(group), dtype=INT)
    sorted_group = group[order]
    begins = _starts(sorted_group)
    first = np.repeat(begins, np.diff(np.append(begins, len(order))))
    ranks[order] = np.arange(len(order)) - first
    return ranks


def allocate_batch(
    *,
    usage_id: np.ndarray,
    charge: np.ndarray,
    alpha_bp: np.ndarray,
    fee_bp: int,
    row_usage: np.ndarray,
    row_expert: np.ndarray,
    row_contributor: np.ndarray,
    row_attribution_ppm: np.ndarray,
    row_share_bp: np.ndarray,
) -> BatchLines:
    """`usage_id` sorted ascending and unique, with each usage's charge and system alpha; one row per served
    expert (consent not revoked) of those usage. Rows naming a usage that is not in `usage_id` are ignored."""
    usage_id, charge = usage_id.astype(INT), charge.astype(INT)
    alpha = np.minimum(alpha_bp.astype(INT), BASIS_POINTS)
    found = np.minimum(np.searchsorted(usage_id, row_usage), max(len(usage_id) - 1, 0))
    keep = usage_id[found] == row_usage if len(usage_id) else np.zeros(len(row_usage), dtype=bool)
    row_usage, expert, contributor = row_usage[keep].astype(INT), row_expert[keep].astype(INT), row_contributor[keep].astype(INT)
    attribution, share = row_attribution_ppm[keep].astype(INT), row_share_bp[keep].astype(INT)

    charge_high, charge_low = np.divmod(charge, BASIS_POINTS)
    pool = charge - (charge_high * fee_bp + charge_low * fee_bp // BASIS_POINTS)

    # Rows sorted by usage, contributor, expert: every group below is a contiguous run.
    order = np.lexsort((expert, contributor, row_usage))
    row_usage, expert, contributor = row_usage[order], expert[order], contributor[order]
    attribution, share = attribution[order], share[order]
    usage_index = np.searchsorted(usage_id, row_usage)

    usage_starts = _starts(usage_index)
    usage_sizes = np.diff(np.append(usage_starts, len(usage_index)))
    attribution_total = np.repeat(_group_sum(attribution, usage_starts), usage_sizes)
    share_total = np.repeat(_group_sum(share, usage_starts), usage_sizes)
    row_alpha = alpha[usage_index]
    row_alpha = np.where(share_total == 0, BASIS_POINTS, np.where(attribution_total == 0, 0, row_alpha))
    attribution_term = np.where(attribution_total > 0, attribution * PPM // np.maximum(attribution_total, 1), 0)
    share_term = np.where(share_total > 0, share * PPM // np.maximum(share_total, 1), 0)
    numerator = row_alpha * attribution_term + (BASIS_POINTS - row_alpha) * share_term

    # Contributors: N per (usage, contributor), D per usage; largest remainder of the pool over N.
    contributor_starts = _starts(usage_index, contributor)
    contributor_sizes = np.diff(np.append(contributor_starts, len(usage_index)))
    c_usage = usage_index[contributor_starts]
    c_id = contributor[contributor_starts]
    c_weight = _group_sum(numerator, contributor_starts)
    per_usage_weight = np.zeros(len(usage_id), dtype=INT)
    np.add.at(per_usage_weight, c_usage, c_weight)
    c_denominator = per_usage_weight[c_usage]
    paid = c_denominator > 0
    c_pool = pool[c_usage]
    c_quotient, c_remainder = _mul_div(c_pool, c_weight, np.maximum(c_denominator, 1))
    c_quotient, c_remainder = np.where(paid, c_quotient, 0), np.where(paid, c_remainder, 0)
    handed_out = np.zeros(len(usage_id), dtype=INT)
    np.add.at(handed_out, c_usage, c_quotient)
    c_left = np.where(paid, pool[c_usage] - handed_out[c_usage], 0)
    c_rank = _rank_within(c_usage, c_remainder, c_id)
    c_amount = c_quotient + (c_rank < c_left)

    # Experts: each contributor's amount over its experts' numerators, by largest remainder again.
    r_contributor_amount = np.repeat(c_amount, contributor_sizes)
    r_weight = np.repeat(c_weight, contributor_sizes)
    weighted = r_weight > 0
    e_quotient, e_remainder = _mul_div(r_contributor_amount, numerator, np.maximum(r_weight, 1))
    e_quotient, e_remainder = np.where(weighted, e_quotient, 0), np.where(weighted, e_remainder, 0)
    e_left = np.repeat(c_amount - _group_sum(e_quotient, contributor_starts), contributor_sizes)
    group = np.repeat(np.arange(len(contributor_starts)), contributor_sizes)
    e_rank = _rank_within(group, e_remainder, expert)
    amount = e_quotient + (e_rank < e_left)

    to_contributors = np.zeros(len(usage_id), dtype=INT)
    np.add.at(to_contributors, usage_index, amount)
    positive = amount > 0
    return BatchLines(
        usage_id=row_usage[positive],
        expert_id=expert[positive],
        contributor_id=contributor[positive],
        amount=amount[positive],
        platform_usage_id=usage_id,
        platform_amount=charge - to_contributors,
    )


def exact_sums(values: np.ndarray, keys: np.ndarray) -> dict[tuple, int]:
    """Sum non-negative int64 `values` (each below 2^62) per distinct row of `keys` (a 2-D int64 array, one key
    tuple per row), exactly: the halves above and below 2^31 are summed apart and joined as Python integers."""
    if len(values) == 0:
        return {}
    order = np.lexsort(keys.T[::-1])
    keys = keys[order]
    starts = _starts(*keys.T)
    high, low = np.divmod(values.astype(INT)[order], 2**31)
    high_sum, low_sum = np.add.reduceat(high, starts), np.add.reduceat(low, starts)
    return {
        tuple(key): h * 2**31 + lo
        for key, h, lo in zip(keys[starts].tolist(), high_sum.tolist(), low_sum.tolist())
    }
