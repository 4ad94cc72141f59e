"""A contributor revokes consent for an expert: from the next request on, it serves nobody."""
from django.db import transaction
from django.utils import timezone

from ledger.services import record_event
from marketplace import policy
from marketplace.models import ComposedSystem, Expert, SystemExpert
from mosaic.errors import Forbidden


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
                system.status = ComposedSystem.Status.SUSPENDED
                system.save(update_fields=["status", "updated_at"])
                suspended.append(system)
                record_event(
                    kind="system.changed",
                    payload={"system": system.ledger_ref, "status": system.status, "changed": ["status"],
                             "reason": f"consent revoked for {expert.ledger_ref}"},
                    actor=f"contributor:{contributor.pk}",
                )
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
