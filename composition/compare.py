"""Every composition method of the registry, compared on one world: `python -m composition.compare`.

    python -m composition.compare [--world real|toy] [--items 4] [--dev-items 1] [--methods a,b]
                                  [--engine batched|reference] [--budget-s 1200] [--participation-draws 3]
                                  [--out-dir bench/results]

The real world is the demo's (composition.skills on SmolLM2-135M-Instruct): the five experts that seed_demo
trains, found in their cache by recipe hash (composition.training.demo_recipe); the toy world builds a tiny
untrained character model and trains its experts in seconds (its answers mean nothing: it checks the
machinery, in CI). Every method of composition.strategies.STRATEGIES answers the mixed held-out set
(`--items` per skill), greedy, under the configuration of `method_configs`; beside
them the base model alone, each expert alone, and a monolith: one LoRA of the experts' summed rank and summed
training steps, trained by the same recipe code on the union of their training pairs
(composition.training.monolith_recipe), cached by recipe hash like the experts. Methods that learn
(routers, LoraHub, model swarms, ...) learn on a development set of `--dev-items` training items per skill,
never a held-out prompt.

The engine (`--engine`): "batched" (default) answers a method's items concurrently, one thread each, through
continuous batching (gpu_workers.batching.Scheduler over gpu_workers.engine.MosaicEngine, float32: every
sequence of every thread advances in one forward per step); "reference" answers them one at a time through
composition.engine.ReferenceEngine, the oracle. Both decode greedily by the same rule (tests/composition/
test_compare.py checks that they agree item by item on the toy world).

Per row: accuracy (composition.skills.is_correct) with a 95% Wilson interval, completion tokens billed per
answer, seconds per answer (learning amortised over the items, and shown apart), and the items solved that
no single expert solves. The participation curve then runs the best three composed methods over subsets of
1, 2, 4 and all experts, `--participation-draws` seeded draws per size. Writes methods.{md,json} and
participation.{md,json,png} under `--out-dir`. No Django.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
REAL_BASE = "smollm2-135m-instruct"
PARTICIPATION_SIZES = (1, 2, 4)  # and all of them
MONOLITH = "monolith"

# Why a method can or cannot do more than its experts here: mechanisms, not results (those are measured).
METHOD_NOTES = {
    "embedding_router": "routes each query to the expert whose examples it is nearest to",
    "trained_router": "the demo's router: a classifier over the base model's embeddings, trained on labelled "
                      "training prompts",
    "cascade": "asks the experts in turn until one is confident (mean log-probability above the threshold)",
    "switch": "hands each sentence to the nearest expert; these answers are one short segment",
    "graph_router": "routes by which experts solved the query's nearest development items",
    "mentor_collab": "one helper expert (the first of the system) corrects the base model at uncertain tokens: "
                     "it cannot help on the other skills",
    "nudging": "one helper expert (the first) writes the base model's uncertain tokens: at most that skill",
    "co_llm": "token-level deferral to one helper expert (the first): at most that skill",
    "contrastive": "one expert (the first) contrasted with the base model: at most that skill",
    "logit_mixture": "per-token mixture, weighted by the embedding router",
    "debate": "experts revise their answers after reading each other's, the first expert summarises; a 135M "
              "model rarely copies a right answer out of a long prompt",
    "aggregate": "majority vote over the experts' answers: with one expert per skill, a right answer is one "
                 "vote of five",
    "mixture_of_agents": "the first expert aggregates every expert's proposal: it must pick the right one out "
                         "of the prompt, which models this small rarely do",
    "llm_blender": "the base model ranks candidates pairwise and the winner is returned",
    "knowledge_cards": "experts write knowledge the base model reads; the skills here are procedures, not facts",
    "multiagent_feedback": "agents give feedback and refine; feedback from a 135M model is mostly noise",
    "heterogeneous_swarm": "a graph of experts, chosen on the development set",
    "slm_mux": "picks the expert whose sampled answers agree most",
    "structured": "a star of agents that read each other's answers; the hub's answer is final",
    "merge": "the demo's merge (TIES): one adapter of all five, each diluted by the others",
    "merge_search": "merge weights searched on the development set",
    "lorahub": "merge weights found by CMA-ES on the development set's loss",
    "model_swarms": "merge weights moved by particle swarm on the development set",
    "greedy_soup": "adds experts to a uniform soup while the development score does not drop",
    "expo": "extrapolates from the weakest to the strongest expert on the development set: one skill's expert",
}


@dataclass
class World:
    name: str
    base_dir: Path
    base_name: str
    engine: object          # MemoisingEngine over the chosen engine (ENGINES)
    experts: list           # composition.experts.Expert, ids = skill names, in SKILLS order
    render: Callable[[str], str]
    monolith: object | None  # the monolith as an Expert (id MONOLITH), registered in the engine
    monolith_facts: dict | None
    toy: bool
    workers: int            # items answered at once: 1 for the reference engine


class BatchedEngine:
    """The engine protocol over MosaicEngine with generations through its continuous-batching scheduler, so
    generate calls from many threads decode together; next_token_logits, score and embed calls that arrive
    while one runs are run together next (a token-by-token strategy's threads share each forward)."""

    def __init__(self, base_dir: Path):
        import torch

        from gpu_workers.batching import Scheduler
        from gpu_workers.engine import MosaicEngine

        # token-by-token strategies keep every item's prompt so far in the prefix cache: room for 64 items' rows
        self.engine = MosaicEngine(str(base_dir), dtype=torch.float32, prefix_cache_bytes=2 << 30)
        self.tokenizer = self.engine.tokenizer
        self.scheduler = Scheduler(self.engine)
        self.next_token_logits = CallsTogether(self.engine.next_token_logits)
        self.score = CallsTogether(self.engine.score)
        self.embed = CallsTogether(self.engine.embed)

    def register_expert(self, expert) -> None:
        self.engine.register_expert(expert)

    def generate(self, requests):
        return self.scheduler.generate(requests)


class CallsTogether:
    """A batch function (a list in, one result row per item out) that many threads call: the calls waiting
    while one runs are joined into the next run, and each caller gets its own rows back."""

    def __init__(self, run: Callable):
        self.run = run
        self.condition = threading.Condition()
        self.waiting: list[dict] = []
        self.running = False

    def __call__(self, items: list):
        call = {"items": list(items), "done": False, "rows": None, "error": None}
        with self.condition:
            self.waiting.append(call)
            while not call["done"] and self.running:
                self.condition.wait()
            if call["done"]:
                return self._result(call)
            calls, self.waiting, self.running = self.waiting, [], True
        try:
            rows = self.run([item for c in calls for item in c["items"]])
            start = 0
            for c in calls:
                c["rows"], start = rows[start:start + len(c["items"])], start + len(c["items"])
        except BaseException as error:  # every joined caller sees it
            for c in calls:
                c["error"] = error
        with self.condition:
            for c in calls:
                c["done"] = True
            self.running = False
            self.condition.notify_all()
        return self._result(call)

    @staticmethod
    def _result(call: dict):
        if call["error"] is not None:
            raise call["error"]
        return call["rows"]


def reference_engine(base_dir: Path):
    from composition.engine import ReferenceEngine

    return ReferenceEngine(str(base_dir))


ENGINES = {"batched": BatchedEngine, "reference": reference_engine}
ENGINE_NAMES = {"batched": "MosaicEngine through the continuous-batching scheduler (float32, CPU; a method's items "
                           "answered together)",
                "reference": "ReferenceEngine (float32, CPU; one item at a time)"}
ITEMS_AT_ONCE = {"batched": 64, "reference": 1}  # ReferenceEngine switches adapters globally: one caller


def skill_names() -> list[str]:
    from composition.skills import SKILLS

    return list(SKILLS)


def expert_metadata(skill_name: str, render, base: str) -> dict:
    from composition.skills import SKILLS

    skill = SKILLS[skill_name]
    return {"description": skill.description, "examples": [render(skill.example_prompt)], "base_model": base}


def cached_adapter(cache_dir: Path, base_dir: Path, recipe, pairs, base_sha256: str, *, train: bool,
                   description: str):
    """(adapter directory, training facts or None) for a recipe; trains it only when `train` is set."""
    from composition.training import ensure_adapter, recipe_hash

    target = cache_dir / recipe_hash(recipe, pairs, base_sha256)
    if not train and not (target / "adapter_model.safetensors").is_file():
        raise SystemExit(f"{description}: no adapter at {target} (its recipe hash); seed_demo trains and caches "
                         "the demo's experts (MOSAIC_TRAINED_EXPERTS_DIR), or pass --experts-dir")
    return ensure_adapter(cache_dir, base_dir, recipe, pairs, description=description, base_sha256=base_sha256)


def load_world(world: str, *, base_dir: Path, experts_dir: Path, monolith_dir: Path | None,
               toy_dir: Path | None = None, engine: str = "batched") -> World:
    """The base model, the five experts (named by their skills) and the monolith, in one memoising engine of the
    kind `engine` names (ENGINES)."""
    from composition.engine import MemoisingEngine
    from composition.experts import Expert, load_expert
    from composition.training import (
        base_weights_sha256, demo_recipe, demo_training_pairs, monolith_recipe, monolith_training_pairs,
        toy_recipe,
    )
    from composition.world import build_base_model

    toy = world == "toy"
    skills = skill_names()
    if toy:
        root = Path(toy_dir or experts_dir)
        base_dir = root / "base"
        if not (base_dir / "config.json").exists():
            build_base_model(base_dir, layers=2, hidden=64)
        experts_dir = root / "experts"
    if not (Path(base_dir) / "config.json").exists():
        raise SystemExit(f"no base model at {base_dir}: pass --base-dir (the converted {REAL_BASE})")
    base_sha = base_weights_sha256(base_dir)
    recipes = {skill: toy_recipe() if toy else demo_recipe(skill) for skill in skills}
    engine_kind = engine
    engine = MemoisingEngine(ENGINES[engine_kind](Path(base_dir)))
    render = _renderer(engine.tokenizer)
    experts = []
    for skill in skills:
        directory, _ = cached_adapter(Path(experts_dir), Path(base_dir), recipes[skill],
                                      demo_training_pairs(skill, toy=toy), base_sha, train=toy,
                                      description=f"expert {skill}")
        loaded = load_expert(skill, directory)
        experts.append(Expert(id=skill, adapter=loaded.adapter,
                              metadata=expert_metadata(skill, render, str(base_dir))))
    for expert in experts:
        engine.register_expert(expert)
    monolith, facts = None, None
    if monolith_dir is not None:
        recipe = monolith_recipe([recipes[skill] for skill in skills])
        directory, facts = cached_adapter(Path(monolith_dir), Path(base_dir), recipe,
                                          monolith_training_pairs(skills, toy=toy), base_sha, train=True,
                                          description=MONOLITH)
        if facts is None and (directory / "training.json").is_file():
            facts = {**json.loads((directory / "training.json").read_text()), "cached": True}
        loaded = load_expert(MONOLITH, directory)
        monolith = Expert(id=MONOLITH, adapter=loaded.adapter, metadata={
            "description": "every skill", "examples": [], "base_model": str(base_dir)})
        engine.register_expert(monolith)
    return World(name=world, base_dir=Path(base_dir), base_name=Path(base_dir).name if not toy else "mosaic-toy",
                 engine=engine, experts=experts, render=render, monolith=monolith, monolith_facts=facts, toy=toy,
                 workers=ITEMS_AT_ONCE[engine_kind])


def _renderer(tokenizer) -> Callable[[str], str]:
    from composition.training import chat_prompt

    return lambda message: chat_prompt(tokenizer, message)


def method_configs(expert_ids: list[str], dev_set: list[dict], max_tokens: int, render) -> dict[str, dict]:
    """The configuration each composing method is compared under, for a system of `expert_ids` (skill names),
    in order of expected cost. Helper-expert methods (one base and one helper) take the system's first expert."""
    from composition.skills import demo_strategies, router_examples

    first = expert_ids[0]
    dev = {"dev_set": dev_set, "max_tokens": max_tokens, "stop": []}
    demo = demo_strategies({skill: skill for skill in expert_ids},
                           router_examples({skill: skill for skill in expert_ids}, render))
    return {
        "embedding_router": {},
        "trained_router": demo["router"][1],
        "aggregate": {"method": "vote"},
        "cascade": demo["cascade"][1],
        "merge": demo["merge"][1],
        "graph_router": {**dev, "neighbours": 3},
        "mixture_of_agents": {"layers": 1},
        "switch": {"segment": "sentence"},
        "logit_mixture": {"source": "router"},
        "expo": dev,
        "greedy_soup": dev,
        "merge_search": {**dev, "samples": 4, "method": "ties", "density": 0.5, "scale": 3},
        "nudging": {"nudger": first},
        "co_llm": {"assistant": first, "threshold": 0.5},
        "contrastive": {"expert": first},
        "mentor_collab": {"mentor": first, "decision_proportion": 0.25, "patch_tokens": 4},
        "lorahub": {**dev, "budget": 8, "population": 4},
        "model_swarms": {**dev, "iterations": 1, "extra_particles": 1},
        "llm_blender": {"top_k": 1},
        "knowledge_cards": {"top_k": min(2, len(expert_ids)), "knowledge_tokens": 16},
        "debate": {"rounds": 1},
        "structured": {"topology": "star", "rounds": 1},
        "slm_mux": {"samples": 3, **dev},
        "multiagent_feedback": {"rounds": 1, "feedback_count": min(1, len(expert_ids) - 1), "feedback_tokens": 16},
        "heterogeneous_swarm": {**dev, "particles": 2, "iterations": 0},
    }


def composing_methods() -> list[str]:
    """Every registered strategy that composes experts (single and base are the rows beside them)."""
    from composition.strategies import STRATEGIES

    return [name for name in STRATEGIES if name not in ("single", "base")]


def evaluate(name: str, config: dict, experts: list, engine, items, render, max_tokens: int, *,
             label: str | None = None, progress: bool = True, workers: int = 1) -> dict:
    """One method's row: its answers to `items`, up to `workers` at once (each item's seconds is its own
    latency; answering_s is the wall time of them all)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    from composition.skills import is_correct
    from composition.strategies import build_strategy
    from composition.strategies.base import CompletionRequest

    started = time.perf_counter()
    strategy = build_strategy(name, config, experts)
    strategy.prepare(engine)
    strategy._prepared_for = engine  # run() prepares only for an engine it has not seen
    learning = time.perf_counter() - started

    def answer(item):
        began = time.perf_counter()
        result = strategy.run(CompletionRequest(prompt=render(item.prompt), max_tokens=max_tokens, seed=0), engine)
        return result, time.perf_counter() - began

    answering = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool, \
            tqdm(total=len(items), desc=label or name, leave=False, disable=not progress) as bar:
        futures = [pool.submit(answer, item) for item in items]
        for _ in as_completed(futures):
            bar.update()
        answers = [future.result() for future in futures]
    answering_s = time.perf_counter() - answering
    return {"name": label or name, "method": name,
            "correct": [bool(is_correct(item, result.texts[0])) for item, (result, _) in zip(items, answers)],
            "tokens": [result.completion_tokens for result, _ in answers],
            "seconds": [seconds for _, seconds in answers], "answering_s": answering_s, "learning_s": learning,
            "attribution_sums": [round(sum(result.attribution.values()), 6) for result, _ in answers]}


def summarise(row: dict, expert_rows: dict[str, list[bool]]) -> dict:
    from composition.evaluation import score

    measured = score([float(c) for c in row["correct"]])
    n = len(row["correct"])
    solved_alone = [any(rows[i] for rows in expert_rows.values()) for i in range(n)]
    return {
        **row,
        "accuracy": measured.mean, "low": measured.low, "high": measured.high, "n": n,
        "tokens_per_answer": sum(row["tokens"]) / n if n else 0.0,
        "seconds_per_answer": (row.get("answering_s", sum(row["seconds"])) + row["learning_s"]) / n if n else 0.0,
        "solved_by_no_single_expert": sum(1 for c, alone in zip(row["correct"], solved_alone) if c and not alone),
    }


def headline(rows: list[dict]) -> dict:
    """What the table says about the claim under test: which composed methods beat the best single expert
    (on the point estimate, and with intervals that do not overlap), and the items only collaboration solved."""
    experts = [r for r in rows if r["kind"] == "expert"]
    composed = [r for r in rows if r["kind"] == "method"]
    best = max(experts, key=lambda r: r["accuracy"]) if experts else None
    if best is None:
        return {}
    return {
        "best_single_expert": best["name"], "best_single_accuracy": best["accuracy"],
        "beat_best_single": [r["name"] for r in composed if r["accuracy"] > best["accuracy"]],
        "beat_best_single_beyond_interval": [r["name"] for r in composed if r["low"] > best["high"]],
        "solved_only_by_collaboration": {r["name"]: r["solved_by_no_single_expert"] for r in composed
                                         if r["solved_by_no_single_expert"]},
        "monolith": next(({"accuracy": r["accuracy"], "low": r["low"], "high": r["high"]}
                          for r in rows if r["kind"] == "monolith"), None),
    }


def render_methods_markdown(report: dict) -> str:
    lines = [
        f"# Every composition method on the {report['world']} world ({report['base_model']})", "",
        f"`{report['command']}`: {report['seconds']} s on {report['machine']} (load average "
        f"{report['load_before']} before, {report['load_after']} after), {ENGINE_NAMES[report.get('engine', 'reference')]}, "
        "greedy. "
        f"Mixed held-out set: {report['n']} items ({report['items_per_skill']} per skill: "
        f"{', '.join(report['skills'])}), sha256 `{report['heldout_sha256'][:16]}`; development set "
        f"{report['dev_items_per_skill']} training item(s) per skill, sha256 `{report['dev_sha256'][:16]}`.", "",
        "Accuracy is composition.skills.is_correct with a 95% Wilson interval. Seconds per answer include the "
        "method's learning (also shown apart), amortised over the items; the experts' greedy answers are "
        "memoised, so methods that reuse them (routers, vote, proposers) look cheaper than they would alone. "
        "'Solved by no single expert' counts the items a row answers right that no expert alone answers "
        "right." + (" The toy world's base model is untrained and its experts take two steps each: its answers "
                    "mean nothing; it checks that every method runs here." if report["world"] == "toy" else ""), "",
        "| row | level | accuracy [95% CI] | tokens / answer | s / answer | learning s | solved by no single expert "
        "| note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['name']}{' †' if row.get('reused') else ''} | {row['level']} | {row['accuracy']:.2f} [{row['low']:.2f}, {row['high']:.2f}] | "
            f"{row['tokens_per_answer']:.1f} | {row['seconds_per_answer']:.2f} | {row['learning_s']:.1f} | "
            f"{row['solved_by_no_single_expert']} | {row.get('note', '')} |")
    if report.get("reused_from"):
        earlier = report["reused_from"]
        lines += ["", f"† measured by an earlier run on the same sets and configurations, `{earlier['command']}` "
                      f"({earlier['seconds']} s, load average {earlier['load_before']} before, "
                      f"{earlier['load_after']} after), and kept by `--reuse`."]
    if report["not_run"]:
        lines += ["", f"Not run within the time budget ({report['budget_s']} s): {', '.join(report['not_run'])}."]
    if report["failed"]:
        lines += ["", "Failed: " + "; ".join(report["failed"])]
    facts = report.get("headline") or {}
    if facts:
        monolith = facts.get("monolith")
        lines += [
            "", "## Headline", "",
            f"- Best single expert: {facts['best_single_expert']} at {facts['best_single_accuracy']:.2f}.",
            "- Composed methods above it (point estimate): "
            + (", ".join(facts["beat_best_single"]) or "none") + "; above its interval: "
            + (", ".join(facts["beat_best_single_beyond_interval"]) or "none") + ".",
            "- Items solved by collaboration and by no single expert: "
            + (", ".join(f"{k} {v}" for k, v in facts["solved_only_by_collaboration"].items()) or "none") + ".",
        ]
        if monolith:
            lines.append(f"- The monolith (one LoRA, rank {report['monolith']['rank']}, "
                         f"{report['monolith']['steps']} steps, the union of the experts' training pairs): "
                         f"{monolith['accuracy']:.2f} [{monolith['low']:.2f}, {monolith['high']:.2f}].")
    if report.get("notes"):
        lines += ["", *report["notes"]]
    return "\n".join(lines) + "\n"


def participation_subsets(expert_ids: list[str], sizes: tuple[int, ...], draws: int, seed: int) -> dict[int, list]:
    """For each size, `draws` distinct subsets drawn at random (seeded), or all of them when fewer exist;
    the full set once."""
    rng = random.Random(seed)
    chosen: dict[int, list[list[str]]] = {}
    for size in sorted({s for s in sizes if s < len(expert_ids)} | {len(expert_ids)}):
        every = [list(c) for c in itertools.combinations(expert_ids, size)]
        chosen[size] = every if len(every) <= draws else [every[i] for i in sorted(rng.sample(range(len(every)),
                                                                                                draws))]
    return chosen


def render_participation_markdown(report: dict) -> str:
    lines = [
        f"# Participation curve on the {report['world']} world ({report['base_model']})", "",
        f"Quality of the best three composed methods of methods.md ({', '.join(report['methods'])}) when only "
        f"some contributors take part: subsets of {', '.join(str(s) for s in report['sizes'])} experts, up to "
        f"{report['draws']} distinct subsets per size drawn at random (seed {report['seed']}), each answering "
        f"the whole mixed held-out set ({report['n']} items, sha256 `{report['heldout_sha256'][:16]}`). "
        "The development set is the system's, the same for every subset. Mean accuracy over the draws, with "
        "the lowest and highest draw.", "",
        "| method | " + " | ".join(f"{s} expert{'s' if s > 1 else ''}" for s in report["sizes"]) + " |",
        "|---|" + "---|" * len(report["sizes"]),
    ]
    for method in report["methods"]:
        cells = []
        for size in report["sizes"]:
            points = [p for p in report["points"] if p["method"] == method and p["size"] == size]
            if not points:
                cells.append("-")
                continue
            values = [p["accuracy"] for p in points]
            cells.append(f"{sum(values) / len(values):.2f} [{min(values):.2f}, {max(values):.2f}] (n={len(values)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Subsets per size: " + "; ".join(
        f"{size}: " + ", ".join("+".join(s) for s in subsets) for size, subsets in report["subsets"].items())]
    if report.get("failed"):
        lines += ["", "Failed: " + "; ".join(report["failed"])]
    return "\n".join(lines) + "\n"


def plot_participation(report: dict, path: Path, reference: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method in report["methods"]:
        sizes, means, lows, highs = [], [], [], []
        for size in report["sizes"]:
            values = [p["accuracy"] for p in report["points"] if p["method"] == method and p["size"] == size]
            if values:
                mean = sum(values) / len(values)
                sizes.append(size)
                means.append(mean)
                lows.append(max(0.0, mean - min(values)))  # rounding can put the mean a hair outside
                highs.append(max(0.0, max(values) - mean))
        axes.errorbar(sizes, means, yerr=[lows, highs], marker="o", capsize=3, label=method)
    for label, value in reference.items():
        axes.axhline(value, linestyle="--", linewidth=1, color="grey" if "expert" in label else "black")
        axes.annotate(label, (report["sizes"][0], value), textcoords="offset points", xytext=(2, 3), fontsize=7)
    axes.set_xticks(report["sizes"])
    axes.set_xlabel("contributing experts")
    axes.set_ylabel("accuracy on the mixed held-out set")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(f"Participation ({report['world']} world, {report['n']} items)")
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def best_methods(rows: list[dict], count: int = 3) -> list[str]:
    """The composed methods with the highest accuracy; ties go to the cheaper (seconds per answer)."""
    composed = [r for r in rows if r["kind"] == "method"]
    return [r["method"] for r in sorted(composed, key=lambda r: (-r["accuracy"], r["seconds_per_answer"]))[:count]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m composition.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", choices=("real", "toy"), default="real")
    parser.add_argument("--items", type=int, default=4, help="held-out items per skill")
    parser.add_argument("--dev-items", type=int, default=1, help="training items per skill in the development set")
    parser.add_argument("--methods", default="", help="comma-separated composing methods (default: every one)")
    parser.add_argument("--budget-s", type=float, default=1200, help="start no method after this many seconds")
    parser.add_argument("--participation-draws", type=int, default=3, help="subsets drawn per size (0: no curve)")
    parser.add_argument("--participation-methods", default="", help="comma-separated (default: the best three)")
    parser.add_argument("--seed", type=int, default=0, help="the participation draws' seed")
    parser.add_argument("--no-monolith", action="store_true", help="leave the monolith out (it trains if not cached)")
    parser.add_argument("--base-dir", type=Path, default=Path(os.environ.get("BASE_MODEL_DIR", "var/base_models"))
                        / REAL_BASE)
    parser.add_argument("--experts-dir", type=Path, help="the demo experts' cache (default: "
                        "$MOSAIC_TRAINED_EXPERTS_DIR/real or var/cache/experts/real; the toy world's own folder "
                        "for --world toy)")
    parser.add_argument("--monolith-dir", type=Path, default=None,
                        help="where the monolith is cached (default: var/cache/experts/monolith)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a previous run's methods.json: its rows (and participation.json's points) for the same "
                             "world, held-out set, development set and configurations are kept, not run again")
    parser.add_argument("--engine", choices=tuple(ENGINES), default="batched",
                        help="batched: a method's items at once, through continuous batching; reference: one at a "
                             "time through ReferenceEngine")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.items < 1 or args.dev_items < 1:
        parser.error("--items and --dev-items must be at least 1")
    if args.participation_draws < 0:
        parser.error("--participation-draws must be at least 0")
    known = composing_methods()
    chosen = [m for m in args.methods.split(",") if m] or known
    unknown = [m for m in chosen if m not in known]
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}; known: {', '.join(known)}")
    var = Path(os.environ.get("MOSAIC_VAR_DIR", "var"))
    experts_dir = args.experts_dir or (Path(os.environ["MOSAIC_TRAINED_EXPERTS_DIR"]) / "real"
                                       if os.environ.get("MOSAIC_TRAINED_EXPERTS_DIR")
                                       else var / "cache" / "experts" / "real")
    if args.world == "toy" and args.experts_dir is None:
        experts_dir = var / "cache" / "toy_world"
    monolith_dir = None if args.no_monolith else (args.monolith_dir or (
        experts_dir / "experts" if args.world == "toy" else var / "cache" / "experts" / MONOLITH))

    import torch
    from tqdm import tqdm

    from composition.skills import SKILLS, heldout_sha256, mixed_heldout_items
    from composition.strategies import strategy_level
    from composition.strategies.development import dev_set_sha256
    from composition.training import configure_threads

    configure_threads()
    limit_malloc_arenas()
    torch.manual_seed(0)
    started = time.perf_counter()
    load_before = [round(x, 1) for x in os.getloadavg()]
    world = load_world(args.world, base_dir=args.base_dir, experts_dir=experts_dir, monolith_dir=monolith_dir,
                       toy_dir=experts_dir, engine=args.engine)
    engine, experts, render = world.engine, world.experts, world.render
    skills = [e.id for e in experts]
    items = mixed_heldout_items(args.items)
    max_tokens = max(SKILLS[s].max_tokens for s in skills)
    dev_set = [{"prompt": render(item.prompt), "answers": [item.answer]}
               for skill in skills for item in SKILLS[skill].train_items(args.dev_items, seed=3)]
    progress = not args.quiet
    configs = method_configs(skills, dev_set, max_tokens, render)
    reused_rows, reused_points, reused_from = reusable(args.reuse, args.world, heldout_sha256(items),
                                                       dev_set_sha256(dev_set), configs)
    rows, expert_rows, not_run, failed = [], {}, [], []
    baseline = [("base", {}, [], "base model", "base")]
    baseline += [("single", {"expert": e.id}, [e], f"expert:{e.id}", "expert") for e in experts]
    if world.monolith is not None:
        baseline.append(("single", {"expert": MONOLITH}, [world.monolith], "monolith", "monolith"))
    for name, config, members, label, kind in tqdm(baseline, desc="base, experts, monolith", disable=not progress):
        row = reused_rows.get(label) or evaluate(name, config, members, engine, items, render, max_tokens,
                                                 label=label, progress=progress, workers=world.workers)
        if kind == "expert":
            expert_rows[label] = row["correct"]
        rows.append({**row, "level": "-", "kind": kind})
    order = [m for m in configs if m in chosen] + [m for m in chosen if m not in configs]
    for name in tqdm(order, desc="methods", disable=not progress):
        if name in reused_rows:
            rows.append(reused_rows[name])
            continue
        if time.perf_counter() - started > args.budget_s:
            not_run.append(name)
            continue
        try:
            row = evaluate(name, configs.get(name, {}), experts, engine, items, render, max_tokens,
                           progress=progress, workers=world.workers)
        except Exception as error:  # reported, not hidden: the other methods still run
            failed.append(f"{name}: {type(error).__name__}: {error}")
            continue
        rows.append({**row, "level": strategy_level(name), "kind": "method", "note": METHOD_NOTES.get(name, "")})
    summarised = [summarise(row, expert_rows) for row in rows]
    methods_seconds = round(time.perf_counter() - started, 1)

    monolith_recipe_facts = None
    if world.monolith is not None:
        from composition.training import demo_recipe, monolith_recipe, toy_recipe

        recipe = monolith_recipe([toy_recipe() if world.toy else demo_recipe(s) for s in skills])
        monolith_recipe_facts = {"rank": recipe.rank, "steps": recipe.steps, "batch_size": recipe.batch_size,
                                 "training": world.monolith_facts}
    report = {
        "world": args.world, "base_model": world.base_name, "skills": skills, "items_per_skill": args.items,
        "n": len(items), "dev_items_per_skill": args.dev_items, "heldout_sha256": heldout_sha256(items),
        "dev_sha256": dev_set_sha256(dev_set),
        "configs": {m: _printable(configs.get(m, {})) for m in order},
        "rows": summarised, "not_run": not_run, "failed": failed, "budget_s": args.budget_s,
        "monolith": monolith_recipe_facts, "headline": headline(summarised),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "command": "python -m composition.compare " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load_before": load_before, "reused_from": reused_from, "engine": args.engine,
    }

    participation = None
    if args.participation_draws:
        curve_methods = [m for m in args.participation_methods.split(",") if m] or best_methods(summarised)
        subsets = participation_subsets(skills, PARTICIPATION_SIZES, args.participation_draws, args.seed)
        points, curve_failed = [], []
        full_rows = {r["method"]: r for r in summarised if r["kind"] == "method"}
        runs = [(m, s) for m in curve_methods for size in subsets for s in subsets[size]]
        for method, subset in tqdm(runs, desc="participation", disable=not progress):
            if len(subset) == len(skills) and method in full_rows:
                accuracy = full_rows[method]["accuracy"]
            elif (method, tuple(subset)) in reused_points:
                accuracy = reused_points[(method, tuple(subset))]
            else:
                members = [e for e in experts if e.id in subset]
                try:
                    row = evaluate(method, method_configs(subset, dev_set, max_tokens, render).get(method, {}),
                                   members, engine, items, render, max_tokens, label=f"{method} {'+'.join(subset)}",
                                   progress=progress, workers=world.workers)
                except Exception as error:
                    curve_failed.append(f"{method} over {'+'.join(subset)}: {type(error).__name__}: {error}")
                    continue
                accuracy = sum(row["correct"]) / len(row["correct"])
            points.append({"method": method, "size": len(subset), "experts": subset, "accuracy": accuracy})
        participation = {
            "world": args.world, "base_model": world.base_name, "methods": curve_methods,
            "sizes": sorted(subsets), "draws": args.participation_draws, "seed": args.seed, "n": len(items),
            "heldout_sha256": report["heldout_sha256"], "subsets": {str(k): v for k, v in subsets.items()},
            "points": points, "failed": curve_failed,
        }

    report["seconds"] = round(time.perf_counter() - started, 1)
    report["methods_seconds"] = methods_seconds
    report["load_after"] = [round(x, 1) for x in os.getloadavg()]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "methods.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "methods.md").write_text(render_methods_markdown(report))
    sys.stdout.write(render_methods_markdown(report))
    if participation is not None:
        reference = {r["name"]: r["accuracy"] for r in summarised if r["kind"] == "monolith"}
        best = max((r for r in summarised if r["kind"] == "expert"), key=lambda r: r["accuracy"], default=None)
        if best is not None:
            reference[f"best single expert ({best['name']})"] = best["accuracy"]
        (args.out_dir / "participation.json").write_text(json.dumps(participation, indent=2) + "\n")
        (args.out_dir / "participation.md").write_text(render_participation_markdown(participation))
        plot_participation(participation, args.out_dir / "participation.png", reference)
        sys.stdout.write("\n" + render_participation_markdown(participation))
    return 0


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Ask glibc for at most `arenas` heaps. A method's items run on up to 64 threads at once, and glibc gives
    each busy thread a heap of its own, which keeps what it freed. True when the C library took the setting."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8: M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):  # not glibc: nothing to limit
        return False


def reusable(path: Path | None, world: str, heldout: str, dev: str, configs: dict) -> tuple[dict, dict, dict | None]:
    """Rows (by name) and participation points (by method and subset) of a previous run that measured the same
    thing: the same world, held-out set and development set, and for a method the same configuration."""
    if path is None:
        return {}, {}, None
    previous = json.loads(Path(path).read_text())
    if (previous.get("world"), previous.get("heldout_sha256"), previous.get("dev_sha256")) != (world, heldout, dev):
        raise SystemExit(f"--reuse {path}: another world, held-out set or development set; nothing to reuse")
    rows = {}
    for row in previous["rows"]:
        if row["kind"] == "method" and previous["configs"].get(row["method"]) != _printable(configs.get(row["method"], {})):
            continue
        rows[row["name"]] = {key: value for key, value in row.items() if key in (
            "name", "method", "correct", "tokens", "seconds", "answering_s", "learning_s", "attribution_sums",
            "level", "kind",
            "note")} | {"reused": True}
    points = {}
    curve = Path(path).with_name("participation.json")
    if curve.is_file():
        for point in json.loads(curve.read_text())["points"]:
            points[(point["method"], tuple(point["experts"]))] = point["accuracy"]
    facts = {"path": str(path), "command": previous.get("command"), "seconds": previous.get("seconds"),
             "load_before": previous.get("load_before"), "load_after": previous.get("load_after")}
    return rows, points, facts


def _printable(config: dict) -> dict:
    """A configuration as the report shows it: long lists (development sets, router examples) by their size."""
    return {k: (f"<{len(v)} items>" if isinstance(v, list) and len(v) > 8 else v) for k, v in config.items()
            if k != "dev_set"} | ({"dev_set": f"<{len(config['dev_set'])} items>"} if "dev_set" in config else {})


if __name__ == "__main__":
    sys.exit(main())
