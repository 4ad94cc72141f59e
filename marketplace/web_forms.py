"""What every page form shares: a service's refusal shown once, next to its field."""
from django import forms

from domain.errors import DomainError


def show_refusal(form: forms.Form, error: DomainError, aliases: dict | None = None) -> None:
    """A service's refusal on the form: next to the field it names (`aliases` maps the service's parameter names to
    the form's), else above the form. Rendered once, by the form itself (as_p puts each error by its field)."""
    param = (aliases or {}).get(error.param, error.param)
    form.add_error(param if param in form.fields else None, error.message)
