"""The account references the marketplace posts to (opaque strings to the accounting app)."""
import re

PLATFORM_REVENUE = "platform:revenue"
PLATFORM_CASH = "platform:cash"
PAYOUTS_CLEARING = "payouts:clearing"
REFUNDS = "refunds"

_EARNING = re.compile(r"^system:(\d+)/expert:(\d+)$")


def receivable(organization_id: int) -> str:
    return f"organization:{organization_id}:receivable"


def payable(contributor_id: int) -> str:
    return f"contributor:{contributor_id}:payable"


def contributor_of(account: str) -> int | None:
    match = re.match(r"^contributor:(\d+):payable$", account)
    return int(match.group(1)) if match else None


def earning_dimension(system_id: int, expert_id: int) -> str:
    return f"system:{system_id}/expert:{expert_id}"


def parse_earning_dimension(dimension: str) -> tuple[int, int] | None:
    match = _EARNING.match(dimension)
    return (int(match.group(1)), int(match.group(2))) if match else None


def payout_dimension(payout_id: int) -> str:
    return f"payout:{payout_id}"
