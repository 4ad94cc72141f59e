"""Text-level strategies: experts read and judge each other's answers as text."""
from __future__ import annotations

import re
from collections import defaultdict

from composition.engine import ScoreRequest
from composition.evaluation import normalise_answer
from composition.strategy_specs import AggregateSpec, DebateSpec
from composition.strategies.base import Choice, Strategy

class Debate(DebateSpec, Strategy):
    """Multi-agent refinement: each debater answers, then for `rounds` rounds each debater reads the
    others' latest answers and refines its own; finally the summariser reads all final answers and
    writes the answer returned. Templates are configurable ({prompt}, {others}, {own}, {answers}).
    Attribution: each expert's share of all tokens generated in the debate (debaters' and the
    summariser's), since every one of those tokens was read by the summariser or written by it."""

    def complete(self, prompt, request, seed, engine):
        debaters = self.config["debaters"]
        tokens = defaultdict(int)
        generations = engine.generate(
            [self.generation_request(prompt, request, seed, {expert_id: 1.0}) for expert_id in debaters]
        )
        answers = {expert_id: generation.text for expert_id, generation in zip(debaters, generations)}
        for expert_id, generation in zip(debaters, generations):
            tokens[expert_id] += generation.completion_tokens
        for _ in range(self.config["rounds"]):
            requests = []
            for expert_id in debaters:
                others = "\n".join(f"- {answers[other]}" for other in debaters if other != expert_id)
                text = self.config["refine_template"].format(prompt=prompt, others=others, own=answers[expert_id])
                requests.append(self.generation_request(text, request, seed, {expert_id: 1.0}))
            for expert_id, generation in zip(debaters, engine.generate(requests)):
                answers[expert_id] = generation.text
                tokens[expert_id] += generation.completion_tokens
        summary_prompt = self.config["summary_template"].format(
            prompt=prompt, answers="\n".join(f"- {answers[expert_id]}" for expert_id in debaters)
        )
        summariser = self.config["summariser"]
        final = engine.generate([self.generation_request(summary_prompt, request, seed, {summariser: 1.0})])[0]
        tokens[summariser] += final.completion_tokens
        return Choice(final.text, final.finish_reason, final.completion_tokens, dict(tokens),
                      generation=final, mixture={summariser: 1.0})


class Aggregate(AggregateSpec, Strategy):
    """Response aggregation over the experts' independent answers.

    method "vote": the answer extracted from most experts wins (answers compared after
    normalisation: lower case, punctuation and articles removed, spaces collapsed); ties go to
    the group with the higher mean token log-probability. The returned text is the most
    confident winning expert's text.
    method "judge": the judge (an expert id, or "base") scores each candidate answer by its mean
    log-probability given the prompt; the best-scored candidate wins.
    `extract` is an optional regular expression; its first group (or whole match) is the answer.
    Attribution: the experts whose (normalised) answer is the winning answer, in equal shares."""

    def extract(self, text: str) -> str:
        if self.config["extract"]:
            match = re.search(self.config["extract"], text)
            if match is None:
                return ""
            text = match.group(1) if match.groups() else match.group(0)
        return normalise_answer(text)

    def complete(self, prompt, request, seed, engine):
        voters = self.config["experts"]
        generations = engine.generate(
            [self.generation_request(prompt, request, seed, {expert_id: 1.0}) for expert_id in voters]
        )
        answers = {expert_id: self.extract(generation.text) for expert_id, generation in zip(voters, generations)}
        by_expert = dict(zip(voters, generations))
        groups: dict[str, list[str]] = defaultdict(list)
        for expert_id in voters:
            groups[answers[expert_id]].append(expert_id)

        def confidence(members: list[str]) -> float:
            return sum(by_expert[m].mean_logprob for m in members) / len(members)

        if self.config["method"] == "vote":
            winner = max(groups, key=lambda answer: (len(groups[answer]), confidence(groups[answer])))
        else:
            mixture = {} if self.config["judge"] == "base" else {self.config["judge"]: 1.0}
            scores = engine.score(
                [ScoreRequest(prompt=prompt, continuation=by_expert[expert_id].text, mixture=mixture)
                 for expert_id in voters]
            )
            mean = {
                expert_id: (sum(s) / len(s) if s else float("-inf")) for expert_id, s in zip(voters, scores)
            }
            winner = answers[max(voters, key=lambda expert_id: mean[expert_id])]
        members = groups[winner]
        chosen = max(members, key=lambda expert_id: by_expert[expert_id].mean_logprob)
        generation = by_expert[chosen]
        return Choice(
            generation.text,
            generation.finish_reason,
            generation.completion_tokens,
            {expert_id: 1.0 / len(members) for expert_id in members},
            generation=generation,
            mixture={chosen: 1.0},
        )
