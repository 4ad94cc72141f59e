"""Attribution: how much each expert of a system shaped one answer. The one place that normalises it.

    normalise_attribution(weights, expert_ids) -> {expert_id: Fraction}   exact shares, non-negative, summing to 1
    rounded_attribution(weights, expert_ids) -> {expert_id: Decimal}      the same to 6 places, summing to exactly 1

Strategies report raw weights; `Strategy.run` normalises them (as floats of the exact shares), the worker
rounds them to the decimal strings of the task contract, and the marketplace records those strings as sent.
Pure Python: no torch, no Django."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction

from composition.errors import CompositionError

ATTRIBUTION_PLACES = 6
_UNIT = Fraction(1, 10**ATTRIBUTION_PLACES)
_PLACES = Decimal(1).scaleb(-ATTRIBUTION_PLACES)


def normalise_attribution(weights: Mapping[str, object], expert_ids: Sequence[str]) -> dict[str, Fraction]:
    """Each of `expert_ids` (and nothing else) with its share of the positive weight: a weight that is missing,
    negative or NaN counts as 0, and when no weight is positive every expert gets an equal share ({} for no
    experts). Exact: a float weight is read as the decimal Python prints for it, a string as the decimal it
    writes. Raises CompositionError for an infinite weight or a string that is not a number."""
    values = {expert_id: max(Fraction(0), _exact(expert_id, weights.get(expert_id, 0))) for expert_id in expert_ids}
    total = sum(values.values(), Fraction(0))
    if total == 0:
        return {expert_id: Fraction(1, len(values)) for expert_id in values}
    return {expert_id: value / total for expert_id, value in values.items()}


def rounded_attribution(weights: Mapping[str, object], expert_ids: Sequence[str]) -> dict[str, Decimal]:
    """normalise_attribution to ATTRIBUTION_PLACES decimal places, summing to exactly 1: each share is rounded
    down, and the millionths left over go one each to the largest remainders (ties to the smaller expert id)."""
    shares = normalise_attribution(weights, expert_ids)
    floors = {expert_id: math.floor(share / _UNIT) for expert_id, share in shares.items()}
    missing = 10**ATTRIBUTION_PLACES - sum(floors.values()) if shares else 0
    for expert_id in sorted(shares, key=lambda e: (floors[e] - shares[e] / _UNIT, e))[:missing]:
        floors[expert_id] += 1
    return {expert_id: Decimal(units).scaleb(-ATTRIBUTION_PLACES).quantize(_PLACES) for expert_id, units in floors.items()}


def _exact(expert_id: str, weight: object) -> Fraction:
    if isinstance(weight, float):
        if math.isnan(weight):
            return Fraction(0)
        if math.isinf(weight):
            raise CompositionError(f"attribution weight for {expert_id!r} is infinite")
        return Fraction(repr(weight))
    if isinstance(weight, (int, Fraction, Decimal)) and not isinstance(weight, bool):
        if isinstance(weight, Decimal) and not weight.is_finite():
            if weight.is_nan():
                return Fraction(0)
            raise CompositionError(f"attribution weight for {expert_id!r} is infinite")
        return Fraction(weight)
    if isinstance(weight, str):
        try:
            return _exact(expert_id, Decimal(weight.strip()))
        except ArithmeticError:
            pass
        raise CompositionError(f"attribution weight for {expert_id!r} must be a decimal number, got {weight!r}")
    raise CompositionError(f"attribution weight for {expert_id!r} must be a number, got {type(weight).__name__}")
