"""Organizations, memberships and API keys (reads)."""
from django.db.models import QuerySet

from marketplace.models import Membership, Organization, OrganizationAPIKey
from mosaic.errors import Forbidden, NotFound


# Who may do what in an organization: the one place the API and the pages read it from.
OWNER = (Membership.Role.OWNER,)  # manage members, create and revoke API keys
OWNER_OR_BILLING = (Membership.Role.OWNER, Membership.Role.BILLING)  # subscribe, change plan, see invoices
OWNER_OR_DEVELOPER = (Membership.Role.OWNER, Membership.Role.DEVELOPER)  # see API keys


def may(*, membership: Membership, roles: tuple[str, ...]) -> bool:
    return membership.role in roles


def organizations_for_user(*, user) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


def membership_for(*, user, organization_id) -> Membership:
    """The caller's membership; an organization the caller does not belong to does not exist for them."""
    membership = (
        Membership.objects.select_related("organization")
        .filter(user=user, organization_id=organization_id)
        .first()
        if user.is_authenticated
        else None
    )
    if membership is None:
        raise NotFound("No such organization.")
    return membership


def require_role(*, membership: Membership, roles: tuple[str, ...], action: str) -> None:
    if membership.role not in roles:
        raise Forbidden(f"Only {' or '.join(roles)} members may {action}; you are {membership.role}.")


def api_keys_for_organization(*, organization: Organization) -> QuerySet[OrganizationAPIKey]:
    return OrganizationAPIKey.objects.filter(organization=organization).order_by("-created")


def api_key_from_presented(*, presented: str) -> OrganizationAPIKey | None:
    """The usable key matching what a client presented, or None (revoked, expired, unknown or wrong)."""
    raw = OrganizationAPIKey.library_key(presented.strip())
    prefix, dot, secret = raw.partition(".")
    if not (prefix and dot and secret):
        return None
    api_key = (
        OrganizationAPIKey.objects.get_usable_keys().select_related("organization").filter(prefix=prefix).first()
    )
    if api_key is None or not api_key.is_valid(raw) or api_key.has_expired:
        return None
    return api_key


def active_plan(*, organization: Organization):
    """The plan of the organization's newest active subscription, None without one."""
    from marketplace.models import Subscription

    subscription = (
        Subscription.objects.select_related("plan")
        .filter(organization=organization, status=Subscription.Status.ACTIVE)
        .order_by("-created_at")
        .first()
    )
    return None if subscription is None else subscription.plan
