"""Organizations, their members and their API keys (writes)."""
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from ledger.services import record_event
from marketplace.models import Membership, Organization, OrganizationAPIKey
from domain.errors import Conflict, DomainError, Forbidden
from marketplace.ledger_refs import user_ref

VALID_SCOPES = tuple(OrganizationAPIKey.Scope.values)


def organization_create(*, name: str, owner, is_commercial: bool = True, domains: list[str] | None = None) -> Organization:
    name = name.strip()
    slug = slugify(name)
    if not slug:
        raise DomainError("An organization needs a name with at least one letter or digit.", param="name")
    if Organization.objects.filter(name=name).exists() or Organization.objects.filter(slug=slug).exists():
        raise Conflict(f"An organization named {name!r} already exists.", param="name")
    with transaction.atomic():
        organization = Organization.objects.create(
            name=name, slug=slug, is_commercial=is_commercial, domains=sorted(set(domains or []))
        )
        Membership.objects.create(organization=organization, user=owner, role=Membership.Role.OWNER)
        record_event(
            kind="organization.created",
            payload={"organization": organization.ledger_ref, "name": organization.name,
                     "is_commercial": organization.is_commercial, "domains": organization.domains},
            actor=user_ref(owner),
        )
    return organization


def membership_set(*, organization: Organization, user, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise DomainError(f"Unknown role {role!r}; choose one of {', '.join(Membership.Role.values)}.", param="role")
    with transaction.atomic():
        membership, _ = Membership.objects.select_for_update().get_or_create(
            organization=organization, user=user, defaults={"role": role}
        )
        if membership.role != role:
            _refuse_removing_last_owner(membership=membership, new_role=role)
            membership.role = role
            membership.save(update_fields=["role"])
    return membership


def membership_remove(*, membership: Membership) -> None:
    with transaction.atomic():
        _refuse_removing_last_owner(membership=membership, new_role=None)
        membership.delete()


def _refuse_removing_last_owner(*, membership: Membership, new_role: str | None) -> None:
    if membership.role != Membership.Role.OWNER or new_role == Membership.Role.OWNER:
        return
    owners = Membership.objects.select_for_update().filter(
        organization=membership.organization, role=Membership.Role.OWNER
    )
    if owners.count() <= 1:
        raise Forbidden("An organization must keep at least one owner.")


def api_key_create(
    *, organization: Organization, name: str, scopes: list[str] | None = None
) -> tuple[OrganizationAPIKey, str]:
    """Returns the key row and the full key as the client must present it. The key is not stored."""
    scopes = sorted(set(scopes if scopes is not None else VALID_SCOPES))
    unknown = [scope for scope in scopes if scope not in VALID_SCOPES]
    if unknown or not scopes:
        raise DomainError(
            f"Scopes must be a non-empty subset of {', '.join(VALID_SCOPES)}; got {', '.join(scopes) or 'none'}.",
            param="scopes",
        )
    if not name or len(name) > 50:
        raise DomainError("An API key needs a name of 1 to 50 characters.", param="name")
    api_key, raw_key = OrganizationAPIKey.objects.create_key(name=name, organization=organization, scopes=scopes)
    return api_key, OrganizationAPIKey.display_key(raw_key)


def api_key_revoke(*, api_key: OrganizationAPIKey) -> OrganizationAPIKey:
    if not api_key.revoked:
        api_key.revoked = True
        api_key.save(update_fields=["revoked"])
    return api_key


def api_key_mark_used(*, api_key: OrganizationAPIKey) -> None:
    """One UPDATE, at most once a minute per key, so hot keys do not write on every request."""
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() >= 60:
        OrganizationAPIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


def organization_sign_up(
    *, username: str, password: str, email: str, organization_name: str, is_commercial: bool = True,
    domains: list[str] | None = None,
) -> Organization:
    """A new person and their organization, of which they are the owner: both or neither."""
    from marketplace.services.accounts import user_register

    with transaction.atomic():
        owner = user_register(username=username, password=password, email=email)
        return organization_create(name=organization_name, owner=owner, is_commercial=is_commercial, domains=domains)
