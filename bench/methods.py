"""Every collaboration method on the real model's demo world: `python -m bench.methods [--items 1] [--dev-items 1]
[--methods a,b] [--budget-s 1500] [--out bench/results/methods]`.

Loads the real base model (SmolLM2-135M-Instruct, ~/.cache/mosaic/models) and the demo's five trained experts
(var/cache/experts/real of the main checkout, or --experts-dir), names each expert by the skill whose example it
answers right, and asks every method the mixed held-out set (composition.skills, `--items` per skill) through
ReferenceEngine (greedy, the chat template of composition.training.chat_prompt), wrapped in MemoisingEngine so
an expert asked the same question twice answers once. Methods that learn get `--dev-items` training items per
skill as their development set (never held-out prompts). Per method: accuracy with a 95% Wilson interval, tokens
billed per answer, seconds per answer (learning included, amortised over the items, and reported apart), and the
items it solves that no single expert does. Methods run cheapest first; those that do not fit `--budget-s` are
listed as not run. No Django.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BASE = Path.home() / ".cache" / "mosaic" / "models" / "smollm2-135m-instruct"
EXPERTS_DIR = Path("var") / "cache" / "experts" / "real"  # where `make demo` trains them


def method_configs(skills: list[str], dev_set: list[dict], max_tokens: int) -> dict[str, dict]:
    """The configuration each method is compared under (cheapest first)."""
    first = skills[0]
    dev = {"dev_set": dev_set, "max_tokens": max_tokens, "stop": []}
    return {
        "embedding_router": {},
        "graph_router": {**dev, "neighbours": 3},
        "slm_mux": {"samples": 3, **dev},
        "nudging": {"nudger": first},
        "co_llm": {"assistant": first, "threshold": 0.5},
        "mentor_collab": {"mentor": first, "decision_proportion": 0.25, "patch_tokens": 4},
        "greedy_soup": dev,
        "expo": dev,
        "model_swarms": {**dev, "iterations": 1, "extra_particles": 1},
        "lorahub": {**dev, "budget": 8, "population": 4},
        "llm_blender": {"top_k": 1},
        "knowledge_cards": {"top_k": 2, "knowledge_tokens": 16},
        "structured": {"topology": "star", "rounds": 1},
        "heterogeneous_swarm": {**dev, "particles": 2, "iterations": 0},
        "mixture_of_agents": {"layers": 1},
        "multiagent_feedback": {"rounds": 1, "feedback_count": 1, "feedback_tokens": 16},
    }


def load_world(experts_dir: Path, base: Path):
    from composition.engine import GenerationRequest, MemoisingEngine, ReferenceEngine
    from composition.experts import load_expert
    from composition.skills import SKILLS
    from composition.training import chat_prompt

    directories = sorted(p for p in experts_dir.iterdir() if (p / "adapter_model.safetensors").exists())
    loaded = [load_expert(p.name, p) for p in directories]
    engine = MemoisingEngine(ReferenceEngine(str(base), loaded))
    render = lambda message: chat_prompt(engine.tokenizer, message)  # noqa: E731
    named = {}
    for expert in loaded:
        answers = engine.generate([GenerationRequest(prompt=render(skill.example_prompt), mixture={expert.id: 1.0},
                                                     max_tokens=skill.max_tokens) for skill in SKILLS.values()])
        right = [name for (name, skill), a in zip(SKILLS.items(), answers) if a.text.strip() == skill.example_answer]
        if len(right) == 1 and right[0] not in named:
            named[right[0]] = expert
    unnamed = [e for e in loaded if all(e is not v for v in named.values())]
    if len(unnamed) == 1 and len(named) == len(SKILLS) - 1:  # the last one by elimination
        named[next(s for s in SKILLS if s not in named)] = unnamed[0]
    if len(named) != len(loaded):
        raise SystemExit(f"could not name every expert by its skill (named: {sorted(named)})")
    experts = []
    for skill_name, expert in named.items():
        skill = SKILLS[skill_name]
        experts.append(type(expert)(id=skill_name, adapter=expert.adapter, metadata={
            "description": skill.description, "examples": [render(skill.example_prompt)], "base_model": str(base)}))
    experts.sort(key=lambda e: list(SKILLS).index(e.id))
    engine = MemoisingEngine(ReferenceEngine(str(base), experts))
    return engine, experts, render


def evaluate(name: str, config: dict, experts, engine, items, render, max_tokens: int) -> dict:
    from composition.skills import is_correct
    from composition.strategies import build_strategy
    from composition.strategies.base import CompletionRequest

    started = time.perf_counter()
    strategy = build_strategy(name, config, experts)
    strategy.prepare(engine)
    strategy._prepared_for = engine
    learning = time.perf_counter() - started
    correct, tokens, seconds = [], [], []
    for item in items:
        began = time.perf_counter()
        result = strategy.run(CompletionRequest(prompt=render(item.prompt), max_tokens=max_tokens, seed=0), engine)
        seconds.append(time.perf_counter() - began)
        correct.append(bool(is_correct(item, result.texts[0])))
        tokens.append(result.completion_tokens)
    return {"name": name, "correct": correct, "tokens": tokens, "seconds": seconds, "learning_s": learning}


def summarise(row: dict, expert_rows: dict[str, list[bool]]) -> dict:
    from composition.evaluation import score

    measured = score([float(c) for c in row["correct"]])
    n = len(row["correct"])
    solved_alone = [any(rows[i] for rows in expert_rows.values()) for i in range(n)]
    return {
        **row,
        "accuracy": measured.mean, "low": measured.low, "high": measured.high, "n": n,
        "tokens_per_answer": sum(row["tokens"]) / n,
        "seconds_per_answer": (sum(row["seconds"]) + row["learning_s"]) / n,
        "solved_by_no_single_expert": sum(1 for c, alone in zip(row["correct"], solved_alone) if c and not alone),
    }


def render_markdown(report: dict) -> str:
    lines = [
        f"# Every collaboration method on the demo world ({report['base_model']})", "",
        f"`{report['command']}`: {report['seconds']} s on {report['machine']}, ReferenceEngine (float32, CPU), "
        f"greedy. Mixed held-out set: {report['n']} items ({report['items_per_skill']} per skill: "
        f"{', '.join(report['skills'])}), sha256 `{report['heldout_sha256'][:16]}`; development set "
        f"{report['dev_items_per_skill']} training item(s) per skill, sha256 `{report['dev_sha256'][:16]}`.", "",
        "Accuracy is the suite's is_correct with a 95% Wilson interval. Seconds per answer include the method's "
        "learning (shown apart), amortised over the items; the experts' own answers are memoised, so methods "
        "that reuse them (routers, blender candidates) look cheaper than they would alone.", "",
        "| method | level | accuracy [95% CI] | tokens / answer | s / answer | learning s | solved by no single expert |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(f"| {row['name']} | {row['level']} | {row['accuracy']:.2f} [{row['low']:.2f}, {row['high']:.2f}] | "
                     f"{row['tokens_per_answer']:.1f} | {row['seconds_per_answer']:.1f} | {row['learning_s']:.1f} | "
                     f"{row.get('solved_by_no_single_expert', '')} |")
    if report["not_run"]:
        lines += ["", f"Not run within the time budget ({report['budget_s']} s): {', '.join(report['not_run'])}."]
    if report.get("failed"):
        lines += ["", "Failed: " + "; ".join(report["failed"])]
    if report.get("notes"):
        lines += ["", *report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1, help="held-out items per skill")
    parser.add_argument("--dev-items", type=int, default=1, help="training items per skill in the development set")
    parser.add_argument("--methods", default="", help="comma-separated (default: every method of method_configs)")
    parser.add_argument("--budget-s", type=float, default=1500, help="start no method after this many seconds")
    parser.add_argument("--experts-dir", type=Path, default=EXPERTS_DIR)
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument("--out", type=Path, default=RESULTS / "methods")
    args = parser.parse_args(argv)
    if args.items < 1 or args.dev_items < 1:
        parser.error("--items and --dev-items must be at least 1")
    import torch
    from mosaic.progress import progress_to

    from composition.skills import SKILLS, heldout_sha256, mixed_heldout_items
    from composition.strategies import strategy_level
    from composition.strategies.development import dev_set_sha256

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    started = time.perf_counter()
    engine, experts, render = load_world(args.experts_dir, args.base)
    skills = [e.id for e in experts]
    items = mixed_heldout_items(args.items)
    max_tokens = max(SKILLS[s].max_tokens for s in skills)
    dev_set = [{"prompt": render(item.prompt), "answers": [item.answer]}
               for skill in skills for item in SKILLS[skill].train_items(args.dev_items, seed=3)]
    configs = method_configs(skills, dev_set, max_tokens)
    chosen = [m for m in args.methods.split(",") if m] or list(configs)
    rows, expert_rows, not_run, failed = [], {}, [], []
    baseline = [("base", {}, [])] + [("single", {"expert": e.id}, [e]) for e in experts]
    progress = progress_to(sys.stderr)
    for name, config, members in progress.track(baseline, "base and experts"):
        row = evaluate(name, config, members, engine, items, render, max_tokens)
        row["name"] = "base model" if name == "base" else f"expert:{config['expert']}"
        if name == "single":
            expert_rows[config["expert"]] = row["correct"]
        rows.append({**row, "level": "-"})
    for name in progress.track(chosen, "methods"):
        if time.perf_counter() - started > args.budget_s:
            not_run.append(name)
            continue
        try:
            row = evaluate(name, configs[name], experts, engine, items, render, max_tokens)
        except Exception as error:  # reported, not hidden: the other methods still run
            failed.append(f"{name}: {type(error).__name__}: {error}")
            continue
        rows.append({**row, "level": strategy_level(name)})
    report = {
        "base_model": args.base.name, "skills": skills, "items_per_skill": args.items, "n": len(items),
        "dev_items_per_skill": args.dev_items, "heldout_sha256": heldout_sha256(items),
        "dev_sha256": dev_set_sha256(dev_set), "configs": {m: {k: v for k, v in configs[m].items() if k != "dev_set"}
                                                         for m in chosen},
        "rows": [summarise(row, expert_rows) for row in rows], "not_run": not_run, "failed": failed, "budget_s": args.budget_s,
        "seconds": round(time.perf_counter() - started, 1), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "command": "python -m bench.methods " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render_markdown(report))
    sys.stdout.write(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
