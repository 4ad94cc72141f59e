"""Systems to evaluate (composition.evaluation.System), built from a strategy or a fixed mixture of experts.

    strategy_system(strategy, engine, max_tokens=...)     a composed system's greedy answers, one request per item
    mixture_system(engine, mixture, max_tokens=...)       the base model ({}) or an expert alone ({id: 1}), batched
"""
from __future__ import annotations

from composition.engine import Engine, GenerationRequest
from composition.evaluation import Item, System
from composition.strategies.base import CompletionRequest, Strategy


def strategy_system(strategy: Strategy, engine: Engine, *, max_tokens: int, stop: list[str] | None = None) -> System:
    """Greedy answers of a strategy, one request per item."""

    def answer(items: list[Item]) -> list[str]:
        return [
            strategy.run(CompletionRequest(prompt=item.prompt, max_tokens=max_tokens, temperature=0.0,
                                           stop=list(stop or []), seed=0), engine).texts[0]
            for item in items
        ]

    return answer


def mixture_system(engine: Engine, mixture: dict[str, float], *, max_tokens: int, stop: list[str] | None = None,
                   batch_size: int = 64) -> System:
    """Greedy answers of the base model ({}) or of an expert alone ({id: 1}), batched."""

    def answer(items: list[Item]) -> list[str]:
        texts = []
        for start in range(0, len(items), batch_size):
            requests = [GenerationRequest(prompt=item.prompt, mixture=dict(mixture), max_tokens=max_tokens,
                                          temperature=0.0, stop=list(stop or []))
                        for item in items[start:start + batch_size]]
            texts.extend(generation.text for generation in engine.generate(requests))
        return texts

    return answer
