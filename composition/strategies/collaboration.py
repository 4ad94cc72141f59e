"""Text-level strategies where experts write for each other: Mixture-of-Agents, LLM-Blender, knowledge cards,
multi-agent feedback, heterogeneous swarms, SLM-MUX and structured multi-agent pipelines.

Templates are configurable and checked when the config is read (their fields are listed per strategy).
"Token shares" below means: each expert's share of all the tokens generated while answering (every one of
them was read by the expert that wrote the returned text, or is that text)."""
from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations

import numpy as np
import torch

from composition.engine import Engine, ScoreRequest
from composition.errors import CompositionError
from composition.evaluation import METRICS, normalise_answer
from composition.strategies.base import Choice, Strategy
from composition.strategies.deferral import BASE, mixture_of
from composition.strategies.development import dev_score_of_each_expert
from composition.strategy_specs import (
    HeterogeneousSwarmSpec, KnowledgeCardsSpec, LLMBlenderSpec, MixtureOfAgentsSpec, MultiAgentFeedbackSpec, SlmMuxSpec,
    StructuredPipelineSpec,
)


def bullet_list(texts: list[str]) -> str:
    return "\n".join(f"- {text}" for text in texts)


class TokenLedger:
    """Counts the tokens each model generates while a strategy answers one choice."""

    def __init__(self):
        self.tokens: dict[str, int] = defaultdict(int)

    def generate(self, strategy: Strategy, engine: Engine, jobs: list[tuple[str, str]], request, seed,
                 **overrides) -> list:
        """jobs: (model, prompt) pairs, answered in one engine call; returns the generations."""
        generations = engine.generate([strategy.generation_request(prompt, request, seed, mixture_of(model), **overrides)
                                       for model, prompt in jobs])
        for (model, _), generation in zip(jobs, generations):
            self.tokens[model] += generation.completion_tokens
        return generations

    def shares(self, among: set[str] | None = None) -> dict[str, float]:
        counts = {m: n for m, n in self.tokens.items() if m != BASE and (among is None or m in among)}
        return counts


class MixtureOfAgents(MixtureOfAgentsSpec, Strategy):
    """Mixture-of-Agents (Wang et al., 2024): `layers` layers of proposers; the first answers the prompt, each
    next one reads the previous layer's answers (aggregate template, fields {prompt} {answers}) and answers
    again; the aggregator reads the last layer's answers and writes the answer returned.
    Attribution: token shares."""

    def complete(self, prompt, request, seed, engine):
        ledger, template, proposers = TokenLedger(), self.config["aggregate_template"], self.config["proposers"]
        answers = [g.text for g in ledger.generate(self, engine, [(p, prompt) for p in proposers], request, seed)]
        for _ in range(self.config["layers"] - 1):
            synthesis = template.format(prompt=prompt, answers=bullet_list(answers))
            answers = [g.text for g in ledger.generate(self, engine, [(p, synthesis) for p in proposers], request, seed)]
        final_prompt = template.format(prompt=prompt, answers=bullet_list(answers))
        final = ledger.generate(self, engine, [(self.config["aggregator"], final_prompt)], request, seed)[0]
        return Choice(final.text, final.finish_reason, final.completion_tokens, ledger.shares())


