from django.apps import AppConfig


class AccountingConfig(AppConfig):
    name = "ledger.accounting"
    label = "accounting"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Accounting"

    def ready(self):
        from ledger.accounting.verification import check_balances
        from ledger.verification import register_check

        register_check(check_balances)
