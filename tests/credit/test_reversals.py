"""Refunds, disputes and credit notes, delivered as signed Stripe webhooks, take back the credit of the usage the
invoice paid for: pro rata, in exact integers, each reversal a transaction naming the Stripe object, once per event
whatever the order of delivery."""
import json
from datetime import UTC, date, datetime, time, timedelta

import pytest
import stripe
from django.core.management import call_command

from ledger.accounting.models import Transaction
from ledger.accounting.selectors import account_balance, balances
from marketplace.credit.accounts import PLATFORM_REVENUE, REFUNDS, payable, receivable
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.credit.payouts import mark_paid
from marketplace.credit.settlement import close_period
from marketplace.models import CreditStatement, Payout, Usage
from tests.credit.factories import UsageFactory
from tests.marketplace.conftest import localstripe_url, stripe_api  # noqa: F401  (fixtures)
from tests.second_factor import ready_for_payouts

pytestmark = pytest.mark.django_db
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def post_event(client, settings, event: dict) -> str:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, settings.STRIPE_WEBHOOK_SECRET)
    response = client.post("/api/stripe/webhook", payload, content_type="application/json",
                           HTTP_STRIPE_SIGNATURE=header)
    assert response.status_code == 200, response.content
    return response.json()["result"]


def event(event_id: str, type_: str, obj: dict, created: int = 1_800_000_000) -> dict:
    return {"id": event_id, "object": "event", "type": type_, "created": created, "data": {"object": obj}}


def usage_at(moment: datetime, world, charge: int, attribution: dict) -> Usage:
    usage = UsageFactory(organization=world.organization, system=world.system, charge_minor=charge,
                         attribution=attribution)
    Usage.objects.filter(pk=usage.pk).update(created_at=moment)
    return usage


def verifies(capsys) -> bool:
    capsys.readouterr()
    call_command("ledger", "verify")
    return capsys.readouterr().out.startswith("OK")


def nonzero(values: dict) -> dict:
    return {key: value for key, value in values.items() if value}


# --- refunds through localstripe ---------------------------------------------------------------------------------


@pytest.fixture
def paid_invoice(world, stripe_api):  # noqa: F811
    """The organization's first invoice, paid in localstripe (a 5000 subscription fee), and the allocation of the
    usage it paid for: usage inside the invoice's period, plus one usage before it that it did not pay for."""
    stripe.api_base, stripe.api_key = stripe_api, "sk_test_mosaic"
    card = stripe.PaymentMethod.create(
        type="card", card={"number": "4242424242424242", "exp_month": "12", "exp_year": "2030", "cvc": "123"}
    ).id
    customer = stripe.Customer.create(name="org", payment_method=card, invoice_settings={"default_payment_method": card})
    product = stripe.Product.create(name="Team")
    plan = stripe.Plan.create(product=product.id, amount=5000, currency="eur", interval="month", usage_type="licensed")
    stripe.Subscription.create(customer=customer.id, items=[{"plan": plan.id}])
    invoice = stripe.Invoice.list(customer=customer.id).data[0].to_dict()
    world.organization.stripe_customer_id = customer.id
    world.organization.save()

    a1, a2, b, c = world.experts
    start = datetime.fromtimestamp(invoice["period_start"], tz=UTC)
    usage_at(start - timedelta(hours=1), world, 999, {str(a1.id): "1"})
    allocate_pending_usage(until=FAR_FUTURE)
    before = balances()
    for n, (charge, attribution) in enumerate([
        (1234, {str(a1.id): "0.5", str(b.id): "0.5"}),
        (777, {str(a2.id): "0.2", str(c.id): "0.8"}),
        (4001, {str(a1.id): "0.3", str(b.id): "0.3", str(c.id): "0.4"}),
    ]):
        usage_at(start + timedelta(minutes=n + 1), world, charge, attribution)
    allocate_pending_usage(until=FAR_FUTURE)
    return invoice, before, balances()


def charge_of(invoice: dict) -> str:
    return stripe.PaymentIntent.retrieve(invoice["payment_intent"]).latest_charge.id


def test_a_full_refund_takes_back_exactly_what_the_invoice_paid_for(paid_invoice, client, settings, capsys):
    invoice, before, _ = paid_invoice
    charge_id = charge_of(invoice)
    stripe.Refund.create(charge=charge_id)
    charge = stripe.Charge.retrieve(charge_id).to_dict()

    assert post_event(client, settings, event("evt_refund", "charge.refunded", charge)) == "reversed"

    assert nonzero(balances()) == nonzero(before)
    reversal = Transaction.objects.get(kind="credit.reversed")
    assert reversal.reference == f"stripe:{charge_id}:evt_refund"
    assert reversal.memo["stripe_object"] == charge_id and reversal.memo["invoice"] == invoice["id"]
    assert verifies(capsys)


