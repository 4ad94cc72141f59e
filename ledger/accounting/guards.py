"""A database guard the append-only helper does not cover: balanced transactions.

PostgreSQL: a deferred constraint trigger refuses a commit in which a transaction's postings do not
sum to zero. SQLite has no deferred triggers, so there the zero sum is enforced by the service alone.
(UPDATE, DELETE and TRUNCATE are refused on every accounting table by `ledger.append_only`.)
"""

_PG_CHECK = """
CREATE OR REPLACE FUNCTION accounting_check_balanced() RETURNS trigger AS $$
DECLARE total numeric;
BEGIN
    -- Deferred events fire in insertion order, so a transaction's postings come together: sum them
    -- once, not once per posting (remembered until the end of the database transaction).
    IF current_setting('accounting.balanced_checked', true) = NEW.transaction_id::text THEN
        RETURN NULL;
    END IF;
    SELECT COALESCE(SUM(amount), 0) INTO total FROM accounting_posting
    WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'accounting transaction % postings sum to %, not zero', NEW.transaction_id, total;
    END IF;
    PERFORM set_config('accounting.balanced_checked', NEW.transaction_id::text, true);
    RETURN NULL;
END $$ LANGUAGE plpgsql
"""

def install_balance_check(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(_PG_CHECK, params=None)
    schema_editor.execute(
        "CREATE CONSTRAINT TRIGGER accounting_posting_balanced AFTER INSERT ON accounting_posting "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION accounting_check_balanced()"
    )


def uninstall_balance_check(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP TRIGGER IF EXISTS accounting_posting_balanced ON accounting_posting")
    schema_editor.execute("DROP FUNCTION IF EXISTS accounting_check_balanced()")
