"""Experts and versions as each user may see them (reads).

Visibility: a user sees their own experts (all versions, with failure reasons) and other
contributors' public experts that have a valid version (valid versions only).
Writes resolve experts among the caller's own only, so someone else's expert is 404 either way."""
from django.db.models import OuterRef, Q, QuerySet, Subquery

from marketplace.models import Contributor, Expert, ExpertVersion
from domain.errors import Forbidden, NotFound


def contributor_for_user(*, user) -> Contributor:
    contributor = Contributor.objects.filter(user=user).first() if user and user.is_authenticated else None
    if contributor is None:
        raise Forbidden("This account has no contributor profile; register as a contributor first.")
    return contributor


def _with_latest_status(queryset: QuerySet) -> QuerySet:
    latest = ExpertVersion.objects.filter(expert=OuterRef("pk")).order_by("-number")
    return queryset.annotate(
        latest_version_number=Subquery(latest.values("number")[:1]),
        latest_status=Subquery(latest.values("status")[:1]),
    )


def expert_list_visible(*, user) -> QuerySet:
    queryset = Expert.objects.filter(
        Q(owner__user=user) | Q(is_public=True, current_version__isnull=False)
    ).select_related("owner__user", "base_model", "current_version", "license")
    return _with_latest_status(queryset).order_by("-created_at", "-pk")


def expert_list_owned(*, user) -> QuerySet:
    queryset = Expert.objects.filter(owner__user=user).select_related(
        "owner__user", "base_model", "current_version", "license"
    )
    return _with_latest_status(queryset).order_by("-created_at", "-pk")


def expert_get_visible(*, user, expert_id) -> Expert:
    expert = expert_list_visible(user=user).filter(pk=expert_id).first()
    if expert is None:
        raise NotFound(f"No expert {expert_id} that you can see.")
    return expert


def expert_get_owned(*, user, expert_id) -> Expert:
    expert = expert_list_owned(user=user).filter(pk=expert_id).first()
    if expert is None:
        raise NotFound(f"No expert {expert_id} of yours.")
    return expert


def version_list_visible(*, user, expert: Expert) -> QuerySet:
    versions = expert.versions.order_by("-number")
    if expert.owner.user_id != user.pk:
        versions = versions.filter(status=ExpertVersion.Status.VALID)
    return versions


def version_get_visible(*, user, expert: Expert, number) -> ExpertVersion:
    version = version_list_visible(user=user, expert=expert).filter(number=number).first()
    if version is None:
        raise NotFound(f"Expert {expert.pk} has no version {number} that you can see.")
    return version
