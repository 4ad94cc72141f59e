"""System evaluation (writes): run a system's held-out sets through the serving path, write its quality and
each expert's measured contribution.

The held-out sets come from the evaluation suite (settings.EVALUATION_SUITE, composition.skills by default: a
module with SKILLS, GENERAL, is_correct and heldout_sha256). Each expert names its skill with a tag
`skill:<name>`; the system is evaluated on the held-out items of its experts' skills and on the suite's
general questions. Every item is one chat request built by services.inference.build_message and run by the
same gpu_workers task as the API, at temperature 0, and scored by the suite's is_correct.

A coalition of experts is the system restricted to them (policy.restricted_plan); the empty coalition is the
base model alone (the "base" strategy), and a coalition the strategy cannot run on answers as the base model
does. composition.coalitions turns the coalitions' answers into the accuracy (95% Wilson intervals) and each
expert's Shapley value (95% bootstrap intervals over items). One transaction then writes the system's
`quality`, the `evaluation.recorded` and `contribution.measured` ledger entries, and one
ContributionMeasurement per expert, whose share (credit.rules.measured_shares_bp) is what credit reads.
"""
from __future__ import annotations

import importlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from composition.coalitions import accuracy_report, contribution_method, measure_experts
from composition.contribution import decimal_string
from composition.errors import CompositionError
from gpu_workers.contract import CompletionResult, TaskMessage
from ledger.services import record_event
from marketplace import policy
from marketplace.credit.rules import measured_shares_bp
from marketplace.models import ComposedSystem, ContributionMeasurement, SystemEvaluation, SystemExpert
from marketplace.services.inference import build_message, run_system_request, with_fresh_deadline
from marketplace.services.jobs import job_run
from domain.errors import DomainError
from marketplace.ledger_refs import EVALUATION_ACTOR, user_ref
from mosaic.progress import QUIET, Progress

SKILL_TAG = "skill:"
METRIC = "is_correct"
GENERAL_SKILL = "general"
DEFAULT_MAX_TOKENS = 32
MAX_ITEMS_PER_SKILL = 1000


class EvaluationRefused(DomainError):
    code = "evaluation_refused"


def evaluation_suite():
    """The module that holds the held-out sets (see the module docstring)."""
    return importlib.import_module(settings.EVALUATION_SUITE)


@dataclass(frozen=True)
class HeldOutSet:
    skill: str
    items: list  # the suite's items: .skill, .prompt, .answer
    sha256: str
    max_tokens: int


def expert_skill(expert) -> str | None:
    for tag in expert.tags or []:
        if isinstance(tag, str) and tag.startswith(SKILL_TAG) and tag[len(SKILL_TAG):]:
            return tag[len(SKILL_TAG):]
    return None


def held_out_sets(*, members: list[SystemExpert], items_per_skill: int, seed: int, suite) -> list[HeldOutSet]:
    """One held-out set per skill of the system's experts (in the order of the members), then the general set."""
    skills: list[str] = []
    for member in members:
        skill = expert_skill(member.expert)
        if skill is None:
            continue
        if skill not in suite.SKILLS:
            raise EvaluationRefused(
                f"Expert {member.expert.slug!r} names skill {skill!r}, which has no held-out set; "
                f"known skills: {', '.join(sorted(suite.SKILLS))}."
            )
        if skill not in skills:
            skills.append(skill)
    if not skills:
        raise EvaluationRefused(
            "None of this system's experts names a skill with a held-out set: tag an expert 'skill:<name>' "
            f"(known skills: {', '.join(sorted(suite.SKILLS))})."
        )
    sets = []
    for name in skills:
        skill = suite.SKILLS[name]
        items = skill.heldout_items(items_per_skill, seed)
        sets.append(HeldOutSet(name, items, suite.heldout_sha256(items), getattr(skill, "max_tokens", DEFAULT_MAX_TOKENS)))
    general = list(getattr(suite, "GENERAL", []))
    if general:
        sets.append(HeldOutSet(GENERAL_SKILL, general, suite.heldout_sha256(general),
                               getattr(suite, "GENERAL_MAX_TOKENS", DEFAULT_MAX_TOKENS)))
    return sets


def _item_message(*, system: ComposedSystem, plan: policy.ServingPlan | None, strategy: str | None, prompt: str,
                  max_tokens: int) -> TaskMessage:
    """One item's task message: the system on `plan` (with another `strategy` when given, e.g. "single" for an
    expert alone), or the base model alone when there is no plan."""
    params = {"max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
    chat = [{"role": "user", "content": prompt}]
    request_id = f"eval-{uuid.uuid4().hex}"
    if plan is None:
        plan, strategy = policy.ServingPlan(members=[], strategy_config={}), "base"
    message = build_message(request_id=request_id, system=system, plan=plan, params=params, messages=chat)
    return message if strategy is None else replace(message, strategy=strategy, learned=None)


def answer_items(*, system: ComposedSystem, plan: policy.ServingPlan | None, sets: list[HeldOutSet],
                 concurrency: int, strategy: str | None = None) -> list[str]:
    """The answers of the system on `plan` (None: the base model alone) to every item, in order, through the
    serving path. Requests run `concurrency` at a time so that the worker can batch them."""
    messages = [_item_message(system=system, plan=plan, strategy=strategy, prompt=item.prompt,
                              max_tokens=held_out.max_tokens)
                for held_out in sets for item in held_out.items]

    def send(message: TaskMessage) -> CompletionResult:  # its deadline starts when it is sent, not built
        return run_system_request(message=with_fresh_deadline(message))

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(send, messages))
    return [result.choices[0].text for result in results]


