import pytest

from composition.coalitions import EXACT_SHAPLEY_UP_TO, accuracy_report, measure_experts
from composition.errors import CompositionError
from composition.evaluation import wilson_interval


def union_game(solves: dict[str, set[int]], n: int, base: set[int] = frozenset()):
    """A coalition solves an item when the base or any of its experts does."""
    asked = []

    def correct_on(coalition):
        asked.append(coalition)
        solved = set(base).union(*(solves[p] for p in coalition))
        return [index in solved for index in range(n)]

    return correct_on, asked


def test_accuracy_is_reported_overall_and_per_group_with_wilson_intervals():
    report = accuracy_report([True, True, False, True], ["add", "add", "add", "general"])

    assert report["overall"].mean == 0.75 and report["overall"].n == 4
    assert (report["overall"].low, report["overall"].high) == wilson_interval(3, 4)
    assert report["per_group"]["add"].mean == pytest.approx(2 / 3) and report["per_group"]["general"].n == 1


def test_an_item_solved_by_one_expert_alone_is_credited_to_it_and_a_shared_one_is_split():
    # items 0,1: only a; item 2: a and b; item 3: the base already; item 4: nobody
    correct_on, asked = union_game({"a": {0, 1, 2}, "b": {2}}, n=5, base={3})

    measured = measure_experts(players=["a", "b"], correct_on=correct_on, dataset_sha256="x" * 64, metric="is_correct")

    contribution = measured.contribution
    assert contribution.method == "exact_shapley"
    assert contribution.values == pytest.approx({"a": 2.5 / 5, "b": 0.5 / 5})
    assert contribution.empty_value == pytest.approx(1 / 5) and contribution.grand_value == pytest.approx(4 / 5)
    assert len(asked) == len(set(asked)) == 4  # each coalition answered once
    for player, (low, high) in measured.intervals.items():
        assert low <= contribution.values[player] <= high
    assert measured.accuracy_of({"a"}).mean == pytest.approx(4 / 5)


def test_above_the_exact_limit_monte_carlo_is_used_and_its_intervals_come_from_the_same_coalitions():
    players = [f"e{i}" for i in range(EXACT_SHAPLEY_UP_TO + 1)]
    solves = {player: {i, (i + 1) % len(players)} for i, player in enumerate(players)}
    correct_on, asked = union_game(solves, n=len(players) + 2)

    measured = measure_experts(players=players, correct_on=correct_on, dataset_sha256="x" * 64, metric="is_correct",
                               max_permutations=40)

    assert measured.contribution.method == "mc_shapley"
    assert sum(measured.contribution.values.values()) == pytest.approx(
        measured.contribution.grand_value - measured.contribution.empty_value)
    assert len(asked) == measured.contribution.evaluations
    for player, (low, high) in measured.intervals.items():
        assert low - 1e-9 <= measured.contribution.values[player] <= high + 1e-9


def test_coalitions_that_answer_different_numbers_of_items_are_refused():
    def correct_on(coalition):
        return [True] * (1 + len(coalition))

    with pytest.raises(CompositionError, match="same items"):
        measure_experts(players=["a"], correct_on=correct_on, dataset_sha256="x" * 64, metric="is_correct")


def test_coalitions_know_nothing_of_how_systems_are_built():
    import ast
    from pathlib import Path

    import composition.coalitions as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name and name.startswith("composition.strategies")}
    assert not {name for name in imported if name and name.split(".")[0] in ("django", "marketplace", "torch")}
