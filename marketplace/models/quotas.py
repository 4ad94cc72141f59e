from django.db import models


class QuotaWindow(models.Model):
    """Requests and tokens an organization used in one fixed window (a minute or a calendar month).

    Updated only by conditional UPDATEs in marketplace.quotas, so concurrent requests cannot overrun a limit."""

    class Kind(models.TextChoices):
        MINUTE = "minute"
        MONTH = "month"

    organization = models.ForeignKey("marketplace.Organization", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=6, choices=Kind.choices)
    window_start = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "kind", "window_start"], name="quota_window_unique")
        ]