@dataclass
class CoalitionRunner:
    """Answers coalitions of a system's serving experts (by ledger reference), each distinct plan once. A
    coalition is the system restricted to it from all its members (revoked ones are never in a coalition)."""

    system: ComposedSystem
    members: list[SystemExpert]
    sets: list[HeldOutSet]
    suite: object
    concurrency: int
    on_answered: Callable[[], object] = lambda: None

    def __post_init__(self):
        self.all_members = list(self.system.memberships.select_related("expert", "version"))
        self.items = [item for held_out in self.sets for item in held_out.items]
        self.answered: dict[str, list[bool]] = {}
        self.unrunnable: list[list[str]] = []

    def correct_on(self, coalition: frozenset[str]) -> list[bool]:
        keep = [m for m in self.members if m.expert.ledger_ref in coalition]
        plan = policy.restricted_plan(system=self.system, members=self.all_members, keep=keep) if keep else None
        if keep and plan is None:
            self.unrunnable.append(sorted(coalition))
        key = "base" if plan is None else json.dumps(
            [[m.expert_id for m in plan.members], plan.strategy_config], sort_keys=True)
        if key not in self.answered:
            answers = answer_items(system=self.system, plan=plan, sets=self.sets, concurrency=self.concurrency)
            self.answered[key] = [bool(self.suite.is_correct(item, answer)) for item, answer in zip(self.items, answers)]
        self.on_answered()
        return self.answered[key]


def _interval(score) -> list[str]:
    return [decimal_string(score.low), decimal_string(score.high)]


def _rounded(value: float) -> float:
    return round(value, 4)


def system_evaluate(*, system: ComposedSystem, items_per_skill: int, seed: int, actor: str,
                    evaluation: SystemEvaluation | None = None, concurrency: int | None = None,
                    progress: Progress = QUIET) -> dict:
    """Evaluate `system` and write what was measured; returns the quality written to the system. `progress`
    is told of each coalition answered (their number is known in advance for exact Shapley only)."""
    if not 1 <= items_per_skill <= MAX_ITEMS_PER_SKILL:
        raise EvaluationRefused(f"Items per skill must be between 1 and {MAX_ITEMS_PER_SKILL}, not {items_per_skill}.")
    plan = policy.serving_members(system=system)
    if system.status != ComposedSystem.Status.ACTIVE or plan is None:
        raise EvaluationRefused(f"System {system.slug!r} cannot serve now (suspended, or its experts were revoked).")
    members = plan.members
    suite = evaluation_suite()
    sets = held_out_sets(members=members, items_per_skill=items_per_skill, seed=seed, suite=suite)
    items = [item for held_out in sets for item in held_out.items]
    players = [m.expert.ledger_ref for m in members]
    method = contribution_method(len(players))
    with progress.stage(f"{system.slug}: coalitions of {len(items)} items",
                        total=2 ** len(players) if method == "exact_shapley" else None, unit="coalition") as step:
        runner = CoalitionRunner(system=system, members=members, sets=sets, suite=suite,
                                 concurrency=concurrency or settings.EVALUATION_CONCURRENCY, on_answered=step.update)
        dataset_sha256 = suite.heldout_sha256(items)
        try:
            measured = measure_experts(players=players, correct_on=runner.correct_on, dataset_sha256=dataset_sha256,
                                       metric=METRIC, seed=seed, method=method)
        except CompositionError as error:
            raise EvaluationRefused(f"The evaluation could not be measured: {error}") from error
    system_correct = measured.answers[frozenset(players)]
    report = accuracy_report(system_correct, [item.skill for item in items])
    base = measured.accuracy_of(frozenset())
    return _record(system=system, members=members, sets=sets, report=report, correct=sum(system_correct), base=base,
                   measured=measured, runner=runner, items_per_skill=items_per_skill, seed=seed, dataset_sha256=dataset_sha256,
                   actor=actor, evaluation=evaluation)


