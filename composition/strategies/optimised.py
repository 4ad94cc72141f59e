"""Weight-level strategies that learn how to combine the experts' weights on a development set, then answer
with the one adapter they found: LoraHub (CMA-ES), Model Swarms (particle swarm), greedy soup, ExPO.

All of them combine weight updates linearly, ΔW = Σ c_i ΔW_i per module (development.combination_expert);
what they learn is the coefficient vector c, available from `learned()` with the development set's hash and
restored by `restore(learned)` without searching again.
Attribution: |c_i| / Σ|c_j| (development.magnitude_attribution)."""
from __future__ import annotations

import warnings

import numpy as np

from composition.engine import Engine
from composition.errors import CompositionError
from composition.experts import Expert
from composition.merging import check_mergeable
from composition.strategies.base import Choice, Strategy
from composition.strategies.development import (
    combination_expert,
    dev_loss,
    dev_score,
    dev_score_of_each_expert,
    magnitude_attribution,
)
from composition.strategy_specs import ExPOSpec, GreedySoupSpec, LoraHubSpec, ModelSwarmsSpec


class CombinationStrategy(Strategy):
    """Shared by the weight-level learners: search coefficients in `search(engine)`, answer with the result."""

    level = "weight"

    def __init__(self, config: dict, experts: list[Expert]):
        super().__init__(config, experts)
        check_mergeable({expert.id: expert.adapter for expert in self.experts})
        self.coefficients: dict[str, float] | None = None
        self.evaluations: list[tuple[dict[str, float], float]] = []  # (coefficients, utility) in search order

    def candidate(self, engine: Engine, coefficients: dict[str, float]) -> dict[str, float]:
        """Register a candidate combination under this strategy's scratch id; returns its mixture."""
        expert = combination_expert(self.experts, coefficients, rank=self.config.get("rank"),
                                    expert_id=f"{self.name}-candidate")
        engine.register_expert(expert)
        return {expert.id: 1.0}

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        if not self.learns(self.config):  # ExPO with its pair and one α given: nothing to search on a dev set
            self.use_coefficients(self.search(engine), engine)

    def learn(self, engine: Engine) -> None:
        self.evaluations = []
        self.use_coefficients(self.search(engine), engine)

    def use_coefficients(self, coefficients: dict[str, float], engine: Engine) -> None:
        self.coefficients = coefficients
        self.combined = combination_expert(self.experts, self.coefficients, rank=self.config.get("rank"))
        engine.register_expert(self.combined)

    def search(self, engine: Engine) -> dict[str, float]:
        raise NotImplementedError

    def learned_state(self) -> dict:
        return {"coefficients": {k: float(v) for k, v in self.coefficients.items()}}

    def use_learned(self, learned: dict, engine: Engine) -> None:
        coefficients = learned.get("coefficients")
        if not isinstance(coefficients, dict) or sorted(coefficients) != sorted(self.expert_ids):
            raise CompositionError(f"{self.name}: the learned coefficients must name each expert of the system once")
        self.use_coefficients({e: float(coefficients[e]) for e in self.expert_ids}, engine)

    def complete(self, prompt, request, seed, engine):
        generation = engine.generate([self.generation_request(prompt, request, seed, {self.combined.id: 1.0})])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens,
                      magnitude_attribution(self.coefficients))


