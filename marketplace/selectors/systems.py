"""Composed systems (reads): who may see and call what."""
from django.db.models import Prefetch, Q, QuerySet

from marketplace.models import ComposedSystem, Organization, SystemEvaluation, SystemExpert
from domain.errors import NotFound


def _with_relations(queryset: QuerySet[ComposedSystem]) -> QuerySet[ComposedSystem]:
    """Two queries in all: the systems with their base model and owner, then every membership with its expert,
    contributor and pinned version."""
    return queryset.select_related("base_model", "owner_organization").prefetch_related(
        Prefetch("memberships", queryset=SystemExpert.objects.select_related("expert__owner", "version"))
    )


def system_get(*, system_id: int) -> ComposedSystem:
    system = ComposedSystem.objects.filter(pk=system_id).first()
    if system is None:
        raise NotFound("No such system.")
    return system


def systems_visible_to_user(*, user) -> QuerySet[ComposedSystem]:
    """Staff see every system; others the public ones and their organizations' private ones."""
    queryset = ComposedSystem.objects.all()
    if not (user.is_authenticated and user.is_staff):
        visible = Q(owner_organization__isnull=True)
        if user.is_authenticated:
            visible |= Q(owner_organization__memberships__user=user)
        queryset = queryset.filter(visible).distinct()
    return _with_relations(queryset).order_by("slug")


def system_visible_to_user(*, user, system_id: int) -> ComposedSystem:
    """One system the user may see, with its relations; one they may not see does not exist for them."""
    system = systems_visible_to_user(user=user).filter(pk=system_id).first()
    if system is None:
        raise NotFound("No such system.")
    return system


def systems_callable_by(*, organization: Organization) -> QuerySet[ComposedSystem]:
    return _with_relations(
        ComposedSystem.objects.filter(
            Q(owner_organization__isnull=True) | Q(owner_organization=organization),
            status=ComposedSystem.Status.ACTIVE,
        )
    ).order_by("slug")


def system_for_organization(*, organization: Organization, slug: str) -> ComposedSystem:
    """A system this organization may see; another organization's private system does not exist for it."""
    system = (
        ComposedSystem.objects.select_related("base_model")
        .filter(Q(owner_organization__isnull=True) | Q(owner_organization=organization), slug=slug)
        .first()
    )
    if system is None:
        raise NotFound(f"The model {slug!r} does not exist or you do not have access to it.", code="model_not_found",
                       param="model")
    return system


def latest_evaluation_seen_by(*, user, system: ComposedSystem) -> SystemEvaluation | None:
    """The system's latest evaluation job, for staff (who run them); None for anyone else or when there is none."""
    if not user.is_staff:
        return None
    return SystemEvaluation.objects.filter(system=system).select_related("system", "requested_by").first()
