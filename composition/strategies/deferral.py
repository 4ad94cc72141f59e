"""API-level strategies that choose, per query or per token, which model writes: graph routing, mentor
collaboration, nudging and Co-LLM. The last three decode token by token (decode_step_by_step) and hand
single tokens or patches to another model; the engine's decoding rule still picks every token.

Attribution for the token-level ones: each expert's share of the generated tokens it wrote. Tokens the base
model writes are no expert's; when no expert wrote any token, the helping expert (the nudger, the mentor,
the assistant) gets 1, since it was the only expert consulted."""
from __future__ import annotations

import random

import torch

from composition.engine import Engine, ScoreRequest
from composition.errors import CompositionError
from composition.strategies.base import Choice, CompletionRequest, Strategy, decode_step_by_step
from composition.strategies.development import dev_scores_of
from composition.strategy_specs import BASE, CoLLMSpec, GraphRouterSpec, MentorCollabSpec, NudgingSpec


def mixture_of(model: str) -> dict[str, float]:
    return {} if model == BASE else {model: 1.0}


def token_share_attribution(counts: dict[str, int], helper: str) -> dict[str, float]:
    counts = {model: n for model, n in counts.items() if model != BASE and n > 0}
    if not counts:
        return {helper: 1.0}
    total = sum(counts.values())
    return {model: n / total for model, n in counts.items()}


class GraphRouter(GraphRouterSpec, Strategy):
    """Graph routing (GraphRouter, Feng et al., 2024): a bipartite graph of development queries and experts,
    each edge carrying how well the expert answered the query (its metric). A new query joins the graph by
    edges to its `neighbours` most similar development queries (cosine of base-model embeddings, weighted by
    softmax(similarity / temperature)); one round of message passing gives each expert the weighted mean of
    its edges from those neighbours, and the best expert answers (ties: the expert with the better overall
    development score, then the system's order). Learned when prepared. Attribution: {chosen: 1}."""

    def learn(self, engine: Engine) -> None:
        effects = dev_scores_of(engine, [{e: 1.0} for e in self.expert_ids], self.config["dev_set"], self.config)
        self.use_effects(torch.tensor(effects).T, engine)

    def use_effects(self, effects: torch.Tensor, engine: Engine) -> None:
        """The graph: the edges' effects [queries, experts] and the development queries' embeddings."""
        self.effects = effects
        self.query_nodes = torch.nn.functional.normalize(
            engine.embed([item["prompt"] for item in self.config["dev_set"]]).float(), dim=-1)

    def learned_state(self) -> dict:
        return {"edges": {e: [float(x) for x in self.effects[:, i]] for i, e in enumerate(self.expert_ids)}}

    def use_learned(self, learned: dict, engine: Engine) -> None:
        edges, queries = learned.get("edges"), len(self.config["dev_set"])
        if (not isinstance(edges, dict) or sorted(edges) != sorted(self.expert_ids)
                or any(not isinstance(edges[e], list) or len(edges[e]) != queries for e in self.expert_ids)):
            raise CompositionError(f"{self.name}: the learned edges must give each expert one effect per query")
        self.use_effects(torch.tensor([edges[e] for e in self.expert_ids]).T, engine)

    def expert_scores(self, text: str, engine: Engine) -> torch.Tensor:
        query = torch.nn.functional.normalize(engine.embed([text]).float(), dim=-1)[0]
        similarities = self.query_nodes @ query
        top = torch.topk(similarities, min(self.config["neighbours"], similarities.numel()))
        weights = torch.softmax(top.values / self.config["temperature"], dim=-1)
        return weights @ self.effects[top.indices]

    def complete(self, prompt, request, seed, engine):
        scores = self.expert_scores(prompt, engine)
        overall = self.effects.mean(0)
        chosen = max(range(len(self.expert_ids)), key=lambda i: (float(scores[i]), float(overall[i]), -i))
        expert = self.expert_ids[chosen]
        generation = engine.generate([self.generation_request(prompt, request, seed, {expert: 1.0})])[0]
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens, {expert: 1.0})


