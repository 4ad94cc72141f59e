"""The allocation rule, as pure integer arithmetic. The reference the SQL allocation must equal.

For one usage charge:
1. fee = charge * PLATFORM_FEE_BASIS_POINTS // 10000 (rounded down); pool = charge - fee.
2. The experts that served the request are the keys of its attribution (an expert id written as
   a plain decimal integer, e.g. "42"; any other key names no expert). An expert whose consent
   was revoked at or before the request's time is dropped; the rest are renormalised. A weight that
   is not a plain decimal string with at most 6 integer digits counts as zero. (The recorded attribution
   is already normalised, once, by composition.attribution in the worker; this step re-weighs only the
   experts that may still be paid, in the integer arithmetic the SQL reproduces.)
3. Each expert's attribution a_e is read in parts per million (decimal digits past the 6th are
   cut off); its share s_e is the basis points of the latest ContributionMeasurement of that expert
   in the system (0 when none), set by `measured_shares_bp` from the measured values. With A = sum(a), S = sum(s) over the served experts:
       num_e = alpha * (a_e * 10^6 // A) + (10000 - alpha) * (s_e * 10^6 // S)
   where alpha = system.attribution_alpha_bp (capped at 10000), except alpha = 10000 when S = 0
   (attribution alone) and alpha = 0 when A = 0 (measured shares alone).
   This is weight_e = alpha·attribution_e + (1 - alpha)·share_e with each term in millionths.
4. Experts of the same contributor add up: N_c = sum of num_e over the contributor's experts.
   The pool is split over contributors in proportion to N_c by largest remainder: each gets
   pool * N_c // D (D = sum N_c), and the units left over go one each to the largest remainders
   (pool * N_c mod D), ties to the smaller contributor id. Then each contributor's part is split
   over its experts the same way (ties to the smaller expert id), for statements.
5. If D = 0 (nobody left to pay: all revoked, or no weight), the whole charge goes to the platform.
The parts always sum exactly to the pool and are never negative.

Bound: a usage charge is at most MAX_CHARGE_MINOR (10^15 minor units); larger amounts are refused where they
enter (a price, a plan fee, a usage charge). Here the arithmetic is Python's (unbounded); the SQL allocation is
exact in 64-bit integers up to that bound (see split.SPLIT_BASE).
"""
import re
from dataclasses import dataclass, field

PPM = 1_000_000
BASIS_POINTS = 10_000
MAX_CHARGE_MINOR = 10**15
MAX_WEIGHT_TOTAL = BASIS_POINTS * PPM  # the largest D of step 4
PLAIN_DECIMAL = r"^[0-9]{1,6}(\.[0-9]+)?$"
EXPERT_KEY = r"^[1-9][0-9]{0,17}$"
_PLAIN_DECIMAL = re.compile(PLAIN_DECIMAL)
_EXPERT_KEY = re.compile(EXPERT_KEY)


def within_bound(amount_minor: int) -> bool:
    return 0 <= amount_minor <= MAX_CHARGE_MINOR


def weight_ppm(value) -> int:
    text = value if isinstance(value, str) else str(value)
    if not _PLAIN_DECIMAL.match(text):
        return 0
    whole, _, fraction = text.partition(".")
    return int(whole) * PPM + int((fraction + "000000")[:6])


def platform_fee(*, charge_minor: int, fee_bp: int) -> int:
    return charge_minor * fee_bp // BASIS_POINTS


def largest_remainder(*, total: int, weights: dict[int, int]) -> dict[int, int]:
    """Split a non-negative integer `total` in proportion to non-negative integer weights.
    Parts sum to `total` exactly when the weights do not all vanish; ties go to the smaller key."""
    denominator = sum(weights.values())
    if denominator == 0:
        return {key: 0 for key in weights}
    parts = {key: total * weight // denominator for key, weight in weights.items()}
    left_over = total - sum(parts.values())
    by_remainder = sorted(weights, key=lambda key: (-(total * weights[key] % denominator), key))
    for key in by_remainder[:left_over]:
        parts[key] += 1
    return parts


@dataclass
class UsageAllocation:
    platform_minor: int
    contributors: dict[int, int] = field(default_factory=dict)
    experts: dict[int, int] = field(default_factory=dict)


def allocate_usage(
    *,
    charge_minor: int,
    fee_bp: int,
    alpha_bp: int,
    attribution: dict,
    shares_bp: dict[int, int],
    owners: dict[int, int],
    revoked: set[int],
) -> UsageAllocation:
    """`owners` maps each existing expert id to its contributor id; `revoked` holds the experts whose
    consent was revoked at or before this request."""
    fee = platform_fee(charge_minor=charge_minor, fee_bp=fee_bp)
    pool = charge_minor - fee
    served: dict[int, int] = {}
    for key, value in attribution.items():
        key = str(key)
        if not _EXPERT_KEY.match(key):
            continue
        expert = int(key)
        if expert in owners and expert not in revoked:
            served[expert] = weight_ppm(value)
    total_attribution = sum(served.values())
    total_share = sum(shares_bp.get(expert, 0) for expert in served)
    alpha = min(alpha_bp, BASIS_POINTS)
    if total_share == 0:
        alpha = BASIS_POINTS
    elif total_attribution == 0:
        alpha = 0
    numerators = {}
    for expert, attributed in served.items():
        attribution_term = attributed * PPM // total_attribution if total_attribution else 0
        share_term = shares_bp.get(expert, 0) * PPM // total_share if total_share else 0
        numerators[expert] = alpha * attribution_term + (BASIS_POINTS - alpha) * share_term
    per_contributor: dict[int, int] = {}
    for expert, numerator in numerators.items():
        per_contributor[owners[expert]] = per_contributor.get(owners[expert], 0) + numerator
    if sum(per_contributor.values()) == 0:
        return UsageAllocation(platform_minor=charge_minor)
    contributors = largest_remainder(total=pool, weights=per_contributor)
    experts: dict[int, int] = {}
    for contributor, amount in contributors.items():
        mine = {expert: n for expert, n in numerators.items() if owners[expert] == contributor}
        experts.update(largest_remainder(total=amount, weights=mine))
    return UsageAllocation(
        platform_minor=charge_minor - sum(contributors.values()),
        contributors={c: a for c, a in contributors.items() if a},
        experts={e: a for e, a in experts.items() if a},
    )


def measured_shares_bp(values: dict) -> dict:
    """Each expert's share of a system's measured contribution, in basis points, from its measured value (a
    decimal string, e.g. a Shapley value): a negative value (the expert made the system worse) or one that is
    not a plain decimal counts as zero; the rest split 10000 in proportion to their millionths, by largest
    remainder. When no value is positive every share is 0, and the attribution alone decides."""
    return largest_remainder(total=BASIS_POINTS, weights={key: weight_ppm(value) for key, value in values.items()})
