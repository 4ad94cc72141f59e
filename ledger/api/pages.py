"""The ledger explorer for auditors (HTML over the same selectors as the API): entries with filters and
cursor pages, one entry with its inclusion proof, checkpoints with consistency proofs. The proofs are
checked by the page's own JavaScript (static/mosaic/ledger-verify.js) against the signed checkpoints."""
import json
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render

from ledger import selectors
from ledger.api.permissions import is_auditor
from ledger.api.views import b64
from ledger.kinds import KINDS
from ledger.signing import ledger_signer
from domain.errors import NotFound

ENTRIES_PER_PAGE = 50
CHECKPOINTS_PER_PAGE = 100


def auditors_only(view):
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_auditor(request.user):
            return render(request, "ledger/forbidden.html", status=403)
        return view(request, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


class EntryFilterForm(forms.Form):
    kind = forms.ChoiceField(required=False, choices=[("", "any kind")] + [(k, k) for k in sorted(KINDS)])
    actor = forms.CharField(required=False, max_length=200, help_text="e.g. contributor:3")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="from this day")
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="to this day, inclusive")
    expert = forms.IntegerField(required=False, min_value=0, help_text="entries that name expert:<id>")
    organization = forms.IntegerField(required=False, min_value=0, help_text="entries that name organization:<id>")
    before = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def selection(self) -> dict:
        data = self.cleaned_data
        midnight = lambda day: datetime.combine(day, time.min, tzinfo=UTC)  # noqa: E731
        return {
            "kind": data["kind"] or None,
            "actor": data["actor"] or None,
            "since": midnight(data["since"]) if data["since"] else None,
            "until": midnight(data["until"] + timedelta(days=1)) if data["until"] else None,
            "sequence_to": data["before"] - 1 if data["before"] is not None else None,
        }

    def mentions(self) -> list[str]:
        return [f"{name}:{self.cleaned_data[name]}" for name in ("expert", "organization")
                if self.cleaned_data.get(name) is not None]


@auditors_only
def entry_list(request):
    """Newest entries first; "older" pages on with the sequence cursor `before`."""
    form = EntryFilterForm(request.GET or None)
    if request.GET and not form.is_valid():
        return render(request, "ledger/entries.html", {"form": form, "entries": []}, status=400)
    selection = form.selection() if request.GET else {}
    if selection.get("sequence_to") == -1:
        entries = []
    else:
        queryset = selectors.entry_list(**selection)
        for reference in form.mentions() if request.GET else []:
            queryset = selectors.entries_mentioning(queryset, reference=reference)
        entries = list(queryset.order_by("-sequence")[: ENTRIES_PER_PAGE + 1])
    older = entries[ENTRIES_PER_PAGE].sequence + 1 if len(entries) > ENTRIES_PER_PAGE else None
    query = request.GET.copy()
    if older is not None:
        query["before"] = older
    return render(request, "ledger/entries.html", {
        "form": form, "entries": entries[:ENTRIES_PER_PAGE], "older_query": query.urlencode() if older else "",
        "checkpoint": selectors.checkpoint_latest(),
    })


@auditors_only
def entry_detail(request, sequence: int):
    try:
        entry = selectors.entry_get(sequence=sequence)
    except NotFound as error:
        return render(request, "ledger/not_found.html", {"message": error.message}, status=404)
    checkpoint = selectors.checkpoint_latest()
    covered = checkpoint is not None and checkpoint.tree_size > entry.sequence
    proof = [b64(h) for h in selectors.inclusion_proof(entry=entry, checkpoint=checkpoint)] if covered else []
    payload = json.dumps(json.loads(bytes(entry.payload)), indent=2, ensure_ascii=False, sort_keys=True)
    return render(request, "ledger/entry.html", {
        "entry": entry, "leaf_data": selectors.entry_leaf_data(entry).decode(), "payload": payload,
        "leaf_hash": bytes(entry.leaf_hash).hex(), "prev_hash": bytes(entry.prev_hash).hex(),
        "checkpoint": checkpoint if covered else None, "proof": proof,
        "verifier_key": ledger_signer().verifier_key,
    })


@auditors_only
def checkpoint_list(request):
    """The latest checkpoints; any two of them can be checked for consistency in the browser."""
    checkpoints = list(selectors.checkpoint_list().order_by("-id")[:CHECKPOINTS_PER_PAGE])
    for checkpoint in checkpoints:
        checkpoint.root_b64 = b64(bytes(checkpoint.root_hash))
    return render(request, "ledger/checkpoints.html", {
        "checkpoints": checkpoints,
        "notes": {str(c.pk): c.note for c in checkpoints},
        "verifier_key": ledger_signer().verifier_key,
    })


# Kinds anyone may read in full: what was contributed and under which terms, what was composed from it (and
# what its strategy learned), consent withdrawn or given back. Organizations' usage, credit and payouts are counted, never listed, and
# neither is an entry that names an organization (a system private to it).
PUBLIC_KINDS = ("base_model.registered", "expert.contributed", "expert.validated", "license.set",
                "system.composed", "composition.optimised", "consent.revoked", "consent.restored")
PUBLIC_ENTRIES_SHOWN = 100


def _names_an_organization(payload: dict) -> bool:
    """A system private to an organization (its `owner_organization`) is that organization's business."""
    return any(isinstance(value, str) and value.startswith("organization:") for value in payload.values())


def transparency(request):
    """No login: the latest signed checkpoint, the verifier key, counts by kind and the public entries."""
    entries = []
    for entry in selectors.entry_list().filter(kind__in=PUBLIC_KINDS).order_by("-sequence").iterator(chunk_size=200):
        payload = json.loads(bytes(entry.payload))
        if _names_an_organization(payload):
            continue
        entry.payload_text = bytes(entry.payload).decode()
        entries.append(entry)
        if len(entries) == PUBLIC_ENTRIES_SHOWN:
            break
    return render(request, "ledger/transparency.html", {
        "checkpoint": selectors.checkpoint_latest(), "verifier_key": ledger_signer().verifier_key,
        "counts": selectors.entry_counts_by_kind(), "entries": entries, "public_kinds": PUBLIC_KINDS,
    })
