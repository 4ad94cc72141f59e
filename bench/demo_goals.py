"""The demo's goals on the real base model, measured through Mosaic's engine (no web, no database).

    python -m bench.demo_goals [--per-skill 20] [--systems router,mixture,cascade,merge] [--out PATH]

Trains (or finds in the recipe cache) the five demo experts exactly as `seed_demo` does, then answers the
held-out items greedily with the base model's chat template: the base model and each expert on every skill,
and the demo's systems (trained router, the mixture with the router's weights, cascade, merge) on the mixed
set and on the general questions. Writes <out>.md and <out>.json; every figure comes from the run.

Goals (issue 10): each expert >= 0.8 exact match on its own skill where the base is <= 0.2; the router >= 0.75
on the mixed set, well above the best single expert; the general questions still answered right by the router.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from composition.evaluation import wilson_interval

DEFAULT_CACHE = Path("var") / "cache" / "experts" / "real"


def log(message: str) -> None:
    print(f"[demo_goals {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-skill", type=int, default=20, help="held-out items per skill")
    parser.add_argument("--models-dir", default=os.environ.get("BASE_MODEL_DIR", "var/base_models"))
    parser.add_argument("--cache-dir", default=os.environ.get("MOSAIC_TRAINED_EXPERTS_DIR") and
                        str(Path(os.environ["MOSAIC_TRAINED_EXPERTS_DIR"]) / "real") or str(DEFAULT_CACHE))
    parser.add_argument("--systems", default="router,mixture,cascade,merge",
                        help="comma-separated systems to measure (router, mixture, cascade, merge)")
    parser.add_argument("--out", default="bench/results/demo_goals")
    args = parser.parse_args(argv)

    from composition.engine import GenerationRequest
    from composition.experts import load_expert
    from composition.skills import (
        GENERAL,
        GENERAL_MAX_TOKENS,
        SKILLS,
        demo_strategies,
        heldout_sha256,
        is_correct,
        mixed_heldout_items,
        router_examples,
    )
    from composition.strategies import build_strategy
    from composition.strategies.base import CompletionRequest
    from composition.training import chat_prompt, configure_threads, demo_recipe, demo_training_pairs, ensure_adapter
    from mosaic.progress import progress_to
    from gpu_workers.engine import MosaicEngine
    from gpu_workers.model_import import ensure_default_base_model

    started = time.monotonic()
    load_before = os.getloadavg()
    base_dir = ensure_default_base_model(args.models_dir)
    training = {}
    experts = []
    for skill in SKILLS:
        began = time.monotonic()
        directory, facts = ensure_adapter(args.cache_dir, base_dir, demo_recipe(skill), demo_training_pairs(skill),
                                          description=skill, progress=progress_to(sys.stderr))
        training[skill] = {"seconds": round(time.monotonic() - began, 1), "cached": facts is None,
                           "adapter": directory.name, **(facts or {})}
        experts.append(load_expert(skill, directory))
    threads = configure_threads()
    engine = MosaicEngine(base_dir)
    for expert in experts:
        engine.register_expert(expert)
    tokenizer = engine.tokenizer

    def max_tokens(item) -> int:
        return SKILLS[item.skill].max_tokens if item.skill in SKILLS else GENERAL_MAX_TOKENS

    def alone(mixture: dict, items) -> list[bool]:
        requests = [GenerationRequest(prompt=chat_prompt(tokenizer, item.prompt), mixture=mixture,
                                      max_tokens=max_tokens(item)) for item in items]
        return [is_correct(item, g.text) for item, g in zip(items, engine.generate(requests))]

    def through(strategy, items) -> list[bool]:
        results = []
        for item in items:
            request = CompletionRequest(prompt=chat_prompt(tokenizer, item.prompt), max_tokens=max_tokens(item))
            results.append(is_correct(item, strategy.run(request, engine).texts[0]))
        return results

    mixed = mixed_heldout_items(args.per_skill)
    rows: dict[str, dict] = {}

    def record(name: str, correct: dict[str, list[bool]], seconds: float) -> None:
        row = {}
        for part, values in correct.items():
            low, high = wilson_interval(sum(values), len(values))
            row[part] = {"right": sum(values), "n": len(values), "score": sum(values) / len(values),
                         "interval": [round(low, 3), round(high, 3)]}
        rows[name] = {**row, "seconds": round(seconds, 1)}
        log(f"{name}: " + ", ".join(f"{k} {v['right']}/{v['n']}" for k, v in row.items()))

    def by_skill(values: list[bool], items) -> dict[str, list[bool]]:
        parts = {skill: [v for v, i in zip(values, items) if i.skill == skill] for skill in SKILLS}
        return {**parts, "mixed": values}

    for name, mixture in [("base", {}), *[(f"expert:{skill}", {skill: 1.0}) for skill in SKILLS]]:
        began = time.monotonic()
        values = alone(mixture, mixed)
        record(name, {**by_skill(values, mixed), "general": alone(mixture, GENERAL)}, time.monotonic() - began)

    examples = router_examples({skill: skill for skill in SKILLS}, lambda text: chat_prompt(tokenizer, text))
    systems = demo_strategies({skill: skill for skill in SKILLS}, examples)
    for name, (strategy_name, config) in systems.items():
        if name not in args.systems.split(","):
            continue
        began = time.monotonic()
        strategy = build_strategy(strategy_name, config, experts)
        values = through(strategy, mixed)
        record(name, {**by_skill(values, mixed), "general": through(strategy, GENERAL)}, time.monotonic() - began)

    report = {
        "base_model": str(base_dir),
        "per_skill": args.per_skill,
        "mixed_sha256": heldout_sha256(mixed),
        "general_sha256": heldout_sha256(GENERAL),
        "training": training,
        "rows": rows,
        "threads": threads,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.monotonic() - started, 1),
    }
    write(report, Path(args.out), list(SKILLS))
    return report


def write(report: dict, out: Path, skills: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    columns = [*skills, "mixed", "general"]
    lines = [
        "# Demo goals on SmolLM2-135M-Instruct (held-out items, greedy, through Mosaic's engine)",
        "",
        f"`python -m bench.demo_goals --per-skill {report['per_skill']}`: {report['per_skill']} held-out items per "
        f"skill (mixed set sha256 `{report['mixed_sha256'][:16]}…`), {report['rows']['base']['general']['n']}"
        f" general questions; exact match after trimming (general: the answer contained). 95% Wilson intervals.",
        "",
        "| | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, row in report["rows"].items():
        cells = [f"{row[c]['right']}/{row[c]['n']} ({row[c]['interval'][0]:.2f}–{row[c]['interval'][1]:.2f})"
                 for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Training (per expert; `cached` means the recipe cache held it):", ""]
    for skill, facts in report["training"].items():
        if facts["cached"]:
            lines.append(f"- {skill}: from the cache ({facts['adapter']})")
        else:
            lines.append(f"- {skill}: trained in {facts['seconds']} s, final loss {facts['final_loss']}, "
                         f"{facts['threads']} thread(s)")
    lines += ["", f"Load average before {report['load_average_before']}, after {report['load_average_after']} "
              f"(2 shared cores); {report['threads']} torch thread(s); whole run {report['seconds']} s.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