class LLMBlender(LLMBlenderSpec, Strategy):
    """LLM-Blender (Jiang et al., 2023): every expert answers; PairRanker compares every pair of candidates
    with the ranker (the base model or an expert): it reads both (rank template, fields {prompt} {a} {b}) in
    both orders, and a candidate beats the other when the ranker's log p("A") − log p("B") summed over the two
    orders favours it; candidates are ranked by wins (ties: higher mean token log-prob). GenFuser: the fuser
    reads the `top_k` best (fuse template, {prompt} {answers}) and writes the answer; top_k 1 returns the best
    candidate itself. Attribution: the experts whose candidates were fused, in equal shares."""

    def preferences(self, engine: Engine, prompt: str, pairs: list[tuple[str, str]]) -> list[float]:
        """For each (first, second): > 0 when the ranker prefers `first` (log p("A") − log p("B"), averaged over
        both orders). Every comparison is asked of the engine in one call."""
        ranker = mixture_of(self.config["ranker"])
        template = self.config["rank_template"]
        questions = [template.format(prompt=prompt, a=a, b=b)
                     for first, second in pairs for a, b in ((first, second), (second, first))]
        totals = [sum(row) for row in engine.score([ScoreRequest(q, option, ranker)
                                                    for q in questions for option in ("A", "B")])]
        margins = []
        for start in range(0, len(totals), 4):  # per pair: A and B after (first, second), then after (second, first)
            a1, b1, a2, b2 = totals[start:start + 4]
            margins.append(((a1 - b1) + (b2 - a2)) / 2)
        return margins

    def rank(self, engine: Engine, prompt: str, candidates: dict) -> list[str]:
        experts = self.config["experts"]
        pairs = list(combinations(experts, 2))
        margins = self.preferences(engine, prompt, [(candidates[a].text, candidates[b].text) for a, b in pairs])
        wins = Counter({e: 0 for e in experts})
        for (first, second), margin in zip(pairs, margins):
            wins[first if margin >= 0 else second] += 1
        return sorted(experts, key=lambda e: (-wins[e], -candidates[e].mean_logprob))

    def complete(self, prompt, request, seed, engine):
        experts = self.config["experts"]
        ledger = TokenLedger()
        candidates = dict(zip(experts, ledger.generate(self, engine, [(e, prompt) for e in experts], request, seed)))
        top = self.rank(engine, prompt, candidates)[: self.config["top_k"]]
        attribution = {e: 1.0 / len(top) for e in top}
        if len(top) == 1:
            best = candidates[top[0]]
            return Choice(best.text, best.finish_reason, best.completion_tokens, attribution)
        fuse_prompt = self.config["fuse_template"].format(prompt=prompt,
                                                          answers=bullet_list([candidates[e].text for e in top]))
        fused = ledger.generate(self, engine, [(self.config["fuser"], fuse_prompt)], request, seed)[0]
        return Choice(fused.text, fused.finish_reason, fused.completion_tokens, attribution)


class KnowledgeCards(KnowledgeCardsSpec, Strategy):
    """Knowledge cards (Feng et al., 2024): each card (an expert) writes `knowledge_tokens` tokens of
    knowledge for the prompt (knowledge template, {prompt}); the relevance selector keeps the `top_k` whose
    base-model embedding is most similar to the prompt's; the reader (the base model or an expert) answers the
    prompt after them (read template, {knowledge} {prompt}). Attribution: the kept cards, in shares
    proportional to their relevance (cosine similarity clipped at 0; equal when all are 0)."""

    def complete(self, prompt, request, seed, engine):
        cards = self.config["cards"]
        ask = self.config["knowledge_template"].format(prompt=prompt)
        knowledge = engine.generate([
            self.generation_request(ask, request, seed, {card: 1.0}, max_tokens=self.config["knowledge_tokens"],
                                    stop=[])
            for card in cards
        ])
        vectors = torch.nn.functional.normalize(engine.embed([prompt] + [k.text for k in knowledge]).float(), dim=-1)
        relevance = (vectors[1:] @ vectors[0]).clamp(min=0)
        order = sorted(range(len(cards)), key=lambda i: -float(relevance[i]))[: self.config["top_k"]]
        order.sort()  # the kept cards in the system's order
        text = "\n".join(knowledge[i].text for i in order)
        answer = engine.generate([self.generation_request(
            self.config["read_template"].format(knowledge=text, prompt=prompt), request, seed,
            mixture_of(self.config["reader"]))])[0]
        weights = {cards[i]: float(relevance[i]) for i in order}
        if sum(weights.values()) <= 0:
            weights = {cards[i]: 1.0 for i in order}
        return Choice(answer.text, answer.finish_reason, answer.completion_tokens, weights)


