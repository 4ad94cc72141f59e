"""The demo world compared: `python -m bench.real_world [--items 20] [--seed 1] [--systems a,b] [--out PATH]`.

Run after `make demo` (python manage.py seed_demo), against the database the settings name. For the demo's
systems (every active public system, or --systems) and the experts in them, it asks the same held-out items
of the evaluation suite (settings.EVALUATION_SUITE) of:
  - the base model alone,
  - each expert alone (the "single" strategy),
  - each system,
each item one chat request through the serving path at temperature 0 (marketplace.services.evaluations), and
scores them with the suite's is_correct. The mixed set is the held-out items of every expert's skill; the
general questions are reported apart. For each system it counts the mixed items it solves that no expert alone
solves. Writes a markdown table and JSON (<out>.md, <out>.json; bench/results/real_world by default). Nothing is
written to the database or the ledger.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
GENERAL = "general"


@dataclass
class Row:
    name: str
    kind: str  # "base" | "expert" | "system"
    correct: list[bool]  # one per item, in the order of the items


def _score(values: list[bool]) -> dict:
    from composition.evaluation import score

    measured = score([float(value) for value in values])
    return {"accuracy": measured.mean, "low": measured.low, "high": measured.high, "n": measured.n}


def comparison_table(*, rows: list[Row], skills: list[str]) -> dict:
    """Per row: accuracy on the mixed set (every skill's items), per skill and on the general questions, each
    with a 95% Wilson interval; per system: the mixed items it solves that no expert alone solves."""
    from composition.evaluation import solved_where_every_expert_fails

    mixed = [index for index, skill in enumerate(skills) if skill != GENERAL]
    general = [index for index, skill in enumerate(skills) if skill == GENERAL]
    skill_names = list(dict.fromkeys(skills[index] for index in mixed))
    experts = {row.name: [float(row.correct[i]) for i in mixed] for row in rows if row.kind == "expert"}
    table = {"skills": skill_names, "mixed_n": len(mixed), "general_n": len(general), "rows": []}
    for row in rows:
        entry = {
            "name": row.name,
            "kind": row.kind,
            "mixed": _score([row.correct[i] for i in mixed]),
            "per_skill": {skill: _score([row.correct[i] for i in mixed if skills[i] == skill])
                          for skill in skill_names},
            "general": _score([row.correct[i] for i in general]) if general else None,
        }
        if row.kind == "system":
            entry["solved_beyond_every_expert"] = solved_where_every_expert_fails(
                [float(row.correct[i]) for i in mixed], experts)
        table["rows"].append(entry)
    return table


def _cell(score: dict | None) -> str:
    if score is None or score["n"] == 0:
        return "-"
    return f"{score['accuracy']:.2f} [{score['low']:.2f}, {score['high']:.2f}]"


def render_markdown(table: dict, *, header: str = "") -> str:
    skills = table["skills"]
    lines = [header] if header else []
    lines += [
        f"Mixed set: {table['mixed_n']} held-out items ({', '.join(skills)}); general questions: {table['general_n']}. "
        "Accuracy (exact answers, the suite's is_correct) with 95% Wilson intervals; 'beyond experts' counts the "
        "mixed items a system solves that no expert alone solves.",
        "",
        "| | kind | mixed | " + " | ".join(skills) + " | general | beyond experts |",
        "|---|---|---|" + "---|" * len(skills) + "---|---|",
    ]
    for row in table["rows"]:
        cells = [row["name"], row["kind"], _cell(row["mixed"]), *(_cell(row["per_skill"][s]) for s in skills),
                 _cell(row["general"]), str(row.get("solved_beyond_every_expert", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def measure(*, systems: list, items_per_skill: int, seed: int, concurrency: int) -> tuple[dict, list[Row]]:
    """Ask every row the held-out items through the serving path (Django must be set up)."""
    from marketplace import policy
    from marketplace.services.evaluations import answer_items, evaluation_suite, held_out_sets

    suite = evaluation_suite()
    plans = {}
    for system in systems:
        plan = policy.serving_members(system=system)
        if plan is None:
            raise SystemExit(f"system {system.slug!r} cannot serve now (suspended or its experts were revoked)")
        plans[system.slug] = plan
    members = list({m.expert_id: m for plan in plans.values() for m in plan.members}.values())
    sets = held_out_sets(members=members, items_per_skill=items_per_skill, seed=seed, suite=suite)
    items = [item for held_out in sets for item in held_out.items]

    def correct(answers: list[str]) -> list[bool]:
        return [bool(suite.is_correct(item, answer)) for item, answer in zip(items, answers)]

    anchor = systems[0]
    rows = [Row("base model", "base", correct(answer_items(system=anchor, plan=None, sets=sets,
                                                            concurrency=concurrency)))]
    for member in members:
        alone = policy.ServingPlan(members=[member], strategy_config={})
        rows.append(Row(member.expert.slug, "expert", correct(answer_items(
            system=anchor, plan=alone, sets=sets, concurrency=concurrency, strategy="single"))))
    for system in systems:
        rows.append(Row(system.slug, "system", correct(answer_items(
            system=system, plan=plans[system.slug], sets=sets, concurrency=concurrency))))
    table = comparison_table(rows=rows, skills=[item.skill for item in items])
    table["sets"] = [{"skill": s.skill, "sha256": s.sha256, "n": len(s.items)} for s in sets]
    return table, rows


def chosen_systems(slugs: list[str] | None) -> list:
    from marketplace.models import ComposedSystem

    if slugs:
        found = {s.slug: s for s in ComposedSystem.objects.filter(slug__in=slugs)}
        missing = [slug for slug in slugs if slug not in found]
        if missing:
            raise SystemExit(f"no system {', '.join(missing)}")
        systems = [found[slug] for slug in slugs]
    else:
        systems = list(ComposedSystem.objects.filter(status=ComposedSystem.Status.ACTIVE,
                                                     owner_organization__isnull=True).order_by("slug"))
    if not systems:
        raise SystemExit("no active public system: run `make demo` (python manage.py seed_demo) first")
    bases = {s.base_model_id for s in systems}
    if len(bases) > 1:
        raise SystemExit("the systems adapt different base models: choose those of one with --systems")
    return systems


def run(*, slugs: list[str] | None, items_per_skill: int, seed: int, concurrency: int, out: Path) -> dict:
    systems = chosen_systems(slugs)
    started = time.perf_counter()
    table, _ = measure(systems=systems, items_per_skill=items_per_skill, seed=seed, concurrency=concurrency)
    table.update(
        base_model=systems[0].base_model.name, items_per_skill=items_per_skill, seed=seed,
        seconds=round(time.perf_counter() - started, 1), machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
    )
    header = (f"# The demo world compared ({table['base_model']})\n\n`python -m bench.real_world --items "
              f"{items_per_skill} --seed {seed}`, {table['seconds']} s on {table['machine']}.\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(render_markdown(table, header=header))
    out.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20, help="held-out items per skill")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--systems", default="", help="comma-separated slugs (default: every active public system)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (the worker batches them)")
    parser.add_argument("--out", type=Path, default=RESULTS / "real_world")
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be at least 1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mosaic.settings")
    import django

    django.setup()
    table = run(slugs=[s for s in args.systems.split(",") if s] or None, items_per_skill=args.items, seed=args.seed,
                concurrency=args.concurrency, out=args.out)
    sys.stdout.write(render_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
