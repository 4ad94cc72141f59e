"""A contributor revokes consent for an expert: from the next request on, it serves nobody."""
from django.db import transaction
from django.utils import timezone

from ledger.services import record_event
from marketplace import policy
from marketplace.models import ComposedSystem, Expert, SystemExpert
from domain.errors import Forbidden


def expert_revoke_consent(*, expert: Expert, user) -> Expert:
    contributor = getattr(user, "contributor", None)
    if contributor is None or contributor.pk != expert.owner_id:
        raise Forbidden("Only the expert's contributor may revoke consent for it.")
    with transaction.atomic():
        expert = Expert.objects.select_for_update().get(pk=expert.pk)
        if expert.consent_revoked_at is not None:
            return expert
        expert.consent_revoked_at = timezone.now()
        expert.save(update_fields=["consent_revoked_at"])
        system_ids = SystemExpert.objects.filter(expert=expert).values_list("system_id", flat=True)
        systems = list(ComposedSystem.objects.select_for_update().filter(pk__in=list(system_ids)).order_by("pk"))
        suspended = []
        for system in systems:
            if system.status == ComposedSystem.Status.ACTIVE and policy.serving_members(system=system) is None:
                _status_set(system, ComposedSystem.Status.SUSPENDED, reason=f"consent revoked for {expert.ledger_ref}",
                            actor=contributor.ledger_ref)
                suspended.append(system)
        record_event(
            kind="consent.revoked",
            payload={
                "expert": expert.ledger_ref,
                "contributor": contributor.ledger_ref,
                "revoked_at": expert.consent_revoked_at.isoformat(),
                "systems_running_without": sorted(s.ledger_ref for s in systems if s not in suspended),
                "systems_suspended": sorted(s.ledger_ref for s in suspended),
            },
            actor=contributor.ledger_ref,
        )
    return expert


def _systems_suspended_for(expert: Expert) -> list[ComposedSystem]:
    """Suspended systems of the expert's that serve again once its consent is back: those whose other experts
    all still consent (the revocation of this one is what stopped them)."""
    system_ids = SystemExpert.objects.filter(expert=expert).values_list("system_id", flat=True)
    systems = ComposedSystem.objects.select_for_update().filter(
        pk__in=list(system_ids), status=ComposedSystem.Status.SUSPENDED
    ).order_by("pk")
    return [s for s in systems if policy.serving_members(system=s) is not None]


def expert_restore_consent(*, expert: Expert, user) -> Expert:
    """Give consent back: from the next request on the expert serves its systems again, and the systems that its
    revocation suspended are active again. Refused, and nothing changes, while a system's license policy forbids
    the expert in it (policy.composition_license_summary, the rule of composing)."""
    contributor = getattr(user, "contributor", None)
    if contributor is None or contributor.pk != expert.owner_id:
        raise Forbidden("Only the expert's contributor may restore consent for it.")
    if Expert.objects.filter(pk=expert.pk, consent_revoked_at__isnull=True).exists():
        return Expert.objects.get(pk=expert.pk)
    systems = ComposedSystem.objects.filter(memberships__expert=expert).order_by("pk").distinct()
    for system in systems:  # a refusal leaves its own policy.refused entry, outside this change
        members = [m.expert for m in system.memberships.select_related("expert__owner", "expert__license")]
        policy.composition_license_summary(strategy=system.strategy, experts=members, actor=contributor.ledger_ref)
    with transaction.atomic():
        expert = Expert.objects.select_for_update().get(pk=expert.pk)
        if expert.consent_revoked_at is None:
            return expert
        revoked_at = expert.consent_revoked_at
        expert.consent_revoked_at = None
        expert.save(update_fields=["consent_revoked_at"])
        reactivated = _systems_suspended_for(expert)
        for system in reactivated:
            _status_set(system, ComposedSystem.Status.ACTIVE, reason=f"consent restored for {expert.ledger_ref}",
                        actor=contributor.ledger_ref)
        record_event(
            kind="consent.restored",
            payload={
                "expert": expert.ledger_ref,
                "contributor": contributor.ledger_ref,
                "revoked_at": revoked_at.isoformat(),
                "restored_at": timezone.now().isoformat(),
                "systems_reactivated": sorted(s.ledger_ref for s in reactivated),
            },
            actor=contributor.ledger_ref,
        )
    return expert


def _status_set(system: ComposedSystem, status: str, *, reason: str, actor: str) -> None:
    """A system suspended or reactivated by a consent change, with its `system.changed` entry."""
    system.status = status
    system.save(update_fields=["status", "updated_at"])
    record_event(
        kind="system.changed",
        payload={"system": system.ledger_ref, "status": system.status, "changed": ["status"], "reason": reason},
        actor=actor,
    )
