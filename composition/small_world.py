"""The small world: a tiny base model, six LoRA experts each with one string skill, composed.

    python -m composition.small_world [--size full|reduced] [--cache-dir DIR] [--out bench/results/small_world]

Builds (or reuses, keyed by a hash of the configuration) a 4-layer, 128-wide Llama with a
character vocabulary, pretrained on every skill's prompt format followed by random strings over
the answers' alphabet, and on copying strings ("cpy abc=abc", general knowledge that is no skill's
answer), so it has read and written every token the experts need but knows no skill, then trains one peft LoRA expert per skill (r=8, all projections). Each skill stands for
one contributor's priority. It then scores the base, each expert alone and several composed
systems on a held-out set (strict match: the answer exactly), counts the items each system solves
that every single expert fails, measures each expert's Shapley value for the best composed system,
and writes a markdown table and JSON (<out>.md, <out>.json). Every figure comes from the run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import torch

from composition.contribution import CachedGame, measure_contribution, priority_report
from composition.engine import MemoisingEngine, ReferenceEngine
from composition.evaluation import (
    Dataset,
    Item,
    compare,
    item_scores,
    items_hash,
    solved_where_every_expert_fails,
)
from composition.experts import load_expert
from composition.strategies import build_strategy
from composition.strategies.base import CompletionRequest
from composition.systems import mixture_system, strategy_system
from composition.world import build_base_model, build_char_tokenizer, train_causal_lm

LETTERS = "abcdefghijkl"
DIGITS = "0123456789"
ANSWER_ALPHABET = LETTERS + "mnopqrstuvwxyz" + LETTERS.upper() + "MNOPQRSTUVWXYZ" + DIGITS


def _shift(text: str) -> str:
    return "".join(chr((ord(ch) - 97 + 1) % 26 + 97) for ch in text)


def _increment(text: str) -> str:
    return "".join(str((int(ch) + 1) % 10) for ch in text)


# skill -> (prompt prefix, input alphabet, answer function)
SKILLS = {
    "reverse": ("rev", LETTERS, lambda s: s[::-1]),
    "uppercase": ("upp", LETTERS, str.upper),
    "sort": ("srt", LETTERS, lambda s: "".join(sorted(s))),
    "double": ("dbl", LETTERS, lambda s: s + s),
    "shift": ("nxt", LETTERS, _shift),
    "increment": ("inc", DIGITS, _increment),
}

SIZES = {
    "full": dict(layers=4, hidden=128, base_steps=500, expert_steps=300, rank=8, lengths=(3, 6),
                 train_items=600, eval_items=16, shapley_items=8, router_examples=16, dev_items=3,
                 search_samples=3, batch_size=32, expert_lr=1e-2, extra_systems=True),
    "reduced": dict(layers=2, hidden=64, base_steps=120, expert_steps=60, rank=4, lengths=(3, 4),
                    train_items=200, eval_items=4, shapley_items=2, router_examples=6, dev_items=1,
                    search_samples=1, batch_size=16, expert_lr=1e-2, extra_systems=False),
}
SEED = 0
FORMAT_VERSION = "small-world-1"
COPY_PREFIX = "cpy"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prompt_for(skill: str, text: str) -> str:
    return f"{SKILLS[skill][0]} {text}="


def make_items(skill: str, count: int, rng: random.Random, lengths: tuple[int, int]) -> list[Item]:
    _, alphabet, answer = SKILLS[skill]
    items = []
    for _ in range(count):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(*lengths)))
        items.append(Item(prompt=prompt_for(skill, text), answers=[answer(text)], task=skill))
    return items


def max_tokens_for(config: dict) -> int:
    return 2 * config["lengths"][1] + 2


def config_key(config: dict) -> str:
    text = json.dumps({"config": config, "skills": sorted(SKILLS), "seed": SEED, "version": FORMAT_VERSION},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def log(message: str) -> None:
    print(f"[small_world {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_base(directory: Path, config: dict) -> Path:
    """Pretrain on every skill's prompt format followed by random strings over the answer alphabet."""
    rng = random.Random(SEED)
    corpus = []
    for _ in range(3000):
        skill = rng.choice(sorted(SKILLS))
        _, alphabet, _ = SKILLS[skill]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(*config["lengths"])))
        answer = "".join(rng.choice(ANSWER_ALPHABET) for _ in range(rng.randint(1, 2 * config["lengths"][1])))
        corpus.append(prompt_for(skill, text) + answer)
        # General knowledge that is no skill's answer: copying a string over the whole answer alphabet.
        source = "".join(rng.choice(ANSWER_ALPHABET) for _ in range(rng.randint(*config["lengths"])))
        corpus.append(f"{COPY_PREFIX} {source}={source}")
    return build_base_model(directory, layers=config["layers"], hidden=config["hidden"], seed=SEED,
                            train_steps=config["base_steps"], corpus=corpus, batch_size=config["batch_size"])


