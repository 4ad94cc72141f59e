"""Database-level guards for the accounting tables: append-only, and balanced transactions.

PostgreSQL: row triggers refuse UPDATE and DELETE, and a deferred constraint trigger refuses a
commit in which a transaction's postings do not sum to zero. SQLite: row triggers refuse UPDATE
and DELETE; SQLite has no deferred triggers, so the zero sum is enforced by the service alone.
"""

APPEND_ONLY_TABLES = ("accounting_transaction", "accounting_posting", "accounting_settlementperiod")

_PG_FUNCTIONS = [
    """
    CREATE OR REPLACE FUNCTION accounting_refuse_change() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'accounting table % is append-only: % refused', TG_TABLE_NAME, TG_OP;
    END $$ LANGUAGE plpgsql
    """,
    """
    CREATE OR REPLACE FUNCTION accounting_check_balanced() RETURNS trigger AS $$
    DECLARE total numeric;
    BEGIN
        SELECT COALESCE(SUM(amount), 0) INTO total FROM accounting_posting
        WHERE transaction_id = NEW.transaction_id;
        IF total <> 0 THEN
            RAISE EXCEPTION 'accounting transaction % postings sum to %, not zero', NEW.transaction_id, total;
        END IF;
        RETURN NULL;
    END $$ LANGUAGE plpgsql
    """,
]


def trigger_name(table: str) -> str:
    return f"{table}_append_only"


def install_append_only(schema_editor, tables) -> None:
    """Make `tables` refuse UPDATE and DELETE (PostgreSQL and SQLite)."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for sql in _PG_FUNCTIONS:
            schema_editor.execute(sql, params=None)
        for table in tables:
            schema_editor.execute(
                f"CREATE TRIGGER {trigger_name(table)} BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION accounting_refuse_change()"
            )
    elif vendor == "sqlite":
        for table in tables:
            for operation in ("UPDATE", "DELETE"):
                schema_editor.execute(
                    f"CREATE TRIGGER {trigger_name(table)}_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
                )


def uninstall_append_only(schema_editor, tables) -> None:
    vendor = schema_editor.connection.vendor
    for table in tables:
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger_name(table)} ON {table}")
        elif vendor == "sqlite":
            for operation in ("update", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger_name(table)}_{operation}")


def install(schema_editor) -> None:
    install_append_only(schema_editor, APPEND_ONLY_TABLES)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE CONSTRAINT TRIGGER accounting_posting_balanced AFTER INSERT ON accounting_posting "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION accounting_check_balanced()"
        )


def uninstall(schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP TRIGGER IF EXISTS accounting_posting_balanced ON accounting_posting")
    uninstall_append_only(schema_editor, APPEND_ONLY_TABLES)
