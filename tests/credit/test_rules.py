"""Properties of the allocation rule, and the SQL allocation checked equal to the Python reference."""
from datetime import timedelta
from fractions import Fraction

import pytest
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from marketplace.credit.allocation import allocate_pending_usage
from marketplace.credit.reference import reference_allocation
from marketplace.credit.rules import MAX_CHARGE_MINOR, allocate_usage, largest_remainder, weight_ppm
from marketplace.models import ContributionMeasurement, CreditLine, Usage

weights = st.dictionaries(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=10**10), min_size=1, max_size=12)


@given(total=st.integers(min_value=0, max_value=10**9), weights=weights)
def test_largest_remainder_sums_exactly_to_the_total_and_never_gives_a_negative_part(total, weights):
    parts = largest_remainder(total=total, weights=weights)

    if sum(weights.values()) == 0:
        assert set(parts.values()) == {0}
        return
    assert sum(parts.values()) == total
    for key, part in parts.items():
        exact = Fraction(total * weights[key], sum(weights.values()))
        assert part >= 0
        assert exact - 1 < part < exact + 1


def test_largest_remainder_breaks_ties_towards_the_smaller_key():
    assert largest_remainder(total=1, weights={7: 1, 3: 1, 5: 1}) == {7: 0, 3: 1, 5: 0}
    assert largest_remainder(total=2, weights={7: 1, 3: 1, 5: 1}) == {7: 0, 3: 1, 5: 1}


@pytest.mark.parametrize("text, ppm", [
    ("1", 1_000_000), ("0.5", 500_000), ("0.3333339", 333_333), ("2.25", 2_250_000),
    ("-0.5", 0), ("1e-3", 0), ("abc", 0), ("", 0), ("1234567", 0),
])
def test_weights_are_read_as_plain_decimals_in_parts_per_million(text, ppm):
    assert weight_ppm(text) == ppm


decimal_strings = st.one_of(
    st.decimals(min_value=0, max_value=3, places=7, allow_nan=False).map(str),
    st.sampled_from(["0", "1", "0.5", "nonsense", "-1", "999999.999999", "0.000001"]),
)
# Any charge the marketplace accepts, with the small ones and the bound itself drawn often.
charges = st.one_of(st.integers(0, 10**4), st.integers(0, MAX_CHARGE_MINOR), st.just(MAX_CHARGE_MINOR))
attribution = st.dictionaries(st.integers(min_value=1, max_value=8).map(str), decimal_strings, max_size=8)


@given(
    charge=charges,
    fee_bp=st.integers(min_value=0, max_value=10_000),
    alpha_bp=st.integers(min_value=0, max_value=12_000),
    attribution=attribution,
    shares=st.dictionaries(st.integers(1, 8), st.integers(0, 10_000)),
    owners=st.fixed_dictionaries({e: st.integers(1, 4) for e in range(1, 9)}),
    revoked=st.sets(st.integers(1, 8)),
)
def test_any_usage_charge_is_split_exactly_with_no_negative_part(charge, fee_bp, alpha_bp, attribution, shares, owners, revoked):
    result = allocate_usage(charge_minor=charge, fee_bp=fee_bp, alpha_bp=alpha_bp, attribution=attribution,
                            shares_bp=shares, owners=owners, revoked=revoked)

    assert result.platform_minor + sum(result.contributors.values()) == charge
    assert result.platform_minor >= charge * fee_bp // 10_000
    assert min([result.platform_minor, *result.contributors.values(), *result.experts.values()]) >= 0
    assert not set(result.experts) & revoked
    for contributor, amount in result.contributors.items():
        assert sum(a for e, a in result.experts.items() if owners[e] == contributor) == amount


usage_rows = st.lists(
    st.tuples(
        charges,
        st.dictionaries(st.integers(0, 3), decimal_strings, max_size=4),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.django_db
@hypothesis_settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=usage_rows, shares=st.lists(st.integers(0, 10_000), min_size=4, max_size=4), alpha=st.integers(0, 10_000),
       revoke=st.integers(0, 4))
def test_the_sql_allocation_equals_the_python_reference_on_random_data_up_to_the_largest_charge(world, rows, shares, alpha, revoke):
    now = timezone.now()
    world.system.attribution_alpha_bp = alpha
    world.system.save(update_fields=["attribution_alpha_bp"])
    for expert, share in zip(world.experts, shares):
        ContributionMeasurement.objects.create(system=world.system, expert=expert, method="shapley", metric="m",
                                               dataset_hash="0", value="0", share_bp=share)
    if revoke < 4:
        world.experts[revoke].consent_revoked_at = now - timedelta(minutes=30)
        world.experts[revoke].save(update_fields=["consent_revoked_at"])
    usages = Usage.objects.bulk_create(
        Usage(request_id=f"r-{now.timestamp()}-{i}", organization=world.organization, system=world.system,
              prompt_tokens=1, completion_tokens=1, latency_ms=1, charge_minor=charge,
              attribution={str(world.experts[k].id): v for k, v in weights_by_index.items()})
        for i, (charge, weights_by_index, _) in enumerate(rows)
    )
    earlier = [u.pk for u, (_, _, early) in zip(usages, rows) if early]
    Usage.objects.filter(pk__in=earlier).update(created_at=now - timedelta(hours=1))

    allocate_pending_usage(batch_size=7)

    for usage in Usage.objects.filter(pk__in=[u.pk for u in usages]).select_related("system"):
        expected = reference_allocation(usage=usage)
        lines = CreditLine.objects.filter(usage=usage)
        assert {line.expert_id: line.amount_minor for line in lines if line.expert_id} == expected.experts
        assert lines.get(expert=None).amount_minor == expected.platform_minor
        assert lines.aggregate(total=Sum("amount_minor"))["total"] == usage.charge_minor
        assert not lines.filter(amount_minor__lt=0).exists()
    if revoke < 4:
        world.experts[revoke].consent_revoked_at = None
        world.experts[revoke].save(update_fields=["consent_revoked_at"])


def test_measured_shares_split_ten_thousand_basis_points_over_the_positive_values():
    from marketplace.credit.rules import measured_shares_bp

    assert measured_shares_bp({1: "0.3", 2: "0.1", 3: "-0.2"}) == {1: 7500, 2: 2500, 3: 0}
    assert measured_shares_bp({1: "0.333333", 2: "0.333333", 3: "0.333333"}) == {1: 3334, 2: 3333, 3: 3333}


def test_when_no_measured_value_is_positive_every_share_is_zero():
    from marketplace.credit.rules import measured_shares_bp

    assert measured_shares_bp({1: "0", 2: "-0.05", 3: "not a number"}) == {1: 0, 2: 0, 3: 0}
