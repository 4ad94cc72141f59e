"""Composed systems (writes): staff compose experts + a strategy + its parameters."""
from django.db import transaction

from ledger.services import record_event
from marketplace import policy
from marketplace.services.usage import check_amount
from marketplace.models import BaseModel, ComposedSystem, Expert, ExpertVersion, Organization, SystemExpert
from domain.errors import Conflict, DomainError

_UPDATABLE = (
    "name", "description", "price_per_1k_tokens_minor", "attribution_alpha_bp", "on_revocation", "status",
    "owner_organization",
)


def _validated_config(*, strategy: str, config: dict, experts: list[Expert]) -> dict:
    from composition.errors import CompositionError
    from composition.strategy_specs import validate_strategy_config

    try:
        return validate_strategy_config(strategy, config, [str(e.pk) for e in experts])
    except CompositionError as error:
        raise DomainError(f"Invalid strategy configuration: {error}", param="strategy_config") from error


def _usable_experts(*, expert_ids: list[int], base_model: BaseModel) -> list[Expert]:
    if not expert_ids:
        raise DomainError("A system needs at least one expert.", param="experts")
    if len(set(expert_ids)) != len(expert_ids):
        raise DomainError("An expert appears more than once.", param="experts")
    found = {
        e.pk: e
        for e in Expert.objects.select_related("owner", "license", "current_version").filter(pk__in=expert_ids)
    }
    experts = []
    for expert_id in expert_ids:
        expert = found.get(expert_id)
        if expert is None:
            raise DomainError(f"Expert {expert_id} does not exist.", param="experts")
        version = expert.current_version
        if version is None or version.status != ExpertVersion.Status.VALID:
            status = "has no version" if version is None else f"is {version.status}"
            raise DomainError(f"Expert {expert.slug!r} {status}; only valid experts can be composed.", param="experts")
        if expert.consent_revoked_at is not None:
            raise DomainError(f"Expert {expert.slug!r}: its contributor revoked consent.", param="experts")
        if expert.base_model_id != base_model.pk:
            raise DomainError(
                f"Expert {expert.slug!r} adapts {expert.base_model.name}, not {base_model.name}.", param="experts"
            )
        experts.append(expert)
    return experts


def system_validate(
    *, base_model: BaseModel, strategy: str, strategy_config: dict, expert_ids: list[int], actor: str
) -> tuple[list[Expert], dict, dict]:
    """Checks a composition without writing it: (experts, normalised config, license summary) or a refusal."""
    experts = _usable_experts(expert_ids=expert_ids, base_model=base_model)
    config = _validated_config(strategy=strategy, config=strategy_config, experts=experts)
    license_summary = policy.composition_license_summary(strategy=strategy, experts=experts, actor=actor)
    return experts, config, license_summary


def ledger_safe(value):
    """Ledger payloads hold no floats: strategy parameters are written as their shortest decimal strings."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): ledger_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [ledger_safe(v) for v in value]
    return value


def _snapshot(system: ComposedSystem) -> dict:
    return {
        "system": system.ledger_ref,
        "slug": system.slug,
        "base_model": BaseModel.ref_for(system.base_model_id),
        "strategy": system.strategy,
        "strategy_config": ledger_safe(system.strategy_config),
        "experts": [
            {"expert": Expert.ref_for(m.expert_id), "version": m.version.number, "sha256": m.version.sha256}
            for m in system.memberships.select_related("version")
        ],
        "owner_organization": (Organization.ref_for(system.owner_organization_id)
                               if system.owner_organization_id else None),
        "price_per_1k_tokens_minor": system.price_per_1k_tokens_minor,
        "on_revocation": system.on_revocation,
        "status": system.status,
        "license_summary": system.license_summary,
    }


def _set_members(*, system: ComposedSystem, experts: list[Expert]) -> None:
    system.memberships.all().delete()
    SystemExpert.objects.bulk_create(
        SystemExpert(system=system, expert=e, version_id=e.current_version_id, position=i)
        for i, e in enumerate(experts)
    )


def system_create(
    *,
    slug: str,
    name: str,
    base_model: BaseModel,
    strategy: str,
    strategy_config: dict,
    expert_ids: list[int],
    actor: str,
    description: str = "",
    owner_organization: Organization | None = None,
    price_per_1k_tokens_minor: int | None = None,
    attribution_alpha_bp: int = 5000,
    on_revocation: str = ComposedSystem.OnRevocation.RUN_WITHOUT,
) -> ComposedSystem:
    if price_per_1k_tokens_minor is not None:
        check_amount(price_per_1k_tokens_minor, param="price_per_1k_tokens_minor")
    experts, config, license_summary = system_validate(
        base_model=base_model, strategy=strategy, strategy_config=strategy_config, expert_ids=expert_ids, actor=actor
    )
    with transaction.atomic():
        if ComposedSystem.objects.filter(slug=slug).exists():
            raise Conflict(f"A system with slug {slug!r} already exists.", param="slug")
        system = ComposedSystem.objects.create(
            slug=slug, name=name, description=description, base_model=base_model, strategy=strategy,
            strategy_config=config, owner_organization=owner_organization,
            price_per_1k_tokens_minor=price_per_1k_tokens_minor, attribution_alpha_bp=attribution_alpha_bp,
            on_revocation=on_revocation, license_summary=license_summary,
        )
        _set_members(system=system, experts=experts)
        record_event(kind="system.composed", payload=_snapshot(system), actor=actor)
        _learn_after_commit(system)
    return system


def system_update(
    *,
    system: ComposedSystem,
    actor: str,
    strategy: str | None = None,
    strategy_config: dict | None = None,
    expert_ids: list[int] | None = None,
    **fields,
) -> ComposedSystem:
    unknown = sorted(set(fields) - set(_UPDATABLE))
    if unknown:
        raise DomainError(f"Cannot change {', '.join(unknown)}.", param=unknown[0])
    if fields.get("price_per_1k_tokens_minor") is not None:
        check_amount(fields["price_per_1k_tokens_minor"], param="price_per_1k_tokens_minor")
    recompose = strategy is not None or strategy_config is not None or expert_ids is not None
    experts = None
    if recompose:
        strategy = strategy if strategy is not None else system.strategy
        if expert_ids is None:
            expert_ids = list(system.memberships.values_list("expert_id", flat=True))
        experts, config, license_summary = system_validate(
            base_model=system.base_model, strategy=strategy,
            strategy_config=strategy_config if strategy_config is not None else system.strategy_config,
            expert_ids=expert_ids, actor=actor,
        )
    with transaction.atomic():
        system = ComposedSystem.objects.select_for_update().get(pk=system.pk)
        before = _snapshot(system)
        for field, value in fields.items():
            setattr(system, field, value)
        if recompose:
            system.strategy, system.strategy_config, system.license_summary = strategy, config, license_summary
            _set_members(system=system, experts=experts)
        after = _snapshot(system)
        relearn = recompose and any(after[key] != before[key] for key in ("strategy", "strategy_config", "experts"))
        if relearn:
            system.learned = {}  # learned on another composition: the new one learns in its own job
        system.save()
        changed = sorted(k for k in after if after[k] != before[k])
        if changed:
            record_event(kind="system.changed", payload={**after, "changed": changed}, actor=actor)
        if relearn:
            _learn_after_commit(system)
    return system


def _learn_after_commit(system: ComposedSystem) -> None:
    """A system whose strategy learns on a development set learns it in a job once this commits."""
    from marketplace.services.optimisation import optimisation_request

    optimisation_request(system=system)
