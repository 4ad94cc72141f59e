"""API-level strategies: each answer (or each segment) comes from whole experts chosen per request."""
from __future__ import annotations

import hashlib
import json

import torch

from composition.engine import Engine
from composition.errors import CompositionError
from composition.strategy_specs import (
    BASE_CLASS,
    BaseAloneSpec,
    CascadeSpec,
    EmbeddingRouterSpec,
    SingleSpec,
    SwitchSpec,
    TrainedRouterSpec,
)
from composition.strategies.base import (
    Choice,
    Strategy,
    uniform,
)


class Single(SingleSpec, Strategy):
    """One expert answers alone (a system of one, or an expert measured on its own).

    Attribution: {expert: 1}."""

    def complete(self, prompt, request, seed, engine):
        expert = self.config["expert"]
        generation = engine.generate([self.generation_request(prompt, request, seed, {expert: 1.0})])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, {expert: 1.0},
                      generation=generation, mixture={expert: 1.0})


class BaseAlone(BaseAloneSpec, Strategy):
    """The base model alone, with no expert: what a system with no experts answers. An evaluation
    measures it as the empty coalition, the value every expert's contribution is counted from.

    Config: none. Attribution: {} (no expert shaped the answer)."""

    def __init__(self, config: dict, experts: list):
        if experts:
            raise CompositionError("base: the base model alone takes no experts")
        self.experts, self.experts_by_id, self.expert_ids = [], {}, []
        self.config = self.validate(config, [])
        self._prepared_for = None

    def complete(self, prompt, request, seed, engine):
        generation = engine.generate([self.generation_request(prompt, request, seed, {})])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, {},
                      generation=generation, mixture={})


class EmbeddingRouter(EmbeddingRouterSpec, Strategy):
    """Routes each request to the nearest expert(s) by cosine similarity of base-model embeddings.

    Each expert is represented by the embeddings of its description and of each of its examples
    (engine.embed on the base model); an expert's score for a query is its best cosine similarity
    over those texts (nearest neighbour). With top_k = 1 the best expert answers alone; with
    top_k > 1 the top experts answer as a mixture weighted by softmax(score / temperature).
    Attribution: the routing weights ({chosen: 1} for top_k = 1)."""

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        self.profiles = expert_profiles(self.experts, engine)

    def scores(self, text: str, engine: Engine) -> torch.Tensor:
        query = torch.nn.functional.normalize(engine.embed([text]).float(), dim=-1)[0]
        return torch.stack([(profile @ query).max() for profile in self.profiles])

    def routing_weights(self, text: str, engine: Engine, *, top_k: int, temperature: float) -> dict[str, float]:
        scores = self.scores(text, engine)
        top = torch.topk(scores, top_k)
        weights = torch.softmax(top.values / temperature, dim=-1)
        return {self.expert_ids[int(index)]: float(weight) for index, weight in zip(top.indices, weights)}

    def complete(self, prompt, request, seed, engine):
        weights = self.routing_weights(prompt, engine, top_k=self.config["top_k"],
                                       temperature=self.config["temperature"])
        generation = engine.generate([self.generation_request(prompt, request, seed, weights)])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, weights,
                      generation=generation, mixture=weights)


def expert_profiles(experts, engine: Engine) -> list[torch.Tensor]:
    """Per expert, normalised embeddings [m, hidden] of its description and examples."""
    profiles = []
    for expert in experts:
        texts = [text for text in [expert.description, *expert.examples] if text]
        if not texts:
            raise CompositionError(
                f"expert {expert.id!r} has no description or examples to route by"
            )
        profiles.append(torch.nn.functional.normalize(engine.embed(texts).float(), dim=-1))
    return profiles


