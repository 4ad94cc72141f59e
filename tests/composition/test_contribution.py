import json

import pytest

from composition.contribution import (
    CachedGame,
    exact_shapley,
    leave_one_out,
    mc_shapley,
    measure_contribution,
    priority_report,
)
from composition.errors import CompositionError


def additive(weights):
    return lambda coalition: sum(weights[p] for p in coalition)


def glove(coalition):
    """Player L holds a left glove, R1 and R2 right gloves; a pair is worth 1."""
    return min(len(coalition & {"L"}), len(coalition & {"R1", "R2"}))


def test_exact_shapley_of_an_additive_game_is_each_players_own_worth():
    weights = {"a": 1.0, "b": 2.5, "c": -0.5}
    values = exact_shapley(CachedGame(list(weights), additive(weights)))
    assert values == pytest.approx(weights)


def test_exact_shapley_of_a_symmetric_game_splits_the_grand_value_equally():
    values = exact_shapley(CachedGame(["a", "b", "c", "d"], lambda s: len(s) ** 2))
    assert values == pytest.approx({p: 4.0 for p in "abcd"})


def test_exact_shapley_of_the_glove_game():
    values = exact_shapley(CachedGame(["L", "R1", "R2"], glove))
    assert values == pytest.approx({"L": 2 / 3, "R1": 1 / 6, "R2": 1 / 6})


def test_shapley_values_are_efficient_on_an_arbitrary_game():
    def value(coalition):
        return (hash(tuple(sorted(coalition))) % 97) / 97 if coalition else 0.0

    players = ["p1", "p2", "p3", "p4", "p5"]
    values = exact_shapley(CachedGame(players, value))
    assert sum(values.values()) == pytest.approx(value(frozenset(players)))


def test_leave_one_out_is_the_loss_when_each_player_leaves():
    game = CachedGame(["L", "R1", "R2"], glove)
    assert leave_one_out(game) == {"L": 1.0, "R1": 0.0, "R2": 0.0}


def test_each_coalition_is_evaluated_once():
    calls = []

    def value(coalition):
        calls.append(coalition)
        return len(coalition)

    game = CachedGame(["a", "b", "c", "d"], value)
    exact_shapley(game)
    leave_one_out(game)
    mc_shapley(game, seed=0, min_permutations=5, max_permutations=50, tolerance=0.0)
    assert len(calls) == len(set(calls)) == 16 == game.evaluations


def test_monte_carlo_shapley_converges_to_the_exact_values():
    weights = {f"p{i}": float(i) for i in range(6)}

    def value(coalition):  # additive plus a pairwise synergy between p1 and p2
        return additive(weights)(coalition) + (3.0 if {"p1", "p2"} <= coalition else 0.0)

    exact = exact_shapley(CachedGame(list(weights), value))
    estimate, errors, permutations = mc_shapley(CachedGame(list(weights), value), seed=1, tolerance=0.05,
                                                max_permutations=2000)
    assert permutations < 2000
    assert max(errors.values()) <= 0.05
    for player in weights:
        assert estimate[player] == pytest.approx(exact[player], abs=4 * 0.05)


def test_monte_carlo_shapley_stops_at_the_cap_when_the_error_stays_high():
    values, errors, permutations = mc_shapley(CachedGame(["L", "R1", "R2"], glove), seed=0, tolerance=1e-9,
                                              max_permutations=30)
    assert permutations == 30
    assert max(errors.values()) > 1e-9


def test_monte_carlo_shapley_is_reproducible_with_a_seed():
    players = [f"p{i}" for i in range(5)]

    def value(coalition):
        return len(coalition) ** 1.5 + (1.0 if "p0" in coalition else 0.0)

    first = mc_shapley(CachedGame(players, value), seed=3, max_permutations=40, tolerance=0.0)
    second = mc_shapley(CachedGame(players, value), seed=3, max_permutations=40, tolerance=0.0)
    assert first == second


def test_exact_shapley_refuses_more_than_ten_experts():
    with pytest.raises(CompositionError, match="limited to 10 experts"):
        exact_shapley(CachedGame([f"p{i}" for i in range(11)], len))


def test_measurement_is_ready_for_the_ledger_without_floats():
    result = measure_contribution(players=["L", "R1", "R2"], value=glove, method="exact_shapley",
                                  dataset_sha256="ab" * 32, metric="exact_match")
    payload = result.ledger_payload()
    assert payload["values"] == {"L": "0.666667", "R1": "0.166667", "R2": "0.166667"}
    assert payload["method"] == "exact_shapley" and payload["metric"] == "exact_match"
    assert payload["samples"] == 8 and payload["evaluations"] == 8
    assert payload["dataset_sha256"] == "ab" * 32

    def no_floats(value):
        if isinstance(value, dict):
            return all(no_floats(v) for v in value.values())
        return not isinstance(value, float)

    assert no_floats(payload)
    assert json.loads(json.dumps(payload, sort_keys=True)) == payload


def test_monte_carlo_measurement_reports_its_permutations_and_errors():
    result = measure_contribution(players=["a", "b", "c"], value=lambda s: len(s), method="mc_shapley",
                                  dataset_sha256="0" * 64, metric="token_f1", tolerance=0.01)
    assert result.values == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})
    assert result.samples == 10  # symmetric additive game: zero error after the minimum
    assert result.ledger_payload()["std_errors"] == {"a": "0.000000", "b": "0.000000", "c": "0.000000"}


def test_unknown_methods_and_empty_expert_lists_are_refused():
    with pytest.raises(CompositionError, match="unknown contribution method 'banzhaf'"):
        measure_contribution(players=["a"], value=len, method="banzhaf", dataset_sha256="", metric="m")
    with pytest.raises(CompositionError, match="at least one expert"):
        measure_contribution(players=[], value=len, method="exact_shapley", dataset_sha256="", metric="m")


def test_priority_report_compares_the_system_with_the_contributors_own_expert():
    report = priority_report(
        priorities={"rev": ["reverse", "missing"], "upp": ["uppercase"]},
        system_per_task={"reverse": 0.9, "uppercase": 0.5},
        expert_per_task={"rev": {"reverse": 0.8, "uppercase": 0.0}, "upp": {"reverse": 0.0, "uppercase": 0.7}},
    )
    assert report["rev"]["system"] == 0.9 and report["rev"]["expert"] == 0.8
    assert report["rev"]["missing_tasks"] == ["missing"]
    assert report["upp"]["gain"] == pytest.approx(-0.2)
