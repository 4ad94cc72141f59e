"""Organizations, memberships and API keys (reads)."""
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from marketplace.models import Membership, Organization, OrganizationAPIKey
from domain.errors import DomainError, Forbidden, NotFound


# Who may do what in an organization: the one place the API and the pages read it from.
OWNER = (Membership.Role.OWNER,)  # manage members, create and revoke API keys
OWNER_OR_BILLING = (Membership.Role.OWNER, Membership.Role.BILLING)  # subscribe, change plan, see invoices
OWNER_OR_DEVELOPER = (Membership.Role.OWNER, Membership.Role.DEVELOPER)  # see API keys


def may(*, membership: Membership, roles: tuple[str, ...]) -> bool:
    return membership.role in roles


def organizations_for_user(*, user) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


def roles_of_user(*, user) -> dict[int, str]:
    """The user's role in each of their organizations, by organization id."""
    return dict(Membership.objects.filter(user=user).values_list("organization_id", "role"))


def members_of(*, organization: Organization) -> QuerySet[Membership]:
    return organization.memberships.select_related("user").order_by("created_at")


def member_of(*, organization: Organization, user_id: int) -> Membership:
    member = organization.memberships.filter(user_id=user_id).first()
    if member is None:
        raise NotFound("No such member.")
    return member


def user_by_username(*, username: str):
    """The user to add as a member; an unknown name is the caller's input error."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise DomainError("No user with that username.", param="username")
    return user


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


def api_key_of_organization(*, organization: Organization, prefix: str) -> OrganizationAPIKey:
    api_key = api_keys_for_organization(organization=organization).filter(prefix=prefix).first()
    if api_key is None:
        raise NotFound("No such API key.")
    return api_key


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