class TrainedRouter(TrainedRouterSpec, Strategy):
    """A logistic-regression router on base-model embeddings, trained on labelled queries.

    Labelled queries come from config["examples"] ([{"text", "expert"}]) or, when absent, from
    each expert's metadata examples. Features are the standardised embeddings; training is
    full-batch Adam with L2, seeded, done once per engine (or by calling fit()).
    mode "top1": the most probable expert answers, attribution {chosen: 1};
    mode "mixture": the experts answer as a mixture weighted by the router's probabilities,
    which are the attribution.
    Examples may name "base" (BASE_CLASS): queries that no expert should answer, such as general
    questions. When "base" is the most probable class, the base model answers alone in either mode;
    no expert shaped that answer, so its attribution is empty (which Strategy.run spreads evenly)."""

    @property
    def classes(self) -> list[str]:
        """What the classifier chooses between: the experts, then "base" when an example names it."""
        examples = self.config["examples"] or []
        return self.expert_ids + ([BASE_CLASS] if any(e["expert"] == BASE_CLASS for e in examples) else [])

    def labelled_examples(self) -> list[tuple[str, int]]:
        if self.config["examples"]:
            return [(item["text"], self.classes.index(item["expert"])) for item in self.config["examples"]]
        pairs = [(text, index) for index, expert in enumerate(self.experts) for text in expert.examples]
        if not pairs:
            raise CompositionError("trained_router: no labelled queries (no config examples, no expert examples)")
        return pairs

    def learn(self, engine: Engine) -> None:
        self.fit(engine)

    def learning_set_sha256(self) -> str:
        """The hash of the labelled queries it is trained on (config examples or the experts' own)."""
        pairs = [[text, self.classes[label]] for text, label in self.labelled_examples()]
        return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()

    def learned_state(self) -> dict:
        return {"classes": list(self.classes), "weight": self.weight.tolist(), "bias": self.bias.tolist(),
                "mean": self.mean.tolist(), "std": self.std.tolist()}

    def use_learned(self, learned: dict, engine: Engine) -> None:
        if learned.get("classes") != self.classes:
            raise CompositionError(f"{self.name}: the learned router chooses between other classes")
        try:
            self.weight, self.bias, self.mean, self.std = (torch.tensor(learned[key], dtype=torch.float32)
                                                           for key in ("weight", "bias", "mean", "std"))
        except (KeyError, TypeError, ValueError) as error:
            raise CompositionError(f"{self.name}: the learned router needs weight, bias, mean and std ({error})") from None

    def fit(self, engine: Engine) -> float:
        """Train the classifier; returns its training accuracy."""
        pairs = self.labelled_examples()
        features = engine.embed([text for text, _ in pairs]).float()
        labels = torch.tensor([label for _, label in pairs])
        self.mean = features.mean(0)
        self.std = features.std(0, unbiased=False) + 1e-6
        x = (features - self.mean) / self.std
        generator = torch.Generator().manual_seed(self.config["seed"])
        self.weight = (torch.randn(x.shape[1], len(self.classes), generator=generator) * 0.01).requires_grad_()
        self.bias = torch.zeros(len(self.classes), requires_grad=True)
        optimizer = torch.optim.Adam([self.weight, self.bias], lr=self.config["learning_rate"])
        with torch.enable_grad():
            for _ in range(self.config["epochs"]):
                logits = x @ self.weight + self.bias
                loss = torch.nn.functional.cross_entropy(logits, labels) + self.config["l2"] * (self.weight ** 2).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.weight = self.weight.detach()
        self.bias = self.bias.detach()
        return float(((x @ self.weight + self.bias).argmax(-1) == labels).float().mean())

    def probabilities(self, text: str, engine: Engine) -> dict[str, float]:
        x = (engine.embed([text]).float()[0] - self.mean) / self.std
        probabilities = torch.softmax(x @ self.weight + self.bias, dim=-1)
        return {label: float(p) for label, p in zip(self.classes, probabilities)}

    def complete(self, prompt, request, seed, engine):
        probabilities = self.probabilities(prompt, engine)
        chosen = max(probabilities, key=probabilities.get)
        if chosen == BASE_CLASS:
            weights = {}
        elif self.config["mode"] == "top1":
            weights = {chosen: 1.0}
        else:
            weights = {label: p for label, p in probabilities.items() if p > 0 and label != BASE_CLASS}
            total = sum(weights.values())
            weights = {expert_id: p / total for expert_id, p in weights.items()}
        generation = engine.generate([self.generation_request(prompt, request, seed, weights)])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, weights,
                      generation=generation, mixture=weights)


