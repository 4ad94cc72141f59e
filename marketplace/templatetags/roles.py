"""Which menu a user gets: `{% load roles %}{% if user|is_contributor %}`. One place for the roles that
the pages' own checks use, so no link is shown that would answer 403."""
from django import template

from ledger.api.permissions import is_auditor as ledger_auditor
from marketplace.models import Contributor

register = template.Library()


@register.filter
def is_contributor(user) -> bool:
    return bool(user and user.is_authenticated and Contributor.objects.filter(user=user).exists())


@register.filter
def is_auditor(user) -> bool:
    return ledger_auditor(user)