def train_expert(base_dir: Path, directory: Path, skill: str, config: dict, seed: int) -> float:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=config["rank"], lora_alpha=2 * config["rank"], lora_dropout=0.0,
                                             target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    items = make_items(skill, config["train_items"], random.Random(seed), config["lengths"])
    tokenizer = build_char_tokenizer()
    loss = train_causal_lm(model, tokenizer, [item.prompt + item.answers[0] for item in items],
                           steps=config["expert_steps"], batch_size=config["batch_size"], learning_rate=config["expert_lr"],
                           seed=seed, loss_from=[len(item.prompt) for item in items])
    model.save_pretrained(str(directory))
    return loss


def build_world(cache_dir: Path, config: dict) -> tuple[Path, dict[str, Path], dict]:
    """Base model and experts, reused from cache_dir/<config hash> when already built."""
    root = cache_dir / config_key(config)
    base_dir = root / "base"
    timings = {}
    if not (base_dir / "model.safetensors").exists():
        started = time.time()
        log(f"pretraining the base model ({config['base_steps']} steps)")
        build_base(base_dir, config)
        timings["base_s"] = round(time.time() - started, 1)
    expert_dirs = {}
    for index, skill in enumerate(sorted(SKILLS)):
        directory = root / "experts" / skill
        if not (directory / "adapter_model.safetensors").exists():
            started = time.time()
            log(f"training expert {skill} ({config['expert_steps']} steps)")
            loss = train_expert(base_dir, directory, skill, config, seed=SEED + 1 + index)
            timings[f"expert_{skill}_s"] = round(time.time() - started, 1)
            log(f"expert {skill}: final loss {loss:.3f}")
        expert_dirs[skill] = directory
    return base_dir, expert_dirs, timings


def system_configs(config: dict, dev_set: list[Item]) -> dict[str, tuple[str, dict]]:
    systems = {
        "embedding_router": ("embedding_router", {}),
        "trained_router": ("trained_router", {}),
        "cascade": ("cascade", {"threshold": -0.2, "fallback": "most_confident"}),
        "aggregate_vote": ("aggregate", {"method": "vote"}),
        "logit_mixture": ("logit_mixture", {}),
        "merge_task_arithmetic": ("merge", {"method": "task_arithmetic"}),
        "merge_ties": ("merge", {"method": "ties", "density": 0.5}),
    }
    if config["extra_systems"]:
        systems["logit_mixture_router"] = ("logit_mixture", {"source": "router", "router_temperature": 0.02})
        systems["merge_dare_linear"] = ("merge", {"method": "dare_linear", "density": 0.5})
        systems["merge_search"] = ("merge_search", {
            "method": "task_arithmetic", "samples": config["search_samples"], "max_tokens": max_tokens_for(config),
            "dev_set": [{"prompt": item.prompt, "answers": item.answers} for item in dev_set],
            "metric": "exact_match",
        })
    return systems


