"""Logit-level strategies: experts' next-token distributions are combined at every token."""
from __future__ import annotations

import torch

from composition.engine import Engine
from composition.strategy_specs import ContrastiveSpec, LogitMixtureSpec
from composition.strategies.base import Choice, Strategy, decode_step_by_step, uniform
from composition.strategies.routing import EmbeddingRouter, expert_profiles


class LogitMixture(LogitMixtureSpec, Strategy):
    """Weighted mixture of the experts' next-token distributions, p = Σ w_i p_i, at every token.

    weights "fixed": config["weights"] (default uniform); the engine decodes the mixture directly.
    weights "router": at every token the embedding router reads the prompt plus the text so far and
    sets w = softmax(cosine score / router_temperature) over all experts.
    Attribution: the mixture weights averaged over the generated tokens."""

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        if self.config["source"] == "router":
            self.router = EmbeddingRouter({}, self.experts)
            self.router.profiles = expert_profiles(self.experts, engine)

    def complete(self, prompt, request, seed, engine):
        if self.config["source"] == "fixed":
            weights = {k: v for k, v in self.config["weights"].items() if v > 0}
            generation = engine.generate([self.generation_request(
                prompt, request, seed, weights, mixture_space=self.config.get("mix", "distributions"))])[0]
            # the distribution mixture scores an echoed prompt; mixed adapters have no such mixture
            scored = weights if self.config.get("mix", "distributions") == "distributions" else None
            return Choice(generation.text, generation.finish_reason, generation.completion_tokens, weights,
                          generation=generation, mixture=scored)

        totals = {expert_id: 0.0 for expert_id in self.expert_ids}

        def mixture_now(context: str, step: int) -> dict[str, float]:
            weights = self.router.routing_weights(
                context, engine, top_k=len(self.expert_ids), temperature=self.config["router_temperature"]
            )
            for expert_id, weight in weights.items():
                totals[expert_id] += weight
            weights = {k: v for k, v in weights.items() if v > 0}
            total = sum(weights.values())
            return {k: v / total for k, v in weights.items()}

        # every expert keeps its own lane (KV cache) over the same prefix, or with mix "adapters" one lane mixes
        # their adapters; the router reweighs them per token
        generation = engine.generate([self.generation_request(prompt, request, seed, uniform(self.expert_ids),
                                                              mixture_rule=mixture_now,
                                                              mixture_space=self.config.get("mix", "distributions"))])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, totals,
                      generation=generation)


class Contrastive(ContrastiveSpec, Strategy):
    """Contrastive decoding: score = log p_expert − λ · log p_amateur over the plausible tokens
    (those with p_expert ≥ α · max p_expert; the others are excluded), then decoded as usual.
    The amateur is the base model ("base") or another expert.
    Attribution: {expert: 1} with the base as amateur; with an expert as amateur,
    expert 1/(1+λ) and amateur λ/(1+λ) (the amateur shapes the answer by what it discourages)."""

    def complete(self, prompt, request, seed, engine):
        expert, amateur = self.config["expert"], self.config["amateur"]
        amateur_mixture = {} if amateur == "base" else {amateur: 1.0}
        strength, alpha = self.config["lambda"], self.config["alpha"]

        def next_logprobs(context: str, step: int) -> torch.Tensor:
            both = engine.next_token_logits([
                self.generation_request(context, request, seed, {expert: 1.0}),
                self.generation_request(context, request, seed, amateur_mixture),
            ]).float()
            return contrastive_scores(both[0], both[1], strength=strength, alpha=alpha)

        generation = decode_step_by_step(engine, self.generation_request(prompt, request, seed, {}), next_logprobs)
        if amateur == "base":
            attribution = {expert: 1.0}
        else:
            attribution = {expert: 1.0 / (1.0 + strength), amateur: strength / (1.0 + strength)}
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, attribution,
                      generation=generation)


def contrastive_scores(expert_logprobs: torch.Tensor, amateur_logprobs: torch.Tensor, *,
                       strength: float, alpha: float) -> torch.Tensor:
    expert_logprobs = torch.log_softmax(expert_logprobs.float(), dim=-1)
    amateur_logprobs = torch.log_softmax(amateur_logprobs.float(), dim=-1)
    plausible = expert_logprobs >= expert_logprobs.max() + torch.log(torch.tensor(max(alpha, 1e-30)))
    scores = expert_logprobs - strength * amateur_logprobs
    return scores.masked_fill(~plausible, float("-inf"))
