"""Logit-level strategies: experts' next-token distributions are combined at every token."""
from __future__ import annotations

import torch

from composition.engine import Engine
from composition.errors import CompositionError
from composition.strategies.base import Choice, ConfigReader, Strategy, decode_step_by_step, uniform
from composition.strategies.routing import EmbeddingRouter, expert_profiles


class LogitMixture(Strategy):
    """Weighted mixture of the experts' next-token distributions, p = Σ w_i p_i, at every token.

    weights "fixed": config["weights"] (default uniform); the engine decodes the mixture directly.
    weights "router": at every token the embedding router reads the prompt plus the text so far and
    sets w = softmax(cosine score / router_temperature) over all experts.
    Attribution: the mixture weights averaged over the generated tokens."""

    name = "logit_mixture"
    level = "logit"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        source = reader.choice("source", ("fixed", "router"), "fixed")
        weights = reader.weights("weights", uniform(reader.expert_ids) if source == "fixed" else None)
        if source == "router" and weights is not None:
            raise CompositionError("logit_mixture: 'weights' is only used with source 'fixed'")
        return {
            "source": source,
            "weights": weights,
            "router_temperature": reader.number("router_temperature", 0.05, minimum=1e-6),
        }

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        if self.config["source"] == "router":
            self.router = EmbeddingRouter({}, self.experts)
            self.router.profiles = expert_profiles(self.experts, engine)

    def complete(self, prompt, request, seed, engine):
        if self.config["source"] == "fixed":
            weights = {k: v for k, v in self.config["weights"].items() if v > 0}
            generation = engine.generate([self.generation_request(prompt, request, seed, weights)])[0]
            return Choice(generation.text, generation.finish_reason, generation.completion_tokens, weights,
                          generation=generation, mixture=weights)

        totals = {expert_id: 0.0 for expert_id in self.expert_ids}

        def next_logprobs(context: str, step: int) -> torch.Tensor:
            weights = self.router.routing_weights(
                context, engine, top_k=len(self.expert_ids), temperature=self.config["router_temperature"]
            )
            for expert_id, weight in weights.items():
                totals[expert_id] += weight
            weights = {k: v for k, v in weights.items() if v > 0}
            total = sum(weights.values())
            mixture = {k: v / total for k, v in weights.items()}
            return engine.next_token_logits([self.generation_request(context, request, seed, mixture)])[0]

        generation = decode_step_by_step(engine, self.generation_request(prompt, request, seed, {}), next_logprobs)
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, totals,
                      generation=generation)


class Contrastive(Strategy):
    """Contrastive decoding: score = log p_expert − λ · log p_amateur over the plausible tokens
    (those with p_expert ≥ α · max p_expert; the others are excluded), then decoded as usual.
    The amateur is the base model ("base") or another expert.
    Attribution: {expert: 1} with the base as amateur; with an expert as amateur,
    expert 1/(1+λ) and amateur λ/(1+λ) (the amateur shapes the answer by what it discourages)."""

    name = "contrastive"
    level = "logit"

    @classmethod
    def read_config(cls, reader: ConfigReader) -> dict:
        default_expert = reader.expert_ids[0] if len(reader.expert_ids) == 1 else None
        expert = reader.expert("expert", default_expert)
        if expert is None:
            raise CompositionError("contrastive: 'expert' is required when the system has several experts")
        amateur = reader.expert("amateur", "base", extra=("base",))
        if amateur == expert:
            raise CompositionError("contrastive: 'amateur' must differ from 'expert'")
        return {
            "expert": expert,
            "amateur": amateur,
            "lambda": reader.number("lambda", 0.5, minimum=0, maximum=10),
            "alpha": reader.number("alpha", 0.1, minimum=0, maximum=1),
        }

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
