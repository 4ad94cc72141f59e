"""Requests on a composed system -> allocation -> period close -> payout -> `ledger verify` green;
then a posting tampered behind the application's back makes it fail."""
import json
from datetime import date

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ledger.accounting.models import Posting
from ledger.append_only import protections_lifted
from marketplace.credit.payouts import send_pending_payouts
from marketplace.models import Payout
from tests.credit.conftest import signed_webhook, usage_on
from tests.second_factor import ready_for_payouts


@pytest.mark.django_db
def test_usage_to_payout_verifies_and_a_tampered_posting_is_caught(world, settings, stripe_server, client, capsys):
    settings.PAYOUT_MINIMUM_MINOR = 100
    a1, a2, b, c = world.experts
    for contributor in world.contributors:
        ready_for_payouts(contributor, stripe_account=f"acct_{contributor.user.username}")
    for n in range(12):
        usage_on(date(2026, 10, 1 + n), organization=world.organization, system=world.system, charge_minor=250 + n,
                 attribution={str(a1.id): "0.4", str(b.id): "0.35", str(c.id): "0.25"})

    call_command("allocate_credit")
    call_command("close_period", "--start", "2026-10-01", "--end", "2026-10-31")
    assert send_pending_payouts() == 3
    for payout in Payout.objects.all():
        body = json.dumps({"id": f"evt_paid_{payout.pk}", "type": "transfer.paid", "created": 1,
                           "data": {"object": {"id": payout.stripe_transfer_id, "object": "transfer",
                                               "metadata": {"payout_id": str(payout.pk)}}}}).encode()
        client.post("/api/stripe/connect-webhook", body, content_type="application/json",
                    HTTP_STRIPE_SIGNATURE=signed_webhook(body, settings.STRIPE_CONNECT_WEBHOOK_SECRET))
    assert set(Payout.objects.values_list("status", flat=True)) == {Payout.Status.PAID}

    capsys.readouterr()
    call_command("ledger", "verify")
    assert capsys.readouterr().out.startswith("OK")

    tampered = Posting.objects.filter(account__endswith=":payable").order_by("id").first()
    with protections_lifted(), connection.cursor() as cursor:
        cursor.execute("UPDATE accounting_posting SET amount = amount - 1 WHERE id = %s", [tampered.pk])
    try:
        with pytest.raises(CommandError, match="ledger does not verify"):
            call_command("ledger", "verify")
        assert "sum to -1, not zero" in capsys.readouterr().err
    finally:
        # Undo, so that PostgreSQL's deferred balance check passes when the test transaction ends.
        with protections_lifted(), connection.cursor() as cursor:
            cursor.execute("UPDATE accounting_posting SET amount = amount + 1 WHERE id = %s", [tampered.pk])
