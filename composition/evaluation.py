"""Evaluation harness: JSON Lines datasets, metrics, scores with confidence intervals, comparisons.

A dataset line: {"prompt": str, "answers": [str, ...], "task": str, "choices": [str, ...] (optional)}.
Its hash is the sha256 of the canonical file: each line re-serialised as JSON with sorted keys and
compact separators, joined by newlines, with a final newline.
Metrics take (prediction, answers, choices) and return a float in [0, 1]:
  exact_match      normalised prediction equals a normalised answer (lower case, punctuation and
                   articles removed, whitespace collapsed; SQuAD's rule)
  strict_match     prediction equals an answer after stripping surrounding whitespace (case matters)
  multiple_choice  the prediction names a choice (its letter A, B, ... or its text) that is an answer
  token_f1         best token-level F1 against the answers (normalised tokens)
Scores: mean per task and overall with a 95% interval: Wilson for 0/1 scores, otherwise a
percentile bootstrap (seeded).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from composition.errors import CompositionError

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = set(string.punctuation)


@dataclass
class Item:
    prompt: str
    answers: list[str]
    task: str = "default"
    choices: list[str] | None = None

    def as_json(self) -> dict:
        data = {"prompt": self.prompt, "answers": self.answers, "task": self.task}
        if self.choices is not None:
            data["choices"] = self.choices
        return data


@dataclass
class Dataset:
    items: list[Item]
    sha256: str

    @property
    def tasks(self) -> list[str]:
        return sorted({item.task for item in self.items})


def canonical_line(data: dict) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def items_hash(items: list[Item]) -> str:
    text = "".join(canonical_line(item.as_json()) + "\n" for item in items)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_item(data, where: str) -> Item:
    if not isinstance(data, dict):
        raise CompositionError(f"{where}: each line must be a JSON object")
    unknown = set(data) - {"prompt", "answers", "task", "choices"}
    if unknown:
        raise CompositionError(f"{where}: unknown fields {sorted(unknown)}")
    if not isinstance(data.get("prompt"), str):
        raise CompositionError(f"{where}: 'prompt' must be a string")
    answers = data.get("answers")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise CompositionError(f"{where}: 'answers' must be a non-empty list of strings")
    task = data.get("task", "default")
    if not isinstance(task, str) or not task:
        raise CompositionError(f"{where}: 'task' must be a non-empty string")
    choices = data.get("choices")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
        raise CompositionError(f"{where}: 'choices' must be a list of strings")
    return Item(prompt=data["prompt"], answers=list(answers), task=task, choices=choices)


def load_dataset(path: str | Path) -> Dataset:
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise CompositionError(f"{path} line {number}: not JSON ({error})") from error
        items.append(parse_item(data, f"{path} line {number}"))
    if not items:
        raise CompositionError(f"{path} holds no items")
    return Dataset(items=items, sha256=items_hash(items))


def write_dataset(path: str | Path, items: list[Item]) -> str:
    Path(path).write_text("".join(canonical_line(item.as_json()) + "\n" for item in items), encoding="utf-8")
    return items_hash(items)


# metrics


def normalise_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str], choices: list[str] | None = None) -> float:
    normalised = normalise_answer(prediction)
    return float(any(normalised == normalise_answer(answer) for answer in answers))


def strict_match(prediction: str, answers: list[str], choices: list[str] | None = None) -> float:
    return float(any(prediction.strip() == answer.strip() for answer in answers))


def chosen_option(prediction: str, choices: list[str]) -> int | None:
    """Index of the choice a prediction names: by letter ("B", "(b)", "B.") or by its text."""
    cleaned = prediction.strip()
    letter = re.fullmatch(r"\(?([A-Za-z])[\).:]?", cleaned)
    if letter:
        index = ord(letter.group(1).upper()) - ord("A")
        return index if 0 <= index < len(choices) else None
    normalised = normalise_answer(cleaned)
    for index, choice in enumerate(choices):
        if normalised == normalise_answer(choice):
            return index
    return None


def multiple_choice(prediction: str, answers: list[str], choices: list[str] | None = None) -> float:
    if not choices:
        raise CompositionError("multiple_choice needs items with choices")
    index = chosen_option(prediction, choices)
    if index is None:
        return 0.0
    picked = choices[index]
    letter = chr(ord("A") + index)
    return float(any(normalise_answer(answer) in (normalise_answer(picked), letter.lower()) for answer in answers))


def token_f1(prediction: str, answers: list[str], choices: list[str] | None = None) -> float:
    best = 0.0
    predicted = normalise_answer(prediction).split()
    for answer in answers:
        reference = normalise_answer(answer).split()
        if not predicted or not reference:
            best = max(best, float(predicted == reference))
            continue
        common = sum((Counter(predicted) & Counter(reference)).values())
        if common == 0:
            continue
        precision, recall = common / len(predicted), common / len(reference)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


METRICS: dict[str, Callable[..., float]] = {
    "exact_match": exact_match,
    "strict_match": strict_match,
    "multiple_choice": multiple_choice,
    "token_f1": token_f1,
}


def metric_by_name(name: str) -> Callable[..., float]:
    if name not in METRICS:
        raise CompositionError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


# scores with intervals


@dataclass
class Score:
    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: list[float], *, seed: int, resamples: int = 1000) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[min(resamples - 1, int(0.975 * resamples))]


def score(values: list[float], *, seed: int = 0) -> Score:
    if not values:
        return Score(0.0, 0.0, 0.0, 0)
    mean = sum(values) / len(values)
    if all(value in (0.0, 1.0) for value in values):
        low, high = wilson_interval(sum(values), len(values))
    else:
        low, high = bootstrap_interval(values, seed=seed)
    return Score(mean, low, high, len(values))


def summarise(item_scores: list[float], items: list[Item], *, seed: int = 0) -> dict:
    """{"overall": Score, "per_task": {task: Score}}."""
    per_task: dict[str, list[float]] = {}
    for value, item in zip(item_scores, items):
        per_task.setdefault(item.task, []).append(value)
    return {
        "overall": score(item_scores, seed=seed),
        "per_task": {task: score(values, seed=seed) for task, values in sorted(per_task.items())},
    }


# systems on a dataset


class System(Protocol):
    """What evaluation evaluates: anything that answers items, one text per item in their order. How a system
    is built (a strategy over experts, an expert alone, the base model) is its builder's business
    (composition.systems)."""

    def __call__(self, items: list[Item], /) -> list[str]: ...


def item_scores(predictions: list[str], items: list[Item], metric: str) -> list[float]:
    function = metric_by_name(metric)
    return [function(prediction, item.answers, item.choices) for prediction, item in zip(predictions, items)]


def solved_where_every_expert_fails(system: list[float], experts: dict[str, list[float]], *,
                                    solved_at: float = 1.0) -> int:
    """Items the system solves (score >= solved_at) that no single expert solves."""
    count = 0
    for index, value in enumerate(system):
        if value >= solved_at and all(scores[index] < solved_at for scores in experts.values()):
            count += 1
    return count


@dataclass
class Comparison:
    dataset_sha256: str
    metric: str
    scores: dict[str, list[float]]  # system name -> per-item scores
    summaries: dict[str, dict] = field(default_factory=dict)
    solved_beyond_experts: dict[str, int] = field(default_factory=dict)


def compare(systems: dict[str, System], dataset: Dataset, *, metric: str, expert_names: list[str],
            seed: int = 0) -> Comparison:
    """Score every system (experts alone, the base, composed systems) on the same items; for each
    system that is not an expert, count the items it solves that every expert fails."""
    comparison = Comparison(dataset_sha256=dataset.sha256, metric=metric, scores={})
    for name, system in systems.items():
        values = item_scores(answers_of(name, system, dataset.items), dataset.items, metric)
        comparison.scores[name] = values
        comparison.summaries[name] = summarise(values, dataset.items, seed=seed)
    experts = {name: comparison.scores[name] for name in expert_names}
    for name, values in comparison.scores.items():
        if name not in expert_names:
            comparison.solved_beyond_experts[name] = solved_where_every_expert_fails(values, experts)
    return comparison


def answers_of(name: str, system: System, items: list[Item]) -> list[str]:
    """The system's answers, refused unless they are one text per item."""
    answers = list(system(items))
    if len(answers) != len(items) or not all(isinstance(answer, str) for answer in answers):
        raise CompositionError(f"system {name!r} must answer each of the {len(items)} items with one text; "
                               f"it gave {len(answers)} answers")
    return answers
