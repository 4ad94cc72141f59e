from rest_framework.permissions import BasePermission

AUDITORS_GROUP = "auditors"


def is_auditor(user) -> bool:
    return bool(
        user and user.is_authenticated and (user.is_staff or user.groups.filter(name=AUDITORS_GROUP).exists())
    )


class IsAuditor(BasePermission):
    """Members of the 'auditors' group and staff; read-only."""

    message = "Only auditors can read the ledger."

    def has_permission(self, request, view) -> bool:
        return request.method in ("GET", "HEAD", "OPTIONS") and is_auditor(request.user)