def _record(*, system, members, sets, report, correct, base, measured, runner, items_per_skill, seed, dataset_sha256, actor,
            evaluation) -> dict:
    overall, per_skill = report["overall"], report["per_group"]
    contribution = measured.contribution
    values = {ref: decimal_string(value) for ref, value in contribution.values.items()}
    shares = measured_shares_bp(values)
    recorded_payload = {
        "system": system.ledger_ref,
        "evaluation": evaluation.ledger_ref if evaluation is not None else None,
        "strategy": system.strategy,
        "experts": [{"expert": m.expert.ledger_ref, "version": m.version.number, "sha256": m.version.sha256}
                    for m in members],
        "metric": METRIC,
        "seed": seed,
        "items_per_skill": items_per_skill,
        "dataset_sha256": dataset_sha256,
        "sets": [{"skill": s.skill, "sha256": s.sha256, "n": len(s.items)} for s in sets],
        "n": overall.n,
        "correct": correct,
        "accuracy": decimal_string(overall.mean),
        "interval95": _interval(overall),
        "interval_method": "wilson",
        "per_skill": {skill: {"n": s.n, "accuracy": decimal_string(s.mean), "interval95": _interval(s)}
                      for skill, s in per_skill.items()},
        "base_accuracy": decimal_string(base.mean),
        "base_interval95": _interval(base),
    }
    quality = {
        "metric": METRIC,
        "accuracy": _rounded(overall.mean),
        "interval95": [_rounded(overall.low), _rounded(overall.high)],
        "n": overall.n,
        "per_skill": {
            skill: {"accuracy": _rounded(s.mean), "interval95": [_rounded(s.low), _rounded(s.high)], "n": s.n,
                    "sha256": next(h.sha256 for h in sets if h.skill == skill)}
            for skill, s in per_skill.items()
        },
        "base_accuracy": _rounded(base.mean),
        "contributions": {
            ref: {"shapley": _rounded(contribution.values[ref]),
                  "interval95": [_rounded(low), _rounded(high)], "share_bp": shares[ref]}
            for ref, (low, high) in measured.intervals.items()
        },
        "method": contribution.method,
        "dataset_sha256": dataset_sha256,
        "items_per_skill": items_per_skill,
        "seed": seed,
        "evaluation": evaluation.pk if evaluation is not None else None,
    }
    with transaction.atomic():
        recorded = record_event(kind="evaluation.recorded", payload=recorded_payload, actor=actor)
        contribution_payload = {
            **contribution.ledger_payload(),
            "system": system.ledger_ref,
            "evaluation_event": recorded.id,
            "intervals95": {ref: [decimal_string(low), decimal_string(high)]
                            for ref, (low, high) in sorted(measured.intervals.items())},
            "interval_method": "bootstrap over items",
            "shares_bp": dict(sorted(shares.items())),
            "unrunnable_coalitions": sorted(runner.unrunnable),
        }
        measured_entry = record_event(kind="contribution.measured", payload=contribution_payload, actor=actor)
        ContributionMeasurement.objects.bulk_create(
            ContributionMeasurement(
                system=system, expert_id=m.expert_id, method=contribution.method, metric=METRIC,
                dataset_hash=dataset_sha256, value=values[m.expert.ledger_ref], share_bp=shares[m.expert.ledger_ref],
                samples=contribution.samples, std_error=decimal_string(contribution.std_errors[m.expert.ledger_ref]),
            )
            for m in members
        )
        # The sequences are known at once only when the ledger sequences inline (else None until integrated).
        quality.update(evaluated_at=timezone.now().isoformat(), ledger_event=recorded.id,
                       contribution_event=measured_entry.id, ledger_sequence=recorded.sequence,
                       contribution_sequence=measured_entry.sequence)
        ComposedSystem.objects.filter(pk=system.pk).update(quality=quality)
        system.quality = quality
    return quality


# --- the job row ----------------------------------------------------------------------------------------------


def evaluation_request(*, system: ComposedSystem, items_per_skill: int | None = None, seed: int = 1,
                       requested_by=None) -> SystemEvaluation:
    """A queued evaluation of `system` (the caller queues marketplace.tasks.evaluate_system once it commits)."""
    items_per_skill = items_per_skill or settings.EVALUATION_ITEMS_PER_SKILL
    if not 1 <= items_per_skill <= MAX_ITEMS_PER_SKILL:
        raise EvaluationRefused(f"Items per skill must be between 1 and {MAX_ITEMS_PER_SKILL}, not {items_per_skill}.")
    return SystemEvaluation.objects.create(system=system, items_per_skill=items_per_skill, seed=seed,
                                           requested_by=requested_by)


def evaluation_run(*, evaluation_id: int, progress: Progress = QUIET) -> SystemEvaluation:
    """Run a queued evaluation as a job (marketplace.services.jobs): its row records its state, the
    coalitions answered, then the quality written, or the reason it failed (and nothing else is written)."""

    def evaluate(evaluation: SystemEvaluation, job_progress: Progress) -> dict:
        actor = user_ref(evaluation.requested_by_id) if evaluation.requested_by_id else EVALUATION_ACTOR
        return system_evaluate(system=evaluation.system, items_per_skill=evaluation.items_per_skill,
                               seed=evaluation.seed, actor=actor, evaluation=evaluation, progress=job_progress)

    return job_run(model=SystemEvaluation, job_id=evaluation_id, work=evaluate, also=progress)
