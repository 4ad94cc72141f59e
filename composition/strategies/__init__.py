"""Strategies: one small class per way of composing experts, behind one interface and a registry.

    build_strategy(name, config, experts, learned=None) -> Strategy  (validates config; restores what was learned)
    validate_strategy_config(name, config, expert_ids)   (no weights needed; returns the normalised config)
    strategy_level(name) -> "api" | "text" | "logit" | "weight"
Both come from composition.strategy_specs, which the web process imports without torch.
    Strategy.run(CompletionRequest, engine) -> CompletionResult (texts, usage, attribution)
    Strategy.learned() -> dict, Strategy.restore(learned)  (strategies that learn on a development set)
"""
from __future__ import annotations

from composition import strategy_specs as specs
from composition.errors import CompositionError
from composition.experts import Expert
from composition.strategies.base import CompletionRequest, CompletionResult, Strategy
from composition.strategies.collaboration import (
    HeterogeneousSwarm, KnowledgeCards, LLMBlender, MixtureOfAgents, MultiAgentFeedback, SlmMux, StructuredPipeline,
)
from composition.strategies.deferral import CoLLM, GraphRouter, MentorCollab, Nudging
from composition.strategies.logits import Contrastive, LogitMixture
from composition.strategies.routing import BaseAlone, Cascade, EmbeddingRouter, Single, Switch, TrainedRouter
from composition.strategies.text import Aggregate, Debate
from composition.strategies.optimised import ExPO, GreedySoup, LoraHub, ModelSwarms
from composition.strategies.weights import Merge, MergeSearch

STRATEGIES: dict[str, type[Strategy]] = {
    strategy.name: strategy
    for strategy in (
        Single, EmbeddingRouter, TrainedRouter, Cascade, Switch,
        GraphRouter, MentorCollab, Nudging, CoLLM,
        Debate, Aggregate,
        MixtureOfAgents, LLMBlender, KnowledgeCards, MultiAgentFeedback, HeterogeneousSwarm, SlmMux,
        StructuredPipeline,
        LogitMixture, Contrastive,
        Merge, MergeSearch,
        LoraHub, ModelSwarms, GreedySoup, ExPO,
        BaseAlone,
    )
}


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise CompositionError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def strategy_level(name: str) -> str:
    return specs.strategy_level(name)


def validate_strategy_config(name: str, config: dict, expert_ids: list[str]) -> dict:
    return specs.validate_strategy_config(name, config, expert_ids)


def build_strategy(name: str, config: dict, experts: list[Expert], *, learned: dict | None = None) -> Strategy:
    """The strategy on these experts; with `learned` (an earlier `Strategy.learned()`), restored from it so that
    it does not learn again when prepared."""
    strategy = strategy_class(name)(config, list(experts))
    if learned is not None:
        strategy.restore(learned)
    return strategy


__all__ = [
    "STRATEGIES", "CompletionRequest", "CompletionResult", "Strategy",
    "build_strategy", "strategy_level", "validate_strategy_config",
]
