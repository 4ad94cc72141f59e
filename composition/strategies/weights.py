"""Weight-level strategies: the experts' adapters are merged into one adapter that answers."""
from __future__ import annotations

import hashlib
import itertools
import json

import torch

from composition.engine import Engine
from composition.errors import CompositionError
from composition.experts import Expert
from composition.merging import AdapterMerger, check_mergeable
from composition.strategies.base import Choice, Strategy
from composition.strategies.development import dev_scores_of
from composition.strategy_specs import MergeSearchSpec, MergeSpec

CANDIDATES_AT_ONCE = 8  # merge candidates registered and asked about the development set together


def adapter_merger(experts: list[Expert], options: dict) -> AdapterMerger:
    return AdapterMerger(
        {expert.id: expert.adapter for expert in experts}, method=options["method"], rank=options["rank"],
        density=options["density"] if options["density"] is not None else 1.0,
        scale=options["scale"], sign_method=options["sign_method"], seed=options["seed"],
    )


def merged_expert(experts: list[Expert], weights: dict[str, float], options: dict,
                  merger: AdapterMerger | None = None) -> Expert:
    """The experts merged with `weights` as one expert, named by a hash of what was merged and how (`merger`, when
    given, is adapter_merger(experts, options) kept from an earlier merge)."""
    adapter = (merger or adapter_merger(experts, options)).adapter(weights)
    key = json.dumps({"experts": [e.id for e in experts], "weights": weights, "options": options}, sort_keys=True)
    merged_id = "merge-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    base_models = {e.base_model for e in experts if e.base_model}
    metadata = {"merged_from": weights, "base_model": next(iter(base_models), "")}
    return Expert(id=merged_id, adapter=adapter, metadata=metadata)


class Merge(MergeSpec, Strategy):
    """Merges the experts' adapters (on ΔW = B·A per module; see composition/merging.py for the
    methods linear, task_arithmetic, ties, dare_linear, dare_ties), factorises the merged ΔW back
    to LoRA by truncated SVD at `rank` (default: the sum of the experts' ranks, exact for linear
    and task arithmetic) and answers with the merged adapter alone.
    Attribution: the merge weights."""

    def __init__(self, config: dict, experts: list[Expert]):
        super().__init__(config, experts)
        check_mergeable({expert.id: expert.adapter for expert in self.experts})
        options = {key: value for key, value in self.config.items() if key != "weights"}
        self.merged = merged_expert(self.experts, self.config["weights"], options)

    def prepare(self, engine: Engine) -> None:
        engine.register_expert(self.merged)

    def complete(self, prompt, request, seed, engine):
        generation = engine.generate([self.generation_request(prompt, request, seed, {self.merged.id: 1.0})])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens,
                      dict(self.config["weights"]), generation=generation, mixture={self.merged.id: 1.0})


def simplex_grid(count: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector on the simplex whose entries are multiples of step."""
    parts = int(round(1 / step))
    vectors = []
    for cuts in itertools.combinations(range(parts + count - 1), count - 1):
        bounds = (-1, *cuts, parts + count - 1)
        vectors.append(tuple((bounds[i + 1] - bounds[i] - 1) / parts for i in range(count)))
    return vectors


class MergeSearch(MergeSearchSpec, Strategy):
    """Searches merge weights on a dev set, then answers with the best merge.

    Candidates: the uniform weights first, then a grid over the simplex in steps of grid_step
    ("grid") or `samples` Dirichlet(1) draws from a generator seeded by search_seed ("random").
    Each candidate merge answers the dev set greedily; the best mean `metric` wins (the first
    candidate wins ties). Deterministic for a given config. Attribution: the winning weights."""

    def __init__(self, config: dict, experts: list[Expert]):
        super().__init__(config, experts)
        check_mergeable({expert.id: expert.adapter for expert in self.experts})
        self.options = {key: self.config[key] for key in ("method", "density", "scale", "sign_method", "rank", "seed")}
        self.search_results: list[tuple[dict[str, float], float]] = []

    def candidates(self) -> list[dict[str, float]]:
        count = len(self.expert_ids)
        vectors = [tuple(1.0 / count for _ in range(count))]
        if self.config["search"] == "grid":
            vectors += simplex_grid(count, self.config["grid_step"])
        else:
            generator = torch.Generator().manual_seed(self.config["search_seed"])
            for _ in range(self.config["samples"]):
                draw = -torch.log(torch.rand(count, generator=generator, dtype=torch.float64))
                vectors.append(tuple(float(x) for x in draw / draw.sum()))
        unique = list(dict.fromkeys(vectors))
        return [dict(zip(self.expert_ids, vector)) for vector in unique]

    def prepare(self, engine: Engine) -> None:  # the merge answers alone: the experts themselves are not registered
        self.learn_or_restore(engine)

    def learn(self, engine: Engine) -> None:
        merger = adapter_merger(self.experts, self.options)
        candidates = self.candidates()
        best = None
        self.search_results = []
        for start in range(0, len(candidates), CANDIDATES_AT_ONCE):
            chunk = [(weights, merged_expert(self.experts, weights, self.options, merger))
                     for weights in candidates[start:start + CANDIDATES_AT_ONCE]]
            for _, expert in chunk:
                engine.register_expert(expert)
            rows = dev_scores_of(engine, [{expert.id: 1.0} for _, expert in chunk], self.config["dev_set"], self.config)
            for (weights, expert), row in zip(chunk, rows):
                score = sum(row) / len(row)
                self.search_results.append((weights, score))
                if best is None or score > best[1]:
                    best = (weights, score, expert)
        self.best_weights, self.best_score, self.merged = best
        self.evaluations = self.search_results

    def learned_state(self) -> dict:
        return {"weights": {k: float(v) for k, v in self.best_weights.items()}, "score": float(self.best_score)}

    def use_learned(self, learned: dict, engine: Engine) -> None:
        weights = learned.get("weights")
        if not isinstance(weights, dict) or sorted(weights) != sorted(self.expert_ids):
            raise CompositionError(f"{self.name}: the learned merge weights must name each expert of the system once")
        self.best_weights = {e: float(weights[e]) for e in self.expert_ids}
        self.best_score = float(learned.get("score", 0.0))
        self.merged = merged_expert(self.experts, self.best_weights, self.options)
        engine.register_expert(self.merged)

    def complete(self, prompt, request, seed, engine):
        generation = engine.generate([self.generation_request(prompt, request, seed, {self.merged.id: 1.0})])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, dict(self.best_weights),
                      generation=generation, mixture={self.merged.id: 1.0})
