"""Governance: license terms are data, checked here and only here.

Three decision points:
- composing a system (`composition_license_summary`): a weight-level strategy merges adapters, which makes a
  derivative work, so every expert must allow derivatives; share-alike and attribution carry to the system;
- subscribing (`subscription_check`): the plan must be on offer; the systems the organization could not use
  under its declared terms are reported up front;
- every request (`request_experts`): revoked consent, commercial use and domains, per expert.

A refusal raises `PolicyRefused` (HTTP 403, OpenAI's error shape) with a reason a person understands;
refusals on requests and compositions leave a `policy.refused` ledger entry, written in its own transaction
so that it survives the refusal."""
from dataclasses import dataclass

from django.db import transaction

from ledger.services import record_event
from marketplace.models import ComposedSystem, Expert, Organization, Plan, SystemExpert
from domain.errors import Forbidden


class PolicyRefused(Forbidden):
    code = "policy_refused"


def strategy_level(strategy: str) -> str:
    from composition.strategy_specs import strategy_level as level

    return level(strategy)


def _refuse(*, message: str, subject: dict, actor: str, record: bool = True) -> PolicyRefused:
    if record:
        with transaction.atomic():
            record_event(kind="policy.refused", payload={"reason": message, **subject}, actor=actor)
    return PolicyRefused(message)


def _expert_label(expert: Expert) -> str:
    return f"expert {expert.slug!r} by {expert.owner.display_name}"


# --- composing -------------------------------------------------------------------------------------------


def composition_license_summary(*, strategy: str, experts: list[Expert], actor: str) -> dict:
    """The license terms the composed system carries, or a refusal."""
    derivative = strategy_level(strategy) == "weight"
    problems = []
    for expert in experts:
        terms = expert.license
        if terms is None:
            problems.append(f"{_expert_label(expert)} has no license terms")
        elif derivative and not terms.derivatives_allowed:
            problems.append(
                f"{_expert_label(expert)} ({terms.spdx_id}) forbids derivative works, and strategy "
                f"{strategy!r} merges adapter weights, which makes one"
            )
    if problems:
        raise _refuse(
            message="This composition is not allowed: " + "; ".join(problems) + ".",
            subject={"decision": "compose", "strategy": strategy, "experts": [e.ledger_ref for e in experts]},
            actor=actor,
        )
    terms = [e.license for e in experts]
    return {
        "derivative_work": derivative,
        "licenses": sorted({t.spdx_id for t in terms}),
        "commercial_use": all(t.commercial_use for t in terms),
        "share_alike": [str(e.pk) for e, t in zip(experts, terms) if t.share_alike] if derivative else [],
        "attribution_required": [str(e.pk) for e, t in zip(experts, terms) if t.attribution_required],
    }


# --- using ------------------------------------------------------------------------------------------------


def _use_problem(*, organization: Organization, expert: Expert) -> str | None:
    terms = expert.license
    if terms is None:
        return f"{_expert_label(expert)} has no license terms"
    if organization.is_commercial and not terms.commercial_use:
        return f"{_expert_label(expert)} is licensed {terms.spdx_id} for non-commercial use only, and {organization.name} is a commercial organization"
    declared = set(organization.domains)
    prohibited = sorted(declared & set(terms.prohibited_domains))
    if prohibited:
        return f"{_expert_label(expert)} may not be used for {', '.join(prohibited)}, which {organization.name} declares"
    if terms.allowed_domains:
        outside = sorted(declared - set(terms.allowed_domains))
        if not declared:
            return (f"{_expert_label(expert)} is licensed only for {', '.join(terms.allowed_domains)}, and "
                    f"{organization.name} declares no domains")
        if outside:
            return (f"{_expert_label(expert)} is licensed only for {', '.join(terms.allowed_domains)}, and "
                    f"{organization.name} also declares {', '.join(outside)}")
    return None