class MultiAgentFeedback(MultiAgentFeedbackSpec, Strategy):
    """Multi-agent feedback: every agent answers; in each of `rounds` rounds, each agent's answer gets
    feedback from the next `feedback_count` agents (in the system's order, wrapping around; feedback
    template {prompt} {answer}) and the agent refines it (refine template {prompt} {answer} {feedback});
    the summariser reads the final answers (summary template {prompt} {answers}) and writes the answer.
    Attribution: token shares."""

    def complete(self, prompt, request, seed, engine):
        agents, ledger, config = self.config["agents"], TokenLedger(), self.config
        answers = [g.text for g in ledger.generate(self, engine, [(a, prompt) for a in agents], request, seed)]
        for _ in range(config["rounds"]):
            refine_jobs = []
            for index, agent in enumerate(agents):
                givers = [agents[(index + offset) % len(agents)] for offset in range(1, config["feedback_count"] + 1)]
                ask = config["feedback_template"].format(prompt=prompt, answer=answers[index])
                feedback = ledger.generate(self, engine, [(g, ask) for g in givers], request, seed,
                                           max_tokens=config["feedback_tokens"], stop=[]) if givers else []
                refine_jobs.append((agent, config["refine_template"].format(
                    prompt=prompt, answer=answers[index], feedback=bullet_list([f.text for f in feedback]))))
            answers = [g.text for g in ledger.generate(self, engine, refine_jobs, request, seed)]
        summary = config["summary_template"].format(prompt=prompt, answers=bullet_list(answers))
        final = ledger.generate(self, engine, [(config["summariser"], summary)], request, seed)[0]
        return Choice(final.text, final.finish_reason, final.completion_tokens, ledger.shares())


def topological_graph(matrix: np.ndarray, threshold: float = 0.5) -> tuple[list[int], list[tuple[int, int]]]:
    """Heterogeneous Swarms' decoding of a continuous adjacency matrix into a DAG: nodes ordered by
    out-strength minus in-strength (sources first; ties by index), edge i→j kept when i comes before j and
    matrix[i, j] ≥ threshold. The last node in the order answers."""
    count = matrix.shape[0]
    strength = matrix.sum(1) - matrix.sum(0)
    order = sorted(range(count), key=lambda i: (-float(strength[i]), i))
    position = {node: rank for rank, node in enumerate(order)}
    edges = [(i, j) for i in range(count) for j in range(count)
             if i != j and position[i] < position[j] and matrix[i, j] >= threshold]
    return order, edges


def ancestors(node: str, incoming: dict[str, list[str]]) -> set[str]:
    seen, frontier = {node}, [node]
    while frontier:
        for parent in incoming.get(frontier.pop(), []):
            if parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return seen


