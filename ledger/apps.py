from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from ledger.scheduler import start_in_process_checkpoints

        start_in_process_checkpoints()