def test_a_partial_refund_takes_back_each_lines_share_to_within_one_unit_and_exactly_in_total(
    paid_invoice, client, settings, capsys
):
    invoice, before, allocated = paid_invoice
    charge_id = charge_of(invoice)
    stripe.Refund.create(charge=charge_id, amount=2000)

    post_event(client, settings, event("evt_partial", "charge.refunded", stripe.Charge.retrieve(charge_id).to_dict()))

    reversal = Transaction.objects.get(kind="credit.reversed")
    usage_charged = 1234 + 777 + 4001
    credited = [p for p in reversal.postings.all() if p.account != receivable(invoice_org(invoice))]
    assert sum(p.amount for p in credited) == usage_charged * 2000 // 5000
    earned = {}
    for p in Transaction.objects.filter(kind="credit.allocated").order_by("id").last().postings.all():
        earned[(p.account, p.dimension)] = earned.get((p.account, p.dimension), 0) - p.amount
    for p in credited:
        assert abs(p.amount - earned[(p.account, p.dimension)] * 2000 / 5000) < 1, p
        assert p.amount >= 0
    assert verifies(capsys)


def invoice_org(invoice: dict) -> int:
    from marketplace.models import Organization

    return Organization.objects.get(stripe_customer_id=invoice["customer"]).pk


def test_refund_events_replayed_or_late_change_nothing_and_a_larger_refund_takes_back_the_rest(
    paid_invoice, client, settings
):
    invoice, before, _ = paid_invoice
    charge_id = charge_of(invoice)
    stripe.Refund.create(charge=charge_id, amount=1000)
    first = stripe.Charge.retrieve(charge_id).to_dict()
    stripe.Refund.create(charge=charge_id, amount=4000)
    full = stripe.Charge.retrieve(charge_id).to_dict()

    assert post_event(client, settings, event("evt_full", "charge.refunded", full, created=200)) == "reversed"
    assert post_event(client, settings, event("evt_first", "charge.refunded", first, created=100)) == "unchanged"
    assert post_event(client, settings, event("evt_full", "charge.refunded", full, created=200)) == "duplicate"

    assert Transaction.objects.filter(kind="credit.reversed").count() == 1
    assert nonzero(balances()) == nonzero(before)


# --- disputes and credit notes (localstripe has neither: the exact requests are checked) --------------------------


def midnight(day: date) -> int:
    return int(datetime.combine(day, time.min, tzinfo=UTC).timestamp())


@pytest.fixture
def months():
    """(first, second): the two whole months before this one."""
    second_end = date.today().replace(day=1) - timedelta(days=1)
    first_end = second_end.replace(day=1) - timedelta(days=1)
    return (first_end.replace(day=1), first_end), (second_end.replace(day=1), second_end)


@pytest.fixture
def invoiced_month(world, stripe_server, months):
    """Usage in the first month, allocated, and the Stripe invoice (in_d, paid by charge ch_d) for that month."""
    (start, end), _ = months
    world.organization.stripe_customer_id = "cus_d"
    world.organization.save()
    a1, a2, b, c = world.experts
    for day, charge, attribution in [(2, 3001, {str(a1.id): "0.6", str(b.id): "0.4"}),
                                     (9, 2002, {str(c.id): "1"}),
                                     (20, 1500, {str(a2.id): "0.5", str(c.id): "0.5"})]:
        usage_at(datetime.combine(start + timedelta(days=day - 1), time(12), tzinfo=UTC), world, charge, attribution)
    allocate_pending_usage(until=FAR_FUTURE)
    stripe_server.objects["/v1/charges/ch_d"] = {
        "id": "ch_d", "object": "charge", "amount": 9000, "amount_refunded": 0, "invoice": "in_d", "customer": "cus_d"}
    stripe_server.objects["/v1/invoices/in_d"] = {
        "id": "in_d", "object": "invoice", "customer": "cus_d", "total": 9000, "amount_paid": 9000,
        "period_start": midnight(start), "period_end": midnight(end + timedelta(days=1))}
    return stripe_server


def dispute(status: str, amount: int = 9000) -> dict:
    return {"id": "dp_1", "object": "dispute", "charge": "ch_d", "amount": amount, "status": status}


def payables(world) -> dict[int, int]:
    return {c.pk: account_balance(account=payable(c.pk)) for c in world.contributors}


def test_a_dispute_reads_its_charge_and_invoice_from_stripe_and_a_won_dispute_restores_the_credit(
    world, invoiced_month, client, settings, capsys
):
    before = payables(world)

    assert post_event(client, settings, event("evt_d1", "charge.dispute.created", dispute("needs_response"))) == "reversed"
    assert [(r["method"], r["path"]) for r in invoiced_month.requests] == [
        ("GET", "/v1/charges/ch_d"), ("GET", "/v1/invoices/in_d")]
    assert payables(world) == {c: 0 for c in before}  # the whole charge was disputed
    assert account_balance(account=REFUNDS) == -(3001 + 2002 + 1500)

    assert post_event(client, settings, event("evt_d2", "charge.dispute.closed", dispute("won"), 1_800_000_100)) == "restored"
    assert payables(world) == before
    assert account_balance(account=REFUNDS) == 0
    assert verifies(capsys)