class HeterogeneousSwarm(HeterogeneousSwarmSpec, Strategy):
    """Heterogeneous Swarms (Feng et al., 2025): the experts are nodes of a directed acyclic graph of roles;
    in topological order each node answers, reading its predecessors' answers (node template {prompt}
    {inputs}; a node without predecessors reads the prompt alone), and the last node's answer is returned.
    The graph is `edges` ([[from, to], ...]) with `output` when given; otherwise it is learned on the
    development set: particle swarm optimisation over continuous adjacency matrices in [0, 1]^(n×n)
    (`particles`, `iterations`, seeded), each decoded by `topological_graph` and scored by the development
    metric. Attribution: token shares of the output node and its ancestors."""

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        if self.config["edges"] is not None:
            self.graph = ([tuple(edge) for edge in self.config["edges"]], self.config["output"])

    def decode(self, matrix: np.ndarray) -> tuple[list[tuple[str, str]], str]:
        order, edges = topological_graph(matrix)
        return [(self.expert_ids[i], self.expert_ids[j]) for i, j in edges], self.expert_ids[order[-1]]

    def utility(self, engine: Engine, matrix: np.ndarray) -> float:
        graph = self.decode(matrix)
        metric = METRICS[self.config["metric"]]
        request = self.dev_request()
        dev_set = self.config["dev_set"]
        answers = self.run_graph(engine, [item["prompt"] for item in dev_set], request, None, graph, TokenLedger())
        scores = [metric(answer.text, item["answers"]) for answer, item in zip(answers, dev_set)]
        value = sum(scores) / len(scores)
        self.evaluations.append((graph, value))
        return value

    def dev_request(self):
        from composition.strategies.base import CompletionRequest

        return CompletionRequest(prompt="", max_tokens=self.config["max_tokens"], stop=list(self.config["stop"]))

    def learn(self, engine: Engine) -> None:
        self.graph = self.search(engine)

    def search(self, engine: Engine) -> tuple[list[tuple[str, str]], str]:
        count, config = len(self.expert_ids), self.config
        rng = np.random.default_rng(config["seed"])
        self.evaluations = []
        positions = [rng.uniform(0, 1, (count, count)) for _ in range(config["particles"])]
        velocities = [rng.uniform(-0.1, 0.1, (count, count)) for _ in positions]
        values = [self.utility(engine, x) for x in positions]
        personal = [(x.copy(), v) for x, v in zip(positions, values)]
        best_index = int(np.argmax(values))
        best = (positions[best_index].copy(), values[best_index])
        for _ in range(config["iterations"]):
            for index in range(len(positions)):
                r1, r2 = rng.uniform(0, 1, 2)
                velocities[index] = (0.2 * velocities[index] + r1 * 0.3 * (personal[index][0] - positions[index])
                                     + r2 * 0.4 * (best[0] - positions[index]))
                positions[index] = np.clip(positions[index] + 0.5 * velocities[index], 0, 1)
                value = self.utility(engine, positions[index])
                if value > personal[index][1]:
                    personal[index] = (positions[index].copy(), value)
                if value > best[1]:
                    best = (positions[index].copy(), value)
        self.best_score = best[1]
        return self.decode(best[0])

    def learned_state(self) -> dict:
        edges, output = self.graph
        return {"edges": [list(e) for e in edges], "output": output, "score": float(self.best_score)}

    def use_learned(self, learned: dict, engine: Engine) -> None:
        edges, output = learned.get("edges"), learned.get("output")
        valid = (isinstance(edges, list) and output in self.expert_ids and all(
            isinstance(edge, list) and len(edge) == 2 and all(node in self.expert_ids for node in edge)
            for edge in edges))
        if not valid or self.order_of(self.expert_ids, [tuple(edge) for edge in edges]) is None:
            raise CompositionError(f"{self.name}: the learned graph must be a DAG of the system's experts")
        self.graph = ([tuple(edge) for edge in edges], output)
        self.best_score = float(learned.get("score", 0.0))

    def run_graph(self, engine, prompts: list[str], request, seed, graph, ledger: TokenLedger) -> list:
        """The output node's answer to each prompt; each node answers every prompt in one engine call."""
        edges, output = graph
        incoming = {node: [a for a, b in edges if b == node] for node in self.expert_ids}
        needed = ancestors(output, incoming)
        answers = {}  # node -> its generation for each prompt
        for node in self.order_of(self.expert_ids, edges):
            if node not in needed:
                continue
            parents = incoming[node]
            texts = [prompt if not parents else self.config["node_template"].format(
                prompt=prompt, inputs=bullet_list([answers[p][index].text for p in parents]))
                for index, prompt in enumerate(prompts)]
            answers[node] = ledger.generate(self, engine, [(node, text) for text in texts], request, seed)
        return answers[output]

    def complete(self, prompt, request, seed, engine):
        ledger = TokenLedger()
        final = self.run_graph(engine, [prompt], request, seed, self.graph, ledger)[0]
        return Choice(final.text, final.finish_reason, final.completion_tokens, ledger.shares())


