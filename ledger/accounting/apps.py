from django.apps import AppConfig


class AccountingConfig(AppConfig):
    name = "ledger.accounting"
    label = "accounting"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Accounting"