class Cascade(CascadeSpec, Strategy):
    """Tries experts in order and escalates while the answer's confidence is below a threshold.

    Confidence is the mean log-probability of the generated tokens under the expert that wrote
    them, judged on each expert's first `probe_tokens` tokens: an expert that cannot answer often
    writes on to max_tokens, and the cascade does not wait for that. The first expert at or above
    the threshold answers (its answer goes on to max_tokens); if none is, the last expert's answer
    ("last"), the most confident one ("most_confident") or the base model's own ("base": a question
    outside every expert's skill, such as a general one). Attribution: {answering expert: 1}; empty
    when the base model answered (no expert shaped it)."""

    def complete(self, prompt, request, seed, engine):
        probe = min(request.max_tokens, self.config["probe_tokens"])
        tried = []
        for expert_id in self.config["order"]:
            generation = engine.generate([self.generation_request(prompt, request, seed, {expert_id: 1.0},
                                                                  max_tokens=probe)])[0]
            tried.append((expert_id, generation))
            if generation.mean_logprob >= self.config["threshold"]:
                break
        else:
            if self.config["fallback"] == "base":
                generation = engine.generate([self.generation_request(prompt, request, seed, {})])[0]
                return Choice(generation.text, generation.finish_reason, generation.completion_tokens, {},
                              generation=generation, mixture={})
            if self.config["fallback"] == "most_confident":
                tried.sort(key=lambda pair: pair[1].mean_logprob, reverse=True)
                tried = tried[:1]
        expert_id, generation = tried[-1]
        if generation.finish_reason == "length" and probe < request.max_tokens:  # the probe was cut: finish it
            generation = engine.generate([self.generation_request(prompt, request, seed, {expert_id: 1.0})])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, {expert_id: 1.0},
                      generation=generation, mixture={expert_id: 1.0})


class Switch(SwitchSpec, Strategy):
    """Switches generation between experts: at the start of each segment the embedding router
    (nearest expert by description/examples) reads the prompt plus the text so far and picks the
    expert that writes the next segment. Segments end after a newline ("line"), after ". ", "! ",
    "? " or a newline ("sentence"), or every segment_tokens tokens ("tokens").
    Attribution: each expert's share of the generated tokens."""

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        self.router = EmbeddingRouter({}, self.experts)
        self.router.profiles = expert_profiles(self.experts, engine)

    def complete(self, prompt, request, seed, engine):
        boundaries = self.BOUNDARIES[self.config["segment"]]
        counts = {expert_id: 0 for expert_id in self.expert_ids}
        current = {"expert": None, "segment_start": 0, "text_start": 0}

        def expert_now(context: str, step: int) -> dict[str, float]:
            segment_text = context[len(prompt) + current["text_start"]:]
            at_boundary = (
                current["expert"] is None
                or step - current["segment_start"] >= self.config["segment_tokens"]
                or any(segment_text.endswith(boundary) for boundary in boundaries)
            )
            if at_boundary:
                scores = self.router.scores(context, engine)
                current.update(expert=self.expert_ids[int(scores.argmax())], segment_start=step,
                               text_start=len(context) - len(prompt))
            counts[current["expert"]] += 1
            return {current["expert"]: 1.0}

        # every expert keeps its own lane (KV cache) over the same prefix, or with mix "adapters" one lane holds
        # them all (one KV cache); the switch picks one per token
        generation = engine.generate([self.generation_request(prompt, request, seed, uniform(self.expert_ids),
                                                              mixture_rule=expert_now,
                                                              mixture_space=self.config.get("mix", "distributions"))])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, counts,
                      generation=generation)
