"""The account references the marketplace posts to (opaque strings to the accounting app).

Amounts are signed integer minor units: a debit is positive, a credit negative. So a contributor's
payable is negative while Mosaic owes them money (the API shows it as a positive balance).

    credit.allocated   organization:<id>:receivable  +charge
                       platform:revenue              -(fee + whatever no contributor could earn)
                       contributor:<id>:payable      -earned        (dimension system:<s>/expert:<e>)
    credit.reversed    the negation of a usage's allocation (refund: against the receivable;
                       chargeback: against `refunds`), or of a failed payout's legs
    payout.created     contributor:<id>:payable +amount, payouts:clearing -amount  (dimension payout:<id>)
    payout.paid        payouts:clearing +amount, platform:cash -amount
"""
import re

from marketplace.models import ComposedSystem, Contributor, Expert, Organization, Payout

PLATFORM_REVENUE = "platform:revenue"
PLATFORM_CASH = "platform:cash"
PAYOUTS_CLEARING = "payouts:clearing"
REFUNDS = "refunds"

_EARNING = re.compile(r"^system:(\d+)/expert:(\d+)$")


def receivable(organization_id: int) -> str:
    return f"{Organization.ref_for(organization_id)}:receivable"


def payable(contributor_id: int) -> str:
    return f"{Contributor.ref_for(contributor_id)}:payable"


def contributor_of(account: str) -> int | None:
    match = re.match(r"^contributor:(\d+):payable$", account)
    return int(match.group(1)) if match else None


def earning_dimension(system_id: int, expert_id: int) -> str:
    return f"{ComposedSystem.ref_for(system_id)}/{Expert.ref_for(expert_id)}"


def system_dimension(system_id: int) -> str:
    """The platform's revenue from a system (what no contributor could earn)."""
    return ComposedSystem.ref_for(system_id)


def parse_earning_dimension(dimension: str) -> tuple[int, int] | None:
    match = _EARNING.match(dimension)
    return (int(match.group(1)), int(match.group(2))) if match else None


def payout_dimension(payout_id: int) -> str:
    return Payout.ref_for(payout_id)