class SlmMux(SlmMuxSpec, Strategy):
    """SLM-MUX (2025): each expert samples `samples` answers (temperature `sample_temperature`, seeds
    seed, seed+1, ...); an expert's confidence is the share of its samples that agree with its most common
    (normalised) answer; the most confident expert answers with that answer's first sample. Ties go to the
    better development-set score when a `dev_set` is given (learned when prepared), then to the system's order.
    Attribution: {chosen: 1}."""

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        if self.config["dev_set"] is None:
            self.dev_accuracy = {e: 0.0 for e in self.config["experts"]}

    def learn(self, engine: Engine) -> None:
        self.dev_accuracy = dev_score_of_each_expert(engine, self.config["experts"], self.config["dev_set"],
                                                     self.config)

    def learned_state(self) -> dict:
        return {"dev_accuracy": {e: float(value) for e, value in self.dev_accuracy.items()}}

    def use_learned(self, learned: dict, engine: Engine) -> None:
        accuracy = learned.get("dev_accuracy")
        if not isinstance(accuracy, dict) or sorted(accuracy) != sorted(self.config["experts"]):
            raise CompositionError(f"{self.name}: the learned accuracies must name each sampled expert once")
        self.dev_accuracy = {e: float(accuracy[e]) for e in self.config["experts"]}

    def complete(self, prompt, request, seed, engine):
        experts, k = self.config["experts"], self.config["samples"]
        base_seed = 0 if seed is None else seed
        samples = engine.generate([
            self.generation_request(prompt, request, base_seed + j, {e: 1.0},
                                    temperature=self.config["sample_temperature"])
            for e in experts for j in range(k)
        ])
        best = None
        for index, expert in enumerate(experts):
            own = samples[index * k:(index + 1) * k]
            counts = Counter(normalise_answer(s.text) for s in own)
            answer, votes = max(counts.items(), key=lambda pair: pair[1])  # first most common on ties
            key = (votes / k, self.dev_accuracy[expert], -index)
            if best is None or key > best[0]:
                best = (key, expert, next(s for s in own if normalise_answer(s.text) == answer))
        _, expert, chosen = best
        return Choice(chosen.text, chosen.finish_reason, chosen.completion_tokens, {expert: 1.0})


class StructuredPipeline(StructuredPipelineSpec, Strategy):
    """Structured multi-agent collaboration: agents on a fixed communication structure. Every agent answers;
    then for `rounds` rounds every agent reads its previous answer and those of the agents it listens to
    (regenerate template {prompt} {own} {inputs}) and answers again; the `final` agent's last answer is
    returned. Structures: "chain" (each agent listens to the one before it), "star" (the first agent listens
    to all, the others to the first), "complete" (everyone to everyone), "custom" (`edges`: [[speaker,
    listener], ...]). `final` defaults to the last agent of a chain, otherwise the first.
    Attribution: token shares of the agents whose answers reached the final agent within the rounds."""

    def listens_to(self) -> dict[str, list[str]]:
        agents, topology = self.config["agents"], self.config["topology"]
        if topology == "chain":
            return {a: agents[i - 1:i] if i else [] for i, a in enumerate(agents)}
        if topology == "star":
            return {a: (agents[1:] if i == 0 else agents[:1]) for i, a in enumerate(agents)}
        if topology == "complete":
            return {a: [b for b in agents if b != a] for a in agents}
        return {a: [s for s, listener in self.config["edges"] if listener == a] for a in agents}

    def complete(self, prompt, request, seed, engine):
        agents, listens, ledger = self.config["agents"], self.listens_to(), TokenLedger()
        generations = ledger.generate(self, engine, [(a, prompt) for a in agents], request, seed)
        answers = dict(zip(agents, generations))
        reached = {self.config["final"]}
        for _ in range(self.config["rounds"]):
            jobs = [(a, self.config["regenerate_template"].format(
                prompt=prompt, own=answers[a].text, inputs=bullet_list([answers[s].text for s in listens[a]])))
                for a in agents]
            answers = dict(zip(agents, ledger.generate(self, engine, jobs, request, seed)))
            reached |= {speaker for listener in reached for speaker in listens[listener]}
        final = answers[self.config["final"]]
        return Choice(final.text, final.finish_reason, final.completion_tokens, ledger.shares(reached))
