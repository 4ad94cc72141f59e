"""The batch allocation in integer arrays (credit/split.py) equals the rule of credit/rules.py, usage by usage."""
import numpy as np
from hypothesis import given, settings as hypothesis_settings, strategies as st

from marketplace.credit.rules import MAX_CHARGE_MINOR, allocate_usage, weight_ppm
from marketplace.credit.split import allocate_batch, exact_sums

EXPERTS = range(1, 13)
decimal_weights = st.one_of(
    st.integers(0, 999_999).map(str),
    st.decimals(min_value=0, max_value=999_999, places=6, allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["999999.999999", "0.000001", "0", "1e-3", "-1", "x"]),
)
one_usage = st.fixed_dictionaries({
    "charge": st.one_of(st.integers(0, MAX_CHARGE_MINOR), st.sampled_from([0, 1, 2, MAX_CHARGE_MINOR - 1, MAX_CHARGE_MINOR])),
    "alpha": st.integers(0, 12_000),
    "attribution": st.dictionaries(st.sampled_from(EXPERTS), decimal_weights, max_size=8),
    "shares": st.dictionaries(st.sampled_from(EXPERTS), st.integers(0, 10_000), max_size=8),
    "revoked": st.sets(st.sampled_from(EXPERTS), max_size=3),
})


def _batch(usages: list[dict], owners: dict[int, int], fee_bp: int):
    rows = []
    for index, usage in enumerate(usages, start=1):
        for expert, weight in usage["attribution"].items():
            if expert not in usage["revoked"]:
                rows.append((index, expert, owners[expert], weight_ppm(weight), usage["shares"].get(expert, 0)))
    columns = np.array(rows, dtype=np.int64).reshape(-1, 5)
    return allocate_batch(
        usage_id=np.arange(1, len(usages) + 1, dtype=np.int64),
        charge=np.array([u["charge"] for u in usages], dtype=np.int64),
        alpha_bp=np.array([u["alpha"] for u in usages], dtype=np.int64),
        fee_bp=fee_bp,
        row_usage=columns[:, 0], row_expert=columns[:, 1], row_contributor=columns[:, 2],
        row_attribution_ppm=columns[:, 3], row_share_bp=columns[:, 4],
    )


@hypothesis_settings(max_examples=300, deadline=None)
@given(usages=st.lists(one_usage, min_size=1, max_size=12),
       owners=st.fixed_dictionaries({e: st.integers(1, 5) for e in EXPERTS}),
       fee_bp=st.integers(0, 10_000))
def test_every_line_of_a_batch_equals_the_rule_for_its_usage(usages, owners, fee_bp):
    lines = _batch(usages, owners, fee_bp)

    for index, usage in enumerate(usages, start=1):
        expected = allocate_usage(
            charge_minor=usage["charge"], fee_bp=fee_bp, alpha_bp=usage["alpha"],
            attribution={str(e): w for e, w in usage["attribution"].items()},
            shares_bp=usage["shares"], owners=owners, revoked=usage["revoked"],
        )
        mine = lines.usage_id == index
        experts = dict(zip(lines.expert_id[mine].tolist(), lines.amount[mine].tolist()))
        assert experts == expected.experts
        assert int(lines.platform_amount[index - 1]) == expected.platform_minor
        assert sum(experts.values()) + int(lines.platform_amount[index - 1]) == usage["charge"]
    assert (lines.amount > 0).all() and (lines.platform_amount >= 0).all()


def test_an_expert_row_of_a_usage_outside_the_batch_is_ignored():
    lines = allocate_batch(
        usage_id=np.array([10], dtype=np.int64), charge=np.array([1000], dtype=np.int64),
        alpha_bp=np.array([10_000], dtype=np.int64), fee_bp=2000,
        row_usage=np.array([10, 11]), row_expert=np.array([1, 2]), row_contributor=np.array([1, 2]),
        row_attribution_ppm=np.array([1, 1]), row_share_bp=np.array([0, 0]),
    )

    assert lines.usage_id.tolist() == [10] and lines.amount.tolist() == [800]
    assert lines.platform_usage_id.tolist() == [10] and lines.platform_amount.tolist() == [200]


def test_sums_of_many_largest_charges_are_exact():
    amounts = np.full(20_000, MAX_CHARGE_MINOR, dtype=np.int64)
    keys = np.stack([np.arange(20_000) % 2, np.zeros(20_000, dtype=np.int64)], axis=1)

    assert exact_sums(amounts, keys) == {(0, 0): 10_000 * MAX_CHARGE_MINOR, (1, 0): 10_000 * MAX_CHARGE_MINOR}