class LoraHub(LoraHubSpec, CombinationStrategy):
    """LoraHub (Huang et al., 2023): gradient-free search for the coefficients c ∈ [-bound, bound]^n of
    ΔW = Σ c_i ΔW_i with CMA-ES (the `cma` library), minimising the development set's loss (mean token
    negative log-likelihood of the answers; utility "metric": 1 − the metric of greedy answers, the loss
    breaking ties on the metric's plateaus) plus
    l1 · mean |c_i|. Starts at uniform 1/n with step size sigma; at most `budget` evaluations; seeded."""

    def objective(self, engine: Engine, vector) -> float:
        coefficients = dict(zip(self.expert_ids, (float(x) for x in vector)))
        mixture = self.candidate(engine, coefficients)
        value = dev_loss(engine, mixture, self.config["dev_set"])
        if self.config["utility"] == "metric":  # the loss only breaks ties between equal scores
            value = 1.0 - dev_score(engine, mixture, self.config["dev_set"], self.config) + 1e-3 * value
        value += self.config["l1"] * sum(abs(c) for c in coefficients.values()) / len(coefficients)
        self.evaluations.append((coefficients, -value))
        return value

    def search(self, engine: Engine) -> dict[str, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import cma

        count = len(self.expert_ids)
        bound = self.config["bound"]
        options = {"bounds": [-bound, bound], "seed": self.config["seed"] + 1, "verbose": -9,
                   "maxfevals": self.config["budget"], "tolflatfitness": self.config["budget"]}
        if self.config["population"]:
            options["popsize"] = self.config["population"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            strategy = cma.CMAEvolutionStrategy([1.0 / count] * count, self.config["sigma"], options)
            first = self.objective(engine, [1.0 / count] * count)
            best = ([1.0 / count] * count, first)
            while not strategy.stop() and len(self.evaluations) < self.config["budget"]:
                remaining = self.config["budget"] - len(self.evaluations)
                solutions = strategy.ask()[:remaining]
                values = [self.objective(engine, solution) for solution in solutions]
                if len(solutions) == strategy.popsize:
                    strategy.tell(solutions, values)
                for solution, value in zip(solutions, values):
                    if value < best[1]:
                        best = (list(solution), value)
        return dict(zip(self.expert_ids, (float(x) for x in best[0])))


class ModelSwarms(ModelSwarmsSpec, CombinationStrategy):
    """Model Swarms (Feng et al., 2024): particle swarm optimisation in weight space, guided by a utility on
    the development set (default: the metric of greedy answers). A particle is a set of weights ΔW = Σ c_i ΔW_i;
    the swarm starts with one particle per expert (c = its unit vector) plus `extra_particles` random mixes.
    Each iteration: v ← inertia·v + r1·cognitive·(personal best − x) + r2·social·(global best − x)
    − r3·repel·(global worst − x); x ← x + step·v; step ← max(step·step_factor, min_step). Stops after
    `iterations` or `patience` iterations without a better global best; seeded."""

    def utility(self, engine: Engine, position: np.ndarray) -> float:
        coefficients = dict(zip(self.expert_ids, (float(x) for x in position)))
        mixture = self.candidate(engine, coefficients)
        if self.config["utility"] == "loss":
            value = -dev_loss(engine, mixture, self.config["dev_set"])
        else:
            value = dev_score(engine, mixture, self.config["dev_set"], self.config)
        self.evaluations.append((coefficients, value))
        return value

    def search(self, engine: Engine) -> dict[str, float]:
        config = self.config
        count = len(self.expert_ids)
        rng = np.random.default_rng(config["seed"])
        positions = [np.eye(count)[i] for i in range(count)]
        positions += [rng.dirichlet(np.ones(count)) for _ in range(config["extra_particles"])]
        velocities = [rng.uniform(-0.1, 0.1, count) for _ in positions]
        utilities = [self.utility(engine, x) for x in positions]
        personal = [(x.copy(), u) for x, u in zip(positions, utilities)]
        best_index = int(np.argmax(utilities))  # the first particle wins ties: experts come first
        best = (positions[best_index].copy(), utilities[best_index])
        worst_index = int(np.argmin(utilities))
        worst = (positions[worst_index].copy(), utilities[worst_index])
        step, stale = config["step"], 0
        for _ in range(config["iterations"]):
            improved = False
            for index in range(len(positions)):
                r1, r2, r3 = rng.uniform(0, 1, 3)
                velocities[index] = (
                    config["inertia"] * velocities[index]
                    + r1 * config["cognitive"] * (personal[index][0] - positions[index])
                    + r2 * config["social"] * (best[0] - positions[index])
                    - r3 * config["repel"] * (worst[0] - positions[index])
                )
                positions[index] = positions[index] + step * velocities[index]
                value = self.utility(engine, positions[index])
                if value > personal[index][1]:
                    personal[index] = (positions[index].copy(), value)
                if value > best[1]:
                    best, improved = (positions[index].copy(), value), True
                if value < worst[1]:
                    worst = (positions[index].copy(), value)
            step = max(step * config["step_factor"], config["min_step"])
            stale = 0 if improved else stale + 1
            if stale >= config["patience"]:
                break
        return dict(zip(self.expert_ids, (float(x) for x in best[0])))


class GreedySoup(GreedySoupSpec, CombinationStrategy):
    """Greedy soup (Wortsman et al., 2022): rank the experts by their development-set score alone; start the
    soup with the best; add each next expert if the uniform average of the soup with it scores at least as
    well. The soup's uniform average answers (coefficients 1/|soup| for its members, 0 for the others)."""

    def search(self, engine: Engine) -> dict[str, float]:
        dev_set = self.config["dev_set"]
        alone = dev_score_of_each_expert(engine, self.expert_ids, dev_set, self.config)
        for expert_id, value in alone.items():
            self.evaluations.append(({k: float(k == expert_id) for k in self.expert_ids}, value))
        ranked = sorted(self.expert_ids, key=lambda e: -alone[e])  # stable: the system's order breaks ties
        soup, current = [ranked[0]], alone[ranked[0]]
        for expert_id in ranked[1:]:
            members = soup + [expert_id]
            coefficients = {e: (1.0 / len(members) if e in members else 0.0) for e in self.expert_ids}
            value = dev_score(engine, self.candidate(engine, coefficients), dev_set, self.config)
            self.evaluations.append((coefficients, value))
            if value >= current:
                soup, current = members, value
        return {e: (1.0 / len(soup) if e in soup else 0.0) for e in self.expert_ids}


class ExPO(ExPOSpec, CombinationStrategy):
    """ExPO, model extrapolation (Zheng et al., 2024): from a weaker to a stronger model,
    W = W_strong + α (W_strong − W_weak), i.e. ΔW = (1+α) ΔW_strong − α ΔW_weak (the weak one may be the base
    model, ΔW = 0: the strong expert's update amplified). `strong`/`weak` name them; otherwise the development
    set ranks the experts alone and the best is strong, the worst weak (the base model when there is one expert).
    `alpha_candidates`, with a development set, picks α by its score (the first best wins ties)."""

    def coefficients_for(self, strong: str, weak: str, alpha: float) -> dict[str, float]:
        coefficients = {e: 0.0 for e in self.expert_ids}
        coefficients[strong] = 1.0 + alpha
        if weak != "base":
            coefficients[weak] = -alpha
        return coefficients

    def search(self, engine: Engine) -> dict[str, float]:
        strong, weak = self.config["strong"], self.config["weak"]
        dev_set = self.config["dev_set"]
        if strong is None:
            alone = dev_score_of_each_expert(engine, self.expert_ids, dev_set, self.config)
            ranked = sorted(self.expert_ids, key=lambda e: -alone[e])
            strong = ranked[0]
            weak = ranked[-1] if len(ranked) > 1 else "base"
        self.pair = (strong, weak)
        alphas = self.config["alpha_candidates"] or [self.config["alpha"]]
        if len(alphas) == 1:
            return self.coefficients_for(strong, weak, alphas[0])
        best = None
        for alpha in alphas:
            coefficients = self.coefficients_for(strong, weak, alpha)
            value = dev_score(engine, self.candidate(engine, coefficients), dev_set, self.config)
            self.evaluations.append((coefficients, value))
            if best is None or value > best[1]:
                best = (coefficients, value)
        return best[0]
