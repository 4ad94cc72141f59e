"""Contributor statements for a closed period: per system, per expert, per day; CSV and HTML."""
import csv
import io
from dataclasses import dataclass

from django.template.loader import render_to_string

from marketplace.credit import accounts
from marketplace.models import ComposedSystem, CreditStatement, Expert, LicenseTerms

CSV_COLUMNS = ["day", "system_id", "system", "expert_id", "expert", "attribution", "kind", "amount_minor", "reference"]


@dataclass(frozen=True)
class Names:
    systems: dict[int, str]
    experts: dict[int, str]
    attributions: dict[int, str]


def names_for(*, dimensions: set[str]) -> Names:
    """Readable names for the systems and experts in posting dimensions. An expert whose license
    requires attribution gets an attribution line naming it, its contributor and its license."""
    pairs = [p for p in (accounts.parse_earning_dimension(d) for d in dimensions) if p]
    system_ids = {s for s, _ in pairs}
    expert_ids = {e for _, e in pairs}
    systems = dict(ComposedSystem.objects.filter(id__in=system_ids).values_list("id", "slug"))
    experts = {}
    attributions = {}
    rows = Expert.objects.filter(id__in=expert_ids).select_related("owner").values(
        "id", "name", "owner__display_name", "license_id"
    )
    licenses = {
        row["id"]: row
        for row in LicenseTerms.objects.filter(id__in=[r["license_id"] for r in rows if r["license_id"]]).values(
            "id", "spdx_id", "attribution_required"
        )
    }
    for row in rows:
        experts[row["id"]] = row["name"]
        license = licenses.get(row["license_id"])
        if license and license["attribution_required"]:
            attributions[row["id"]] = f"{row['name']} by {row['owner__display_name']} ({license['spdx_id']})"
    return Names(systems=systems, experts=experts, attributions=attributions)


def statement_line(*, dimension: str, day, kind: str, posted: int, names: Names, reference: str = "") -> dict:
    """One row; `posted` is the payable posting sum (credit negative), shown as earned (positive). `reference` names
    the Stripe object (refund, dispute, credit note) a reversal's row is for."""
    earning = accounts.parse_earning_dimension(dimension)
    system_id, expert_id = earning if earning else (None, None)
    return {
        "day": day.isoformat(),
        "system_id": system_id,
        "system": names.systems.get(system_id, "") if system_id else "",
        "expert_id": expert_id,
        "expert": names.experts.get(expert_id, "") if expert_id else dimension,
        "attribution": names.attributions.get(expert_id, "") if expert_id else "",
        "kind": kind,
        "amount_minor": -posted,
        "reference": reference,
    }


def statement_csv(*, lines: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue()


def statement_html(*, statement: CreditStatement) -> str:
    return render_to_string(
        "credit/statement.html",
        {
            "statement": statement,
            "contributor": statement.contributor,
            "period": statement.period,
            "lines": statement.lines,
            "named_experts": sorted({line["attribution"] for line in statement.lines if line["attribution"]}),
        },
    )