CHOICE_TEMPLATE = "\nOption (A): {generator}\nOption (B): {mentor}\nMy choice: Option ("


class MentorCollab(MentorCollabSpec, Strategy):
    """MentorCollab: a generator (the base model or an expert) writes; at a seeded random fraction
    `decision_proportion` of the steps it consults the mentor expert. When their next tokens differ, each writes
    a patch of `patch_tokens` tokens (greedily) and the generator reads both as options (A) and (B) and
    chooses by its own probability of "A" versus "B"; the chosen model then writes the next `patch_tokens`
    tokens. Attribution: token shares (see module docstring)."""

    def choose(self, context: str, engine: Engine, request) -> str:
        generator, mentor = self.config["generator"], self.config["mentor"]
        patches = engine.generate([
            self.generation_request(context, request, None, mixture_of(model),
                                    max_tokens=self.config["patch_tokens"], temperature=0.0)
            for model in (generator, mentor)
        ])
        question = context + CHOICE_TEMPLATE.format(generator=patches[0].text, mentor=patches[1].text)
        scores = engine.score([ScoreRequest(question, option, mixture_of(generator)) for option in ("A", "B")])
        return mentor if sum(scores[1]) > sum(scores[0]) else generator

    def complete(self, prompt, request, seed, engine):
        generator, mentor = self.config["generator"], self.config["mentor"]
        draws = random.Random(self.config["seed"] if seed is None else seed)
        counts = {generator: 0, mentor: 0}
        patch = {"owner": generator, "left": 0}

        def next_logprobs(context: str, step: int) -> torch.Tensor:
            if patch["left"] > 0:
                owner = patch["owner"]
                patch["left"] -= 1
            else:
                owner = generator
                if draws.random() < self.config["decision_proportion"]:
                    both = engine.next_token_logits([self.generation_request(context, request, seed, mixture_of(m))
                                                     for m in (generator, mentor)])
                    if int(both[0].argmax()) != int(both[1].argmax()):
                        owner = self.choose(context, engine, request)
                        patch.update(owner=owner, left=self.config["patch_tokens"] - 1)
            counts[owner] += 1
            return engine.next_token_logits([self.generation_request(context, request, seed, mixture_of(owner))])[0]

        generation = decode_step_by_step(engine, self.generation_request(prompt, request, seed, {}), next_logprobs)
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens,
                      token_share_attribution(counts, mentor))


class Nudging(NudgingSpec, Strategy):
    """Nudging (Fei et al., 2024): the base (the base model or an expert) writes, and wherever its top-1 token
    probability is below `gamma` the nudger expert writes the token instead; a nudged word is finished by the
    nudger (it keeps writing until its text ends in whitespace). Attribution: token shares (module docstring)."""

    def complete(self, prompt, request, seed, engine):
        base, nudger = self.config["base"], self.config["nudger"]
        counts = {base: 0, nudger: 0}
        state = {"nudging": False}

        def next_logprobs(context: str, step: int) -> torch.Tensor:
            both = engine.next_token_logits([self.generation_request(context, request, seed, mixture_of(m))
                                             for m in (base, nudger)])
            in_word = state["nudging"] and context[len(prompt):] and not context[-1].isspace()
            nudge = bool(in_word) or float(both[0].max().exp()) < self.config["gamma"]
            state["nudging"] = nudge
            owner = nudger if nudge else base
            counts[owner] += 1
            return both[1] if nudge else both[0]

        generation = decode_step_by_step(engine, self.generation_request(prompt, request, seed, {}), next_logprobs)
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens,
                      token_share_attribution(counts, nudger))