def test_a_lost_dispute_delivered_before_its_opening_ends_as_in_order_delivery(world, invoiced_month, client, settings):
    assert post_event(client, settings, event("evt_d2", "charge.dispute.closed", dispute("lost", 4500), 200)) == "reversed"
    assert post_event(client, settings, event("evt_d1", "charge.dispute.created", dispute("needs_response", 4500), 100)) == "unchanged"
    assert account_balance(account=REFUNDS) == -((3001 + 2002 + 1500) * 4500 // 9000)


def test_a_dispute_lost_after_the_payout_leaves_a_negative_balance_that_the_next_period_recovers(
    world, invoiced_month, client, settings, months
):
    (start, end), (next_start, next_end) = months
    settings.PAYOUT_MINIMUM_MINOR = 100
    for contributor in world.contributors:
        ready_for_payouts(contributor, stripe_account=f"acct_{contributor.pk}")
    close_period(start=start, end=end)
    paid = {p.contributor_id: p.amount_minor for p in Payout.objects.all()}
    for payout in Payout.objects.all():
        mark_paid(payout_id=payout.pk)
    assert set(paid) == {c.pk for c in world.contributors}

    disputed_on = midnight(next_start + timedelta(days=2))
    post_event(client, settings, event("evt_d1", "charge.dispute.created", dispute("needs_response"), disputed_on))
    post_event(client, settings, event("evt_d2", "charge.dispute.closed", dispute("lost"), disputed_on + 86400))
    assert payables(world) == paid  # positive payable: each contributor owes back what they were paid

    alice, bob, charlie = world.contributors
    a1, a2, b, c = world.experts
    usage_at(datetime.combine(next_start + timedelta(days=5), time(12), tzinfo=UTC), world, 20000,
             {str(a1.id): "0.5", str(b.id): "0.5"})
    allocate_pending_usage(until=FAR_FUTURE)
    earned = {k: paid[k] - v for k, v in payables(world).items()}  # what the new usage earned each

    close_period(start=next_start, end=next_end)

    second = {p.contributor_id: p.amount_minor for p in Payout.objects.filter(period__start_date=next_start)}
    assert second == {alice.pk: earned[alice.pk] - paid[alice.pk], bob.pk: earned[bob.pk] - paid[bob.pk]}
    statement = CreditStatement.objects.get(contributor=charlie, period__start_date=next_start)
    assert statement.closing_minor == -paid[charlie.pk] and statement.payout_minor == 0
    reversals = [line for line in statement.lines if line["kind"] == "credit.reversed"]
    assert reversals and {line["reference"] for line in reversals} == {"dp_1"}
    assert sum(line["amount_minor"] for line in reversals) == -paid[charlie.pk]


def test_a_credit_note_takes_back_its_unrefunded_part_and_voiding_it_restores_the_credit(
    world, invoiced_month, client, settings
):
    before = balances()
    note = {"id": "cn_1", "object": "credit_note", "invoice": "in_d", "status": "issued", "total": 3000,
            "amount": 3000, "refunds": [{"amount_refunded": 750, "refund": "re_1"}]}

    assert post_event(client, settings, event("evt_c1", "credit_note.created", note)) == "reversed"
    charged = 3001 + 2002 + 1500
    assert account_balance(account=receivable(world.organization.pk)) - before[receivable(world.organization.pk)] == (
        -(charged * 2250 // 9000))
    assert account_balance(account=PLATFORM_REVENUE) > before[PLATFORM_REVENUE]

    post_event(client, settings, event("evt_c2", "credit_note.voided", {**note, "status": "void"}, 1_800_000_100))
    assert nonzero(balances()) == nonzero(before)


def test_a_refund_of_a_charge_for_someone_else_changes_nothing(world, invoiced_month, client, settings):
    invoiced_month.objects["/v1/invoices/in_d"]["customer"] = "cus_stranger"
    before = balances()

    result = post_event(client, settings, event("evt_r", "charge.refunded",
                                                {"id": "ch_d", "object": "charge", "amount": 9000,
                                                 "amount_refunded": 9000, "invoice": "in_d"}))

    assert result == "not a Mosaic customer"
    assert balances() == before


def test_a_statement_shows_each_reversal_on_its_own_line(world, invoiced_month, client, settings, months):
    (start, end), (next_start, next_end) = months
    close_period(start=start, end=end)
    same_day = midnight(next_start + timedelta(days=3))
    post_event(client, settings, event("evt_d1", "charge.dispute.created", dispute("needs_response", 3000), same_day))
    note = {"id": "cn_1", "object": "credit_note", "invoice": "in_d", "status": "issued", "total": 3000}
    post_event(client, settings, event("evt_c1", "credit_note.created", note, same_day))

    close_period(start=next_start, end=next_end)

    charlie = world.contributors[2]
    lines = CreditStatement.objects.get(contributor=charlie, period__start_date=next_start).lines
    dimensions = {line["expert_id"] for line in lines}
    assert sorted((line["expert_id"], line["reference"]) for line in lines) == sorted(
        (expert, reference) for expert in dimensions for reference in ("cn_1", "dp_1"))
