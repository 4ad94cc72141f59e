"""Money in templates: integer minor units shown in major units with the currency (2000 -> "20.00 USD")."""
from django import template
from django.conf import settings

register = template.Library()


@register.filter
def money(minor) -> str:
    if minor is None or minor == "":
        return ""
    minor = int(minor)
    sign = "-" if minor < 0 else ""
    major, cents = divmod(abs(minor), 100)
    return f"{sign}{major:,}.{cents:02d} {settings.CURRENCY.upper()}"
