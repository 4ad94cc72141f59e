"""What strategies that learn on a development set share: reading the set from the config, scoring a
mixture or a weight combination on it, the set's hash, and linear combinations of the experts' weights.

A development set is a list of {"prompt": str, "answers": [str, ...]} (the evaluation harness's items
without task and choices). Learning happens when the strategy is prepared for an engine (once per
engine, as the scheduler builds a system's strategy), and is deterministic for a given config."""
from __future__ import annotations

import hashlib
import json

from composition.engine import Engine, GenerationRequest, ScoreRequest
from composition.errors import CompositionError
from composition.evaluation import METRICS, Item, items_hash
from composition.experts import Expert
from composition.merging import merge_adapters


def dev_set_sha256(dev_set: list[dict]) -> str:
    """The evaluation harness's canonical hash of the set (each item with task "default")."""
    return items_hash([Item(prompt=item["prompt"], answers=item["answers"]) for item in dev_set])


def dev_scores(engine: Engine, mixture: dict[str, float], dev_set: list[dict], options: dict,
               *, prompts: list[str] | None = None) -> list[float]:
    """The metric of each item's greedy answer under `mixture` ({} = the base model alone)."""
    return dev_scores_of(engine, [mixture], dev_set, options, prompts=prompts)[0]


def dev_scores_of(engine: Engine, mixtures: list[dict[str, float]], dev_set: list[dict], options: dict,
                  *, prompts: list[str] | None = None) -> list[list[float]]:
    """dev_scores for each mixture, asked of the engine in one call (a batching engine decodes them together)."""
    metric = METRICS[options["metric"]]
    prompts = prompts or [item["prompt"] for item in dev_set]
    generations = engine.generate([
        GenerationRequest(prompt=prompt, mixture=dict(mixture), max_tokens=options["max_tokens"], temperature=0.0,
                          stop=list(options["stop"]))
        for mixture in mixtures for prompt in prompts
    ])
    return [[metric(generation.text, item["answers"])
             for generation, item in zip(generations[start:start + len(prompts)], dev_set)]
            for start in range(0, len(generations), len(prompts))]


def dev_score_of_each_expert(engine: Engine, expert_ids: list[str], dev_set: list[dict], options: dict
                             ) -> dict[str, float]:
    """{expert: its mean development score alone}, every expert asked in one engine call."""
    rows = dev_scores_of(engine, [{e: 1.0} for e in expert_ids], dev_set, options)
    return {expert_id: sum(row) / len(row) for expert_id, row in zip(expert_ids, rows)}


def dev_score(engine: Engine, mixture: dict[str, float], dev_set: list[dict], options: dict) -> float:
    scores = dev_scores(engine, mixture, dev_set, options)
    return sum(scores) / len(scores)


def dev_loss(engine: Engine, mixture: dict[str, float], dev_set: list[dict]) -> float:
    """Mean negative log-likelihood per token of each item's first answer (teacher-forced)."""
    rows = engine.score([ScoreRequest(prompt=item["prompt"], continuation=item["answers"][0], mixture=dict(mixture))
                         for item in dev_set])
    values = [-value for row in rows for value in row]
    if not values:
        raise CompositionError("the development set's answers are empty: there is no loss to measure")
    return sum(values) / len(values)


def combination_expert(experts: list[Expert], coefficients: dict[str, float], *, rank: int | None,
                       expert_id: str | None = None) -> Expert:
    """An expert whose ΔW is Σ c_i ΔW_i per module (any real coefficients), factorised back to LoRA at `rank`
    (default: the sum of the experts' ranks, which is exact). Its id is a hash of the combination unless given."""
    adapter = merge_adapters({expert.id: expert.adapter for expert in experts}, coefficients, method="linear",
                             rank=rank)
    if expert_id is None:
        key = json.dumps({"experts": [e.id for e in experts], "coefficients": coefficients, "rank": rank},
                         sort_keys=True)
        expert_id = "combination-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    base_models = {e.base_model for e in experts if e.base_model}
    metadata = {"combined_from": dict(coefficients), "base_model": next(iter(base_models), "")}
    return Expert(id=expert_id, adapter=adapter, metadata=metadata)


def magnitude_attribution(coefficients: dict[str, float]) -> dict[str, float]:
    """|c_i| / Σ|c_j|: each expert's share of the combination, whatever the signs (an expert subtracted
    shapes the answer as much as one added)."""
    total = sum(abs(value) for value in coefficients.values())
    if total <= 0:
        return {expert_id: 1.0 / len(coefficients) for expert_id in coefficients}
    return {expert_id: abs(value) / total for expert_id, value in coefficients.items()}
