"""Each expert's measured contribution to a system, as a cooperative game over the experts.

The value v(S) of a set of experts S is a system's score on an evaluation set when built from S
alone (the empty set is the base model). Methods:
  leave_one_out   v(N) − v(N \\ {i})
  exact_shapley   Σ_S |S|!(n−|S|−1)!/n! · (v(S ∪ {i}) − v(S)), for up to 10 experts
  mc_shapley      mean marginal contribution over random permutations (seeded), stopping when every
                  expert's standard error is at most `tolerance` (after `min_permutations`), or at
                  `max_permutations`
Every coalition's value is computed once (CachedGame). Results carry the dataset hash, metric,
method, number of samples and standard errors, and `ledger_payload()` renders them with decimal
strings and integers only.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Callable

from composition.errors import CompositionError

MAX_EXACT_PLAYERS = 10


class CachedGame:
    """v(S) with each coalition evaluated at most once."""

    def __init__(self, players: list[str], value: Callable[[frozenset[str]], float]):
        if len(set(players)) != len(players):
            raise CompositionError("each expert may appear once in a contribution measurement")
        self.players = list(players)
        self._value = value
        self.cache: dict[frozenset[str], float] = {}

    def __call__(self, coalition) -> float:
        coalition = frozenset(coalition)
        if coalition not in self.cache:
            self.cache[coalition] = float(self._value(coalition))
        return self.cache[coalition]

    @property
    def evaluations(self) -> int:
        return len(self.cache)


@dataclass
class Contribution:
    method: str
    metric: str
    dataset_sha256: str
    values: dict[str, float]
    std_errors: dict[str, float]
    samples: int  # permutations for mc_shapley, coalitions for the exact methods
    evaluations: int  # distinct coalitions evaluated
    grand_value: float
    empty_value: float
    details: dict = field(default_factory=dict)

    def ledger_payload(self, places: int = 6) -> dict:
        def decimal(value: float) -> str:
            return decimal_string(value, places)

        return {
            "dataset_sha256": self.dataset_sha256,
            "metric": self.metric,
            "method": self.method,
            "samples": int(self.samples),
            "evaluations": int(self.evaluations),
            "grand_value": decimal(self.grand_value),
            "empty_value": decimal(self.empty_value),
            "values": {player: decimal(value) for player, value in sorted(self.values.items())},
            "std_errors": {player: decimal(value) for player, value in sorted(self.std_errors.items())},
        }


def decimal_string(value: float, places: int = 6) -> str:
    """A float as a decimal string rounded to `places` (half to even): how measurements enter the ledger."""
    return str(Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN))


def leave_one_out(game: CachedGame) -> dict[str, float]:
    everyone = frozenset(game.players)
    return {player: game(everyone) - game(everyone - {player}) for player in game.players}


def exact_shapley(game: CachedGame) -> dict[str, float]:
    n = len(game.players)
    if n > MAX_EXACT_PLAYERS:
        raise CompositionError(f"exact Shapley is limited to {MAX_EXACT_PLAYERS} experts; this game has {n}")
    values = {}
    for player in game.players:
        others = [p for p in game.players if p != player]
        total = 0.0
        for size in range(len(others) + 1):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                coalition = frozenset(subset)
                total += weight * (game(coalition | {player}) - game(coalition))
        values[player] = total
    return values


def mc_shapley(game: CachedGame, *, seed: int = 0, tolerance: float = 0.01, min_permutations: int = 10,
               max_permutations: int = 500) -> tuple[dict[str, float], dict[str, float], int]:
    """(values, standard errors, permutations used)."""
    if min_permutations < 2 or max_permutations < min_permutations:
        raise CompositionError("need 2 <= min_permutations <= max_permutations")
    rng = random.Random(seed)
    sums = {player: 0.0 for player in game.players}
    squares = {player: 0.0 for player in game.players}
    count = 0
    errors = {player: float("inf") for player in game.players}
    while count < max_permutations:
        order = list(game.players)
        rng.shuffle(order)
        coalition: frozenset[str] = frozenset()
        previous = game(coalition)
        for player in order:
            coalition = coalition | {player}
            current = game(coalition)
            marginal = current - previous
            sums[player] += marginal
            squares[player] += marginal * marginal
            previous = current
        count += 1
        if count >= min_permutations:
            for player in game.players:
                mean = sums[player] / count
                variance = max(0.0, squares[player] / count - mean * mean) * count / (count - 1)
                errors[player] = math.sqrt(variance / count)
            if max(errors.values()) <= tolerance:
                break
    return {player: sums[player] / count for player in game.players}, errors, count


def measure_contribution(*, players: list[str], value: Callable[[frozenset[str]], float], method: str,
                         dataset_sha256: str, metric: str, seed: int = 0, tolerance: float = 0.01,
                         min_permutations: int = 10, max_permutations: int = 500,
                         game: CachedGame | None = None) -> Contribution:
    if not players:
        raise CompositionError("contribution needs at least one expert (the expert list is empty)")
    game = game or CachedGame(players, value)
    if method == "leave_one_out":
        values, errors, samples = leave_one_out(game), {p: 0.0 for p in players}, len(players) + 1
    elif method == "exact_shapley":
        values, errors, samples = exact_shapley(game), {p: 0.0 for p in players}, 2 ** len(players)
    elif method == "mc_shapley":
        values, errors, samples = mc_shapley(game, seed=seed, tolerance=tolerance,
                                             min_permutations=min_permutations, max_permutations=max_permutations)
    else:
        raise CompositionError(f"unknown contribution method {method!r}; known: leave_one_out, exact_shapley, mc_shapley")
    return Contribution(
        method=method, metric=metric, dataset_sha256=dataset_sha256, values=values, std_errors=errors,
        samples=samples, evaluations=game.evaluations, grand_value=game(frozenset(players)),
        empty_value=game(frozenset()),
    )


def priority_report(*, priorities: dict[str, list[str]], system_per_task: dict[str, float],
                    expert_per_task: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per contributor's expert: the system's mean score on the expert's priority tasks against the
    expert's own mean score on those tasks (tasks absent from the evaluation are listed apart)."""
    report = {}
    for expert_id, tasks in priorities.items():
        measured = [task for task in tasks if task in system_per_task]
        missing = [task for task in tasks if task not in system_per_task]
        if measured:
            system = sum(system_per_task[task] for task in measured) / len(measured)
            own = sum(expert_per_task[expert_id][task] for task in measured) / len(measured)
        else:
            system = own = None
        report[expert_id] = {"tasks": measured, "missing_tasks": missing, "system": system, "expert": own,
                             "gain": None if system is None else system - own}
    return report
