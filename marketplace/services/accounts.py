"""Contributors: registration, API tokens, profiles (writes)."""
from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from ledger.services import record_event
from marketplace.models import Contributor
from marketplace.services.security import second_factor_check_for_token
from domain.errors import Conflict, DomainError

MAX_PRIORITIES = 20
MAX_PRIORITY_CHARS = 60


def clean_priorities(priorities, *, param: str = "priorities") -> list[str]:
    """Priorities are short phrases (domains or tasks), at most 20, without duplicates, order kept."""
    if priorities is None:
        return []
    if not isinstance(priorities, (list, tuple)):
        raise DomainError("Priorities must be a list of short phrases.", param=param)
    cleaned: list[str] = []
    for item in priorities:
        if not isinstance(item, str) or not item.strip():
            raise DomainError("Each priority must be a non-empty phrase.", param=param)
        phrase = " ".join(item.split())
        if len(phrase) > MAX_PRIORITY_CHARS:
            raise DomainError(f"Priority {phrase[:20]!r}... is longer than {MAX_PRIORITY_CHARS} characters.",
                              param=param)
        if phrase.casefold() not in {p.casefold() for p in cleaned}:
            cleaned.append(phrase)
    if len(cleaned) > MAX_PRIORITIES:
        raise DomainError(f"At most {MAX_PRIORITIES} priorities are allowed.", param=param)
    return cleaned


def _checked_new_user(*, username: str, password: str, email: str) -> str:
    """The user name, stripped, once it is valid and free and the password passes the validators."""
    User = get_user_model()
    username = (username or "").strip()
    if not username:
        raise DomainError("Choose a user name.", param="username")
    candidate = User(username=username, email=email)
    try:
        User._meta.get_field("username").run_validators(username)
    except ValidationError as error:
        raise DomainError(" ".join(error.messages), param="username") from None
    try:
        validate_password(password, user=candidate)
    except ValidationError as error:
        raise DomainError(" ".join(error.messages), param="password") from None
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict(f"The user name {username!r} is taken.", param="username")
    return username


def user_register(*, username: str, password: str, email: str = ""):
    """A user account without a contributor profile (an organization's member)."""
    username = _checked_new_user(username=username, password=password, email=email)
    try:
        with transaction.atomic():
            return get_user_model().objects.create_user(username=username, email=email, password=password)
    except IntegrityError:
        raise Conflict(f"The user name {username!r} is taken.", param="username") from None


def contributor_register(
    *,
    username: str,
    password: str,
    email: str = "",
    display_name: str = "",
    bio: str = "",
    priorities: list[str] | None = None,
) -> Contributor:
    """Create a user and their contributor profile, and record `contributor.registered`."""
    username = _checked_new_user(username=username, password=password, email=email)
    priorities = clean_priorities(priorities)
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(username=username, email=email, password=password)
            contributor = Contributor.objects.create(
                user=user, display_name=(display_name or username).strip()[:120], bio=bio,
                priorities=priorities,
            )
            record_event(
                kind="contributor.registered",
                payload={"contributor": contributor.ledger_ref, "display_name": contributor.display_name,
                         "priorities": contributor.priorities},
                actor=contributor.ledger_ref,
            )
    except IntegrityError:
        raise Conflict(f"The user name {username!r} is taken.", param="username") from None
    return contributor


def token_issue(*, request, username: str, password: str, otp_code: str = "") -> Token:
    """The user's API token (created on first request). `request` lets the login throttle count the attempt.
    An account that must use a second factor sends a code from its authenticator (or a recovery code) too."""
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        raise DomainError("Wrong user name or password.", code="authentication_failed", status_code=401)
    second_factor_check_for_token(user=user, code=otp_code)
    user_logged_in.send(sender=user.__class__, request=request, user=user)  # a login: the throttle forgets failures
    token, _ = Token.objects.get_or_create(user=user)
    return token


def contributor_update(*, contributor: Contributor, display_name=None, bio=None,
                       priorities=None) -> Contributor:
    if display_name is not None:
        display_name = display_name.strip()
        if not display_name:
            raise DomainError("The display name cannot be empty.", param="display_name")
        contributor.display_name = display_name[:120]
    if bio is not None:
        contributor.bio = bio
    if priorities is not None:
        contributor.priorities = clean_priorities(priorities)
    contributor.save(update_fields=["display_name", "bio", "priorities"])
    return contributor