class CoLLM(CoLLMSpec, Strategy):
    """Co-LLM (Shen et al., 2024): token-level deferral from a base (the base model or an expert) to an
    assistant expert. gate "confidence": defer when the base's top-1 probability is below `threshold`.
    gate "learned": a logistic gate on the base model's embedding of the text so far, trained on the
    development set with Co-LLM's weak labels (a position is labelled "defer" when the assistant's top token
    is the reference token and the base's is not); defer when the gate's probability exceeds `threshold`.
    Attribution: token shares (module docstring)."""

    def learn(self, engine: Engine) -> None:
        self.fit_gate(engine)

    def deferral_examples(self, engine: Engine) -> tuple[list[str], list[int]]:
        contexts, labels = [], []
        base, assistant = mixture_of(self.config["base"]), mixture_of(self.config["assistant"])
        for item in self.config["dev_set"]:
            answer_ids = engine.tokenizer(item["answers"][0], add_special_tokens=False)["input_ids"]
            for position, gold in enumerate(answer_ids):
                context = item["prompt"] + engine.tokenizer.decode(answer_ids[:position], skip_special_tokens=True)
                both = engine.next_token_logits([self.generation_request(context, _GREEDY, None, m)
                                                 for m in (base, assistant)])
                contexts.append(context)
                labels.append(int(int(both[1].argmax()) == gold and int(both[0].argmax()) != gold))
        if not contexts:
            raise CompositionError("co_llm: the development set's answers are empty: nothing to learn the gate from")
        return contexts, labels

    def fit_gate(self, engine: Engine) -> float:
        """Train the gate; returns its training accuracy."""
        contexts, labels = self.deferral_examples(engine)
        self.gate_labels = labels
        features = engine.embed(contexts).float()
        targets = torch.tensor(labels, dtype=torch.float32)
        self.mean, self.std = features.mean(0), features.std(0, unbiased=False) + 1e-6
        x = (features - self.mean) / self.std
        generator = torch.Generator().manual_seed(self.config["seed"])
        weight = (torch.randn(x.shape[1], generator=generator) * 0.01).requires_grad_()
        bias = torch.zeros((), requires_grad=True)
        optimiser = torch.optim.Adam([weight, bias], lr=0.05)
        with torch.enable_grad():
            for _ in range(self.config["epochs"]):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, targets)
                loss = loss + self.config["l2"] * (weight ** 2).sum()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        self.weight, self.bias = weight.detach(), bias.detach()
        return float((((x @ self.weight + self.bias) > 0).float() == targets).float().mean())

    def defer_probability(self, context: str, engine: Engine) -> float:
        x = (engine.embed([context]).float()[0] - self.mean) / self.std
        return float(torch.sigmoid(x @ self.weight + self.bias))

    def learned_state(self) -> dict:
        return {"gate": "learned", "weight": [float(x) for x in self.weight], "bias": float(self.bias),
                "mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std]}

    def use_learned(self, learned: dict, engine: Engine) -> None:
        try:
            self.weight, self.mean, self.std = (torch.tensor(learned[key], dtype=torch.float32)
                                                for key in ("weight", "mean", "std"))
            self.bias = torch.tensor(float(learned["bias"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CompositionError(f"{self.name}: the learned gate needs weight, bias, mean and std ({error})") from None

    def complete(self, prompt, request, seed, engine):
        base, assistant = self.config["base"], self.config["assistant"]
        counts = {base: 0, assistant: 0}

        def next_logprobs(context: str, step: int) -> torch.Tensor:
            if self.config["gate"] == "learned":
                defer = self.defer_probability(context, engine) > self.config["threshold"]
                owner = assistant if defer else base
                counts[owner] += 1
                return engine.next_token_logits([self.generation_request(context, request, seed, mixture_of(owner))])[0]
            both = engine.next_token_logits([self.generation_request(context, request, seed, mixture_of(m))
                                             for m in (base, assistant)])
            defer = float(both[0].max().exp()) < self.config["threshold"]
            counts[assistant if defer else base] += 1
            return both[1] if defer else both[0]

        generation = decode_step_by_step(engine, self.generation_request(prompt, request, seed, {}), next_logprobs)
        return Choice(generation.text, generation.finish_reason, generation.completion_tokens,
                      token_share_attribution(counts, assistant))


_GREEDY = CompletionRequest(prompt="", max_tokens=1)  # how the gate's labels read the next token: greedily
