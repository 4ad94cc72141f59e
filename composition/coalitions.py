"""A system's measured accuracy and each expert's contribution, from the answers of its coalitions.

The caller says how a coalition (a set of expert ids) answers the evaluation items: `correct_on(coalition)`
returns one bool per item, in a fixed order, for the system restricted to that coalition (the empty
coalition is the base model alone). Nothing here knows how a system is built or served.

    accuracy_report(correct, groups)   overall and per-group accuracy, each with a 95% Wilson interval
    measure_experts(players, correct_on, ...)
        Shapley values by composition.contribution (exact up to EXACT_SHAPLEY_UP_TO experts, Monte Carlo
        with its stopping rule above), where v(S) is the accuracy of coalition S. A Shapley value is a mean
        over items of each item's own Shapley value (v is a mean over items and Shapley is linear), so its
        95% interval is a percentile bootstrap over items of those per-item values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from composition.contribution import (
    CachedGame,
    Contribution,
    exact_shapley,
    leave_one_out,
    mc_shapley,
    measure_contribution,
)
from composition.errors import CompositionError
from composition.evaluation import Score, bootstrap_interval, score

EXACT_SHAPLEY_UP_TO = 6  # 2**6 = 64 coalitions; above that, Monte Carlo permutations with a stopping rule


def accuracy_report(correct: list[bool], groups: list[str]) -> dict:
    """{"overall": Score, "per_group": {group: Score}}: proportions with 95% Wilson intervals."""
    if len(correct) != len(groups):
        raise CompositionError(f"{len(correct)} answers for {len(groups)} items")
    by_group: dict[str, list[float]] = {}
    for value, group in zip(correct, groups):
        by_group.setdefault(group, []).append(float(bool(value)))
    return {
        "overall": score([float(bool(value)) for value in correct]),
        "per_group": {group: score(values) for group, values in by_group.items()},
    }


@dataclass
class ExpertMeasurement:
    contribution: Contribution
    intervals: dict[str, tuple[float, float]]  # expert id -> 95% bootstrap interval of its value
    answers: dict[frozenset[str], list[bool]]  # every coalition answered, item by item

    def accuracy_of(self, coalition) -> Score:
        return score([float(value) for value in self.answers[frozenset(coalition)]])


def contribution_method(player_count: int) -> str:
    return "exact_shapley" if player_count <= EXACT_SHAPLEY_UP_TO else "mc_shapley"


def measure_experts(*, players: list[str], correct_on: Callable[[frozenset[str]], list[bool]], dataset_sha256: str,
                    metric: str, seed: int = 0, tolerance: float = 0.01, max_permutations: int = 500,
                    method: str | None = None) -> ExpertMeasurement:
    method = method or contribution_method(len(players))
    answers: dict[frozenset[str], list[bool]] = {}

    def value(coalition: frozenset[str]) -> float:
        answered = [bool(v) for v in correct_on(coalition)]
        if not answered:
            raise CompositionError("an evaluation needs at least one item")
        if answers and len(answered) != len(next(iter(answers.values()))):
            raise CompositionError("every coalition must answer the same items")
        answers[coalition] = answered
        return sum(answered) / len(answered)

    contribution = measure_contribution(players=players, value=value, method=method, dataset_sha256=dataset_sha256,
                                        metric=metric, seed=seed, tolerance=tolerance,
                                        max_permutations=max_permutations)
    per_item = _per_item_values(players, answers, method=method, seed=seed, permutations=contribution.samples)
    intervals = {player: bootstrap_interval(values, seed=seed) for player, values in per_item.items()}
    return ExpertMeasurement(contribution=contribution, intervals=intervals, answers=answers)


def _per_item_values(players: list[str], answers: dict[frozenset[str], list[bool]], *, method: str, seed: int,
                     permutations: int) -> dict[str, list[float]]:
    """Each expert's value in each item's own game, from the coalitions already answered (the same seed
    gives Monte Carlo the same permutations, so it asks for no coalition the measurement did not)."""
    n = len(next(iter(answers.values())))
    per_item: dict[str, list[float]] = {player: [] for player in players}
    for index in range(n):
        game = CachedGame(players, lambda coalition, index=index: float(answers[coalition][index]))
        if method == "exact_shapley":
            values = exact_shapley(game)
        elif method == "mc_shapley":
            values, _, _ = mc_shapley(game, seed=seed, min_permutations=permutations, max_permutations=permutations)
        else:
            values = leave_one_out(game)
        for player in players:
            per_item[player].append(values[player])
    return per_item
