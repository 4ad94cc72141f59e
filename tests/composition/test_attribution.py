"""composition.attribution: the one normalisation of an answer's attribution, and its rounding to 6 places."""
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from composition.attribution import normalise_attribution, rounded_attribution
from composition.errors import CompositionError

expert_ids = st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=3), min_size=1, max_size=8, unique=True)
weight = st.one_of(
    st.floats(min_value=-10, max_value=1e6),
    st.just(float("nan")),
    st.integers(min_value=-5, max_value=10**9),
    st.decimals(min_value=-10, max_value=10**6, allow_nan=False, places=8).map(str),
)


@st.composite
def attribution_case(draw):
    ids = draw(expert_ids)
    keys = st.one_of(st.sampled_from(ids), st.text(alphabet="xyz", min_size=1, max_size=2))
    return ids, draw(st.dictionaries(keys, weight, max_size=10))


@given(attribution_case())
def test_shares_cover_exactly_the_systems_experts_are_non_negative_and_sum_to_one(case):
    ids, weights = case
    shares = normalise_attribution(weights, ids)
    assert list(shares) == ids
    assert all(share >= 0 for share in shares.values())
    assert sum(shares.values()) == 1


@given(attribution_case())
def test_rounded_shares_have_six_places_and_sum_to_exactly_one(case):
    ids, weights = case
    rounded = rounded_attribution(weights, ids)
    assert list(rounded) == ids
    assert all(value >= 0 and value.as_tuple().exponent == -6 for value in rounded.values())
    assert sum(rounded.values()) == 1


@given(attribution_case())
def test_each_rounded_share_is_within_one_millionth_of_the_exact_share(case):
    ids, weights = case
    exact = normalise_attribution(weights, ids)
    rounded = rounded_attribution(weights, ids)
    assert all(abs(Fraction(rounded[e]) - exact[e]) < Fraction(1, 10**6) for e in ids)


@given(attribution_case(), st.randoms(use_true_random=False))
def test_rounding_is_deterministic_whatever_order_the_weights_come_in(case, random):
    ids, weights = case
    items = list(weights.items())
    random.shuffle(items)
    assert rounded_attribution(dict(items), ids) == rounded_attribution(weights, ids)
    assert rounded_attribution(weights, ids) == rounded_attribution(weights, ids)


@given(attribution_case())
def test_rounded_shares_are_a_fixed_point(case):
    ids, weights = case
    rounded = rounded_attribution(weights, ids)
    assert rounded_attribution({e: str(v) for e, v in rounded.items()}, ids) == rounded


def test_the_millionths_left_over_go_to_the_largest_remainders_ties_to_the_smaller_id():
    assert rounded_attribution({"a": 1, "b": 1, "c": 1}, ["c", "b", "a"]) == {
        "c": Decimal("0.333333"), "b": Decimal("0.333333"), "a": Decimal("0.333334")}
    assert rounded_attribution({"a": 1, "b": 2}, ["a", "b"]) == {"a": Decimal("0.333333"), "b": Decimal("0.666667")}


def test_a_float_weight_is_read_as_the_decimal_it_prints_as():
    assert normalise_attribution({"a": 0.1, "b": 0.2}, ["a", "b"]) == {"a": Fraction(1, 3), "b": Fraction(2, 3)}


def test_missing_negative_and_nan_weights_count_as_zero():
    assert normalise_attribution({"a": 3.0, "b": -1.0, "c": float("nan")}, ["a", "b", "c", "d"]) == {
        "a": 1, "b": 0, "c": 0, "d": 0}


def test_weights_of_experts_outside_the_system_are_ignored():
    assert normalise_attribution({"a": 1, "stranger": 99}, ["a", "b"]) == {"a": 1, "b": 0}


def test_no_positive_weight_gives_every_expert_an_equal_share_and_no_expert_gives_nothing():
    assert normalise_attribution({"a": 0, "b": -2}, ["a", "b", "c", "d"]) == {e: Fraction(1, 4) for e in "abcd"}
    assert normalise_attribution({}, []) == {}
    assert rounded_attribution({"a": 5}, []) == {}


@pytest.mark.parametrize("bad", [float("inf"), "-Infinity", "lots", True, None, [1]])
def test_a_weight_that_is_no_finite_number_is_refused_with_the_experts_name(bad):
    with pytest.raises(CompositionError, match="'a'"):
        normalise_attribution({"a": bad}, ["a"])
