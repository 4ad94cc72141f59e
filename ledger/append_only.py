"""Append-only tables: the database itself refuses UPDATE, DELETE and TRUNCATE.

Reusable by any app whose tables are evidence (the ledger, double-entry accounting):

    class Posting(AppendOnlyModel):
        ...
        class Meta:
            triggers = append_only_triggers()        # PostgreSQL, through django-pgtrigger

and, in a migration that runs after the tables exist (SQLite has no pgtrigger):

    operations = [sqlite_append_only("accounting.Posting", "accounting.Transaction")]

`makemigrations` turns Meta.triggers into pgtrigger operations (no-ops on SQLite); the
SQLite operation is a no-op on PostgreSQL. The Django model refuses too (`AppendOnlyModel`).
Corrections are new rows that reference the old ones, never edits.
"""
import contextlib

import pgtrigger
from django.db import connections, migrations, models

TRIGGER_PREFIX = "append_only"


class AppendOnlyError(Exception):
    """Raised when code tries to change or remove a row of an append-only table."""


def append_only_triggers() -> list[pgtrigger.Trigger]:
    return [
        pgtrigger.Trigger(
            name=f"{TRIGGER_PREFIX}_update_delete",
            level=pgtrigger.Row,
            when=pgtrigger.Before,
            operation=pgtrigger.Update | pgtrigger.Delete,
            func="RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;",
        ),
        pgtrigger.Trigger(
            name=f"{TRIGGER_PREFIX}_truncate",
            level=pgtrigger.Statement,
            when=pgtrigger.Before,
            operation=pgtrigger.Truncate,
            func="RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME;",
        ),
    ]


def sqlite_trigger_statements(table: str) -> list[str]:
    return [
        f'CREATE TRIGGER IF NOT EXISTS "{TRIGGER_PREFIX}_{table}_{operation.lower()}" '
        f'BEFORE {operation} ON "{table}" '
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END;"
        for operation in ("UPDATE", "DELETE")
    ]


def sqlite_append_only(*model_labels: str) -> migrations.RunPython:
    """A migration operation installing BEFORE UPDATE/DELETE triggers on SQLite (no-op elsewhere)."""

    def install(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        for label in model_labels:
            table = apps.get_model(label)._meta.db_table
            for statement in sqlite_trigger_statements(table):
                schema_editor.execute(statement)

    def uninstall(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        for label in model_labels:
            table = apps.get_model(label)._meta.db_table
            for operation in ("update", "delete"):
                schema_editor.execute(f'DROP TRIGGER IF EXISTS "{TRIGGER_PREFIX}_{table}_{operation}"')

    return migrations.RunPython(install, uninstall, elidable=False)


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model._meta.label} is append-only: rows cannot be updated.")

    def delete(self):
        raise AppendOnlyError(f"{self.model._meta.label} is append-only: rows cannot be deleted.")


class AppendOnlyModel(models.Model):
    """Rows are written once: save() of an existing row and delete() raise AppendOnlyError."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(
                f"{self._meta.label} is append-only: an existing row cannot be changed; record a correction."
            )
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{self._meta.label} is append-only: rows cannot be deleted.")


def _append_only_trigger_uris() -> list[str]:
    return [
        trigger.get_uri(model)
        for model, trigger in pgtrigger.registered()
        if trigger.name.startswith(TRIGGER_PREFIX)
    ]


@contextlib.contextmanager
def protections_lifted(using: str = "default"):
    """Lift the append-only triggers on this connection only, for the duration of the block.

    Used only to empty a *test* database between transactional tests (see the ledger's
    `flush` command); nothing in the application calls it."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with pgtrigger.ignore(*_append_only_trigger_uris(), databases=[using]):
            yield
        return
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE %s",
            [f"%{TRIGGER_PREFIX}%"],
        )
        triggers = cursor.fetchall()
        for name, _ in triggers:
            cursor.execute(f'DROP TRIGGER "{name}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for _, sql in triggers:
                cursor.execute(sql)
