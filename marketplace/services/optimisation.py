"""Learning at composition (writes): a system whose strategy learns on a development set (LoraHub, Model Swarms,
greedy soup, ExPO, merge search, a graph router, a trained router or gate, Heterogeneous Swarms, SLM-MUX:
composition.strategy_specs `learns`) learns it once, when it is composed or its strategy, configuration or
experts change, as a job (SystemOptimisation) queued once that commits.

The job sends the system's serving plan to a worker like any request, asking it to learn (TaskMessage.learn):
the worker learns afresh and returns what it learned (Strategy.learned()). One transaction then stores it on the system
(ComposedSystem.learned), which build_message sends with every request of that plan so that workers restore it
instead of learning again, and records `composition.optimised` in the ledger with the development set's hash.
A learning that fails ends the job failed with the reason and writes nothing: the system keeps what it had."""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import replace

from django.conf import settings
from django.db import transaction

from composition.strategy_specs import strategy_learns
from gpu_workers.contract import TaskMessage
from ledger.services import record_event
from marketplace import policy
from marketplace.ledger_refs import OPTIMISATION_ACTOR
from marketplace.models import ComposedSystem, Expert, Organization, SystemOptimisation
from marketplace.services.inference import build_message, run_system_request
from marketplace.services.jobs import job_run
from marketplace.services.systems import ledger_safe
from domain.errors import DomainError
from mosaic.progress import QUIET, Progress

LEARNING_PROMPT = "."  # the request that makes the worker learn answers one token of it
LEDGER_LEARNED_MAX_BYTES = 16_384  # a larger learned state (a router's or gate's weights) is in the ledger by hash
_HEADER = ("strategy", "experts", "dev_set_sha256", "evaluations")


class OptimisationFailed(DomainError):
    code = "optimisation_failed"


def system_learns(system: ComposedSystem) -> bool:
    return strategy_learns(system.strategy, system.strategy_config)


def _member_ids(system: ComposedSystem) -> list[str]:
    return [str(expert_id) for expert_id in system.memberships.values_list("expert_id", flat=True)]


def optimisation_request(*, system: ComposedSystem) -> SystemOptimisation | None:
    """A queued learning of `system`, once its composition commits; None when its strategy learns nothing."""
    if not system_learns(system):
        return None
    from marketplace.tasks import optimise_system

    optimisation = SystemOptimisation.objects.create(system=system)
    transaction.on_commit(lambda pk=optimisation.pk: optimise_system.delay(pk))
    return optimisation


def learning_message(*, system: ComposedSystem, plan: policy.ServingPlan) -> TaskMessage:
    """The request that makes a worker learn: the system's plan asking to learn, one token of an answer, and a
    deadline long enough for the learning (settings.OPTIMISATION_DEADLINE_SECONDS)."""
    message = build_message(request_id=f"learn-{uuid.uuid4().hex}", system=system, plan=plan,
                            params={"max_tokens": 1, "temperature": 0.0, "seed": 0}, prompt=LEARNING_PROMPT)
    return replace(message, learned=None, learn=True, deadline=time.time() + settings.OPTIMISATION_DEADLINE_SECONDS)


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def optimised_payload(*, system: ComposedSystem, optimisation: SystemOptimisation | None, plan: policy.ServingPlan,
                      learned: dict) -> dict:
    state = {key: value for key, value in learned.items() if key not in _HEADER}
    shown = ledger_safe(state)
    return {
        "system": system.ledger_ref,
        "optimisation": optimisation.ledger_ref if optimisation is not None else None,
        "owner_organization": (Organization.ref_for(system.owner_organization_id)
                               if system.owner_organization_id else None),  # a private system stays private
        "strategy": system.strategy,
        "experts": [{"expert": Expert.ref_for(m.expert_id), "version": m.version.number, "sha256": m.version.sha256}
                    for m in plan.members],
        "dev_set_sha256": learned.get("dev_set_sha256"),
        "evaluations": learned.get("evaluations", 0),
        "learned": shown if len(_canonical(shown)) <= LEDGER_LEARNED_MAX_BYTES else None,
        "learned_sha256": hashlib.sha256(_canonical(learned)).hexdigest(),
    }


def system_optimise(*, system: ComposedSystem, optimisation: SystemOptimisation | None = None,
                    actor: str = OPTIMISATION_ACTOR, progress: Progress = QUIET) -> dict:
    """Learn on `system`'s development set through a worker, store what was learned and record it; returns it."""
    if not system_learns(system):
        raise OptimisationFailed(f"System {system.slug!r}: its {system.strategy} strategy learns nothing.")
    plan = policy.serving_members(system=system)
    if system.status != ComposedSystem.Status.ACTIVE or plan is None:
        raise OptimisationFailed(f"System {system.slug!r} cannot serve now (suspended, or its experts were revoked).")
    with progress.stage(f"{system.slug}: {system.strategy} learns on its development set"):
        result = run_system_request(message=learning_message(system=system, plan=plan))
    learned = result.learned
    if learned is None or learned.get("experts") != [str(m.expert_id) for m in plan.members]:
        raise OptimisationFailed(f"System {system.slug!r}: the worker did not return what its {system.strategy} "
                                 "strategy learned for this system's experts.")
    with transaction.atomic():
        current = ComposedSystem.objects.select_for_update().get(pk=system.pk)
        if (current.strategy, current.strategy_config, _member_ids(current)) != (
                system.strategy, system.strategy_config, _member_ids(system)):
            raise OptimisationFailed(f"System {system.slug!r} changed while it learned; its new composition "
                                     "learns in its own job.")
        ComposedSystem.objects.filter(pk=system.pk).update(learned=learned)
        system.learned = learned
        entry = record_event(kind="composition.optimised", actor=actor,
                             payload=optimised_payload(system=system, optimisation=optimisation, plan=plan,
                                                       learned=learned))
    return {"learned": learned, "ledger_event": entry.id, "ledger_sequence": entry.sequence}


def optimisation_run(*, optimisation_id: int, progress: Progress = QUIET) -> SystemOptimisation:
    """Run a queued learning as a job (marketplace.services.jobs): its row records its state, then what was
    learned, or the reason it failed (and nothing else is written)."""

    def optimise(optimisation: SystemOptimisation, job_progress: Progress) -> dict:
        later = optimisation.system.optimisations.filter(pk__gt=optimisation.pk).order_by("pk").first()
        if later is not None:
            raise OptimisationFailed(f"The system was composed again; {later.ledger_ref} learns its new composition.")
        return system_optimise(system=optimisation.system, optimisation=optimisation, progress=job_progress)

    return job_run(model=SystemOptimisation, job_id=optimisation_id, work=optimise, also=progress)