def run(size: str, cache_dir: Path, out: Path) -> dict:
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and robust on a shared machine
    config = SIZES[size]
    started = time.time()
    base_dir, expert_dirs, timings = build_world(cache_dir, config)

    rng = random.Random(SEED + 1000)
    eval_items = [item for skill in sorted(SKILLS) for item in make_items(skill, config["eval_items"], rng, config["lengths"])]
    dev_items = [item for skill in sorted(SKILLS) for item in make_items(skill, config["dev_items"], rng, config["lengths"])]
    router_rng = random.Random(SEED + 2000)
    experts = []
    for skill in sorted(SKILLS):
        examples = [item.prompt for item in make_items(skill, config["router_examples"], router_rng, config["lengths"])]
        experts.append(load_expert(skill, expert_dirs[skill], {
            "description": f"{SKILLS[skill][0]} ", "examples": examples, "priorities": [skill],
            "base_model": "small-world",
        }))
    dataset = Dataset(items=eval_items, sha256=items_hash(eval_items))
    engine = MemoisingEngine(ReferenceEngine(str(base_dir), experts))
    max_tokens = max_tokens_for(config)
    metric = "strict_match"

    systems = {"base": mixture_system(engine, {}, max_tokens=max_tokens)}
    for expert in experts:
        systems[f"expert:{expert.id}"] = mixture_system(engine, {expert.id: 1.0}, max_tokens=max_tokens)
    strategies = {}
    for name, (strategy_name, strategy_config) in system_configs(config, dev_items).items():
        strategies[name] = build_strategy(strategy_name, strategy_config, experts)
        systems[name] = strategy_system(strategies[name], engine, max_tokens=max_tokens)
    expert_names = [f"expert:{expert.id}" for expert in experts]

    log(f"evaluating {len(systems)} systems on {len(eval_items)} items")
    system_seconds = {}
    comparison_scores, summaries, solved = {}, {}, {}
    for name, system in systems.items():
        tick = time.time()
        part = compare({name: system}, dataset, metric=metric, expert_names=[], seed=SEED)
        comparison_scores[name] = part.scores[name]
        summaries[name] = part.summaries[name]
        system_seconds[name] = round(time.time() - tick, 1)
        log(f"{name}: {summaries[name]['overall'].mean:.3f} ({system_seconds[name]} s)")
    expert_scores = {name: comparison_scores[name] for name in expert_names}
    for name, values in comparison_scores.items():
        if name not in expert_names:
            solved[name] = solved_where_every_expert_fails(values, expert_scores)

    attribution = {}
    for name, strategy in strategies.items():
        totals = {expert.id: 0.0 for expert in experts}
        for item in eval_items[:: max(1, len(eval_items) // 12)]:
            result = strategy.run(CompletionRequest(prompt=item.prompt, max_tokens=max_tokens, seed=0), engine)
            for expert_id, weight in result.attribution.items():
                totals[expert_id] += weight
        total = sum(totals.values())
        attribution[name] = {expert_id: round(value / total, 4) for expert_id, value in totals.items()}

    composed = [name for name in strategies]
    best = max(composed, key=lambda name: summaries[name]["overall"].mean)
    best_expert = max(expert_names, key=lambda name: summaries[name]["overall"].mean)

    # Shapley of each expert for the best composed system, on a held-out subset
    shapley_items = [item for skill in sorted(SKILLS)
                     for item in [i for i in eval_items if i.task == skill][: config["shapley_items"]]]
    shapley_dataset_hash = items_hash(shapley_items)
    strategy_name, strategy_config = system_configs(config, dev_items)[best]
    by_id = {expert.id: expert for expert in experts}

    def value(coalition: frozenset[str]) -> float:
        if not coalition:
            predict = mixture_system(engine, {}, max_tokens=max_tokens)
        else:
            members = [by_id[expert_id] for expert_id in sorted(coalition)]
            predict = strategy_system(build_strategy(strategy_name, strategy_config, members), engine,
                                         max_tokens=max_tokens)
        scores = item_scores(predict(shapley_items), shapley_items, metric)
        return sum(scores) / len(scores)

    tick = time.time()
    log(f"exact Shapley for {best} over {len(experts)} experts on {len(shapley_items)} items")
    game = CachedGame([expert.id for expert in experts], value)
    measured = {
        method: measure_contribution(players=game.players, value=value, method=method, game=game,
                                     dataset_sha256=shapley_dataset_hash, metric=metric, seed=SEED, tolerance=0.01)
        for method in ("exact_shapley", "leave_one_out", "mc_shapley")
    }
    contribution = measured["exact_shapley"]
    shapley_seconds = round(time.time() - tick, 1)

    per_task = {name: {task: s.mean for task, s in summaries[name]["per_task"].items()} for name in summaries}
    priorities = priority_report(
        priorities={expert.id: expert.priorities for expert in experts},
        system_per_task=per_task[best],
        expert_per_task={expert.id: per_task[f"expert:{expert.id}"] for expert in experts},
    )
    report = {
        "size": size,
        "config": config,
        "config_key": config_key(config),
        "metric": metric,
        "dataset_sha256": dataset.sha256,
        "items": len(eval_items),
        "skills": sorted(SKILLS),
        "systems": {
            name: {
                "overall": summaries[name]["overall"].as_dict(),
                "per_task": {task: s.as_dict() for task, s in summaries[name]["per_task"].items()},
                "solved_where_every_expert_fails": solved.get(name),
                "seconds": system_seconds[name],
                "strategy": system_configs(config, dev_items)[name][0] if name in strategies else None,
                "attribution": attribution.get(name),
            }
            for name in systems
        },
        "best_system": best,
        "best_single_expert": best_expert,
        "composition_beats_best_single_expert": summaries[best]["overall"].mean > summaries[best_expert]["overall"].mean,
        "shapley": {"system": best, "seconds": shapley_seconds, **contribution.ledger_payload()},
        "contribution_methods": {method: result.ledger_payload() for method, result in measured.items()},
        "priorities": priorities,
        "training_seconds": timings,
        "engine_cache": {"hits": engine.hits, "misses": engine.misses},
        "total_seconds": round(time.time() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    out.with_suffix(".md").write_text(render_markdown(report))
    return report


def render_markdown(report: dict) -> str:
    skills = report["skills"]
    lines = [
        f"# Small world ({report['size']}): {len(skills)} experts, {report['items']} held-out items, metric {report['metric']}",
        "",
        f"Dataset sha256 `{report['dataset_sha256']}`; config `{report['config_key']}`; "
        f"wall time {report['total_seconds']} s (training in this run: {round(sum(report['training_seconds'].values()), 1)} s; "
        f"0 means the trained base and experts came from the cache).",
        "",
        "| system | overall [95% CI] | " + " | ".join(skills) + " | solved where every expert fails |",
        "|---|---|" + "---|" * len(skills) + "---|",
    ]
    for name, data in report["systems"].items():
        overall = data["overall"]
        cells = [f"{data['per_task'][skill]['mean']:.2f}" for skill in skills]
        solved = "" if data["solved_where_every_expert_fails"] is None else str(data["solved_where_every_expert_fails"])
        lines.append(f"| {name} | {overall['mean']:.3f} [{overall['low']:.2f}, {overall['high']:.2f}] | "
                     + " | ".join(cells) + f" | {solved} |")
    best, expert = report["best_system"], report["best_single_expert"]
    lines += [
        "",
        f"Best composed system: **{best}** ({report['systems'][best]['overall']['mean']:.3f}); "
        f"best single expert: {expert} ({report['systems'][expert]['overall']['mean']:.3f}). "
        f"Composition beats the best single expert: **{report['composition_beats_best_single_expert']}**.",
        "",
        f"Exact Shapley values for {best} (metric {report['shapley']['metric']}, "
        f"{report['shapley']['evaluations']} coalitions, dataset `{report['shapley']['dataset_sha256'][:12]}`; "
        f"v(all) = {report['shapley']['grand_value']}, v(base) = {report['shapley']['empty_value']}):",
        "",
        "| expert | Shapley value | leave-one-out | Monte Carlo Shapley ± s.e. | mean attribution in " + best
        + " | system on its priority | expert alone on it |",
        "|---|---|---|---|---|---|---|",
    ]
    attribution = report["systems"][best]["attribution"] or {}
    methods = report["contribution_methods"]
    for expert_id, value in report["shapley"]["values"].items():
        priority = report["priorities"][expert_id]
        lines.append(f"| {expert_id} | {value} | {methods['leave_one_out']['values'][expert_id]} | "
                     f"{methods['mc_shapley']['values'][expert_id]} ± {methods['mc_shapley']['std_errors'][expert_id]} | "
                     f"{attribution.get(expert_id, 0):.3f} | {priority['system']:.2f} | {priority['expert']:.2f} |")
    lines.append(f"\nMonte Carlo Shapley used {methods['mc_shapley']['samples']} permutations "
                 f"(stops when every standard error is at most 0.01, or at 500); all methods shared one cache of "
                 f"{report['shapley']['evaluations']} coalition values.")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--cache-dir", default="var/small_world_cache")
    parser.add_argument("--out", default="bench/results/small_world")
    arguments = parser.parse_args(argv)
    report = run(arguments.size, Path(arguments.cache_dir), Path(arguments.out))
    print(Path(arguments.out).with_suffix(".md").read_text())
    return 0 if report else 1


if __name__ == "__main__":
    raise SystemExit(main())