@dataclass(frozen=True)
class ServingPlan:
    """What a request may run on: the members still serving and the strategy configuration for them."""

    members: list[SystemExpert]
    strategy_config: dict


def serving_members(*, system: ComposedSystem) -> ServingPlan | None:
    """The system's experts minus those whose consent is revoked; None when the system cannot run without them."""
    members = list(system.memberships.select_related("expert__owner", "expert__license", "version"))
    serving = [m for m in members if m.expert.consent_revoked_at is None]
    if len(serving) < len(members) and system.on_revocation == ComposedSystem.OnRevocation.SUSPEND:
        return None
    return restricted_plan(system=system, members=members, keep=serving)


def restricted_plan(*, system: ComposedSystem, members: list[SystemExpert], keep: list[SystemExpert]) -> ServingPlan | None:
    """The system run on `keep`, a subset of its `members`: the strategy configuration without the others
    (per-expert weights renormalised, lists of experts filtered); None when the strategy cannot run on them.
    The one rule for a system without some of its experts: revoked ones, or a coalition in an evaluation."""
    if len(keep) == len(members):
        return ServingPlan(members=list(keep), strategy_config=system.strategy_config)
    if not keep:
        return None
    from composition.errors import CompositionError
    from composition.strategy_specs import validate_strategy_config

    removed = {str(m.expert_id) for m in members} - {str(m.expert_id) for m in keep}
    config = {key: _without(value, removed) for key, value in system.strategy_config.items()}
    try:
        config = validate_strategy_config(system.strategy, config, [str(m.expert_id) for m in keep])
    except CompositionError:
        return None
    return ServingPlan(members=list(keep), strategy_config=config)


def _without(value, removed: set[str]):
    """A per-expert mapping without the removed experts (weights renormalised to sum to 1); a list of expert
    ids, or of objects naming an "expert", without the removed ones."""
    if isinstance(value, list):
        return [item for item in value
                if not (isinstance(item, str) and item in removed)
                and not (isinstance(item, dict) and item.get("expert") in removed)]
    if not isinstance(value, dict) or not removed & set(value):
        return value
    kept = {k: v for k, v in value.items() if k not in removed}
    numbers = [v for v in kept.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if kept and len(numbers) == len(kept) and sum(numbers) > 0:
        total = sum(numbers)
        kept = {k: v / total for k, v in kept.items()}
    return kept


def request_plan(*, organization: Organization, system: ComposedSystem, actor: str) -> ServingPlan:
    """Checked on every request, before any work is done."""
    subject = {"decision": "request", "organization": organization.ledger_ref, "system": system.ledger_ref}
    if system.status == ComposedSystem.Status.SUSPENDED:
        raise _refuse(
            message=f"System {system.slug!r} is suspended: a contributor revoked consent for one of its experts.",
            subject=subject, actor=actor,
        )
    plan = serving_members(system=system)
    if plan is None:
        raise _refuse(
            message=(f"System {system.slug!r} cannot serve: a contributor revoked consent for one of its experts, "
                     "and the system cannot run without it."),
            subject=subject, actor=actor,
        )
    problems = [p for m in plan.members if (p := _use_problem(organization=organization, expert=m.expert))]
    if problems:
        raise _refuse(message="Refused by license terms: " + "; ".join(problems) + ".", subject=subject, actor=actor)
    return plan


def subscription_check(*, organization: Organization, plan: Plan, systems: list[ComposedSystem]) -> dict:
    """Refuses an inactive plan; returns {system slug: reason} for the systems the organization may not use."""
    if not plan.is_active:
        raise PolicyRefused(f"Plan {plan.slug!r} is no longer offered.")
    unavailable = {}
    for system in systems:
        reasons = [
            p for m in system.memberships.select_related("expert__owner", "expert__license")
            if m.expert.consent_revoked_at is None and (p := _use_problem(organization=organization, expert=m.expert))
        ]
        if reasons:
            unavailable[system.slug] = "; ".join(reasons)
    return unavailable
