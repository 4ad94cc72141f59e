"""Helpers for catalog tests: API clients, multipart uploads, what is stored, ledger entries."""
import json
from pathlib import Path

from django.conf import settings
from django.test import TestCase
from rest_framework.test import APIClient

from ledger.models import Entry
from marketplace.models import Expert, ExpertVersion, LicenseTerms

BASE_NAME = "mosaic-tiny"
PASSWORD = "correct horse battery staple"


def api_client(contributor_or_user=None) -> APIClient:
    client = APIClient()
    if contributor_or_user is not None:
        user = getattr(contributor_or_user, "user", contributor_or_user)
        client.force_authenticate(user)
    return client


def adapter_files(directory: Path) -> dict:
    directory = Path(directory)
    return {
        "adapter_config": (directory / "adapter_config.json").open("rb"),
        "adapter_model": (directory / "adapter_model.safetensors").open("rb"),
    }


def expert_form(slug: str = "summarizer", **overrides) -> dict:
    form = {
        "name": slug.replace("-", " ").title(),
        "slug": slug,
        "description": "Summarises short texts.",
        "tags": ["summarization", "english"],
        "priorities": ["news"],
        "base_model": BASE_NAME,
        "spdx_id": "Apache-2.0",
        "commercial_use": "true",
        "derivatives_allowed": "true",
    }
    form.update(overrides)
    return {key: value for key, value in form.items() if value is not None}


def committed_post(client: APIClient, path: str, data: dict):
    """A multipart POST whose work queued for after the commit runs as the request ends, as it does outside a
    test, where the request's writes commit (the test's own transaction never does)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(path, data=data, format="multipart")


def upload_expert(client: APIClient, adapter_dir: Path | None = None, *, files: dict | None = None, **fields):
    """POST /api/experts as multipart with an adapter directory's two files (or the given `files`)."""
    data = expert_form(**fields)
    data.update(files if files is not None else adapter_files(adapter_dir))
    return committed_post(client, "/api/experts", data)


def upload_version(client: APIClient, expert_id: int, adapter_dir: Path | None = None, *, files: dict | None = None,
                   **fields):
    data = dict(fields)
    data.update(files if files is not None else adapter_files(adapter_dir))
    return committed_post(client, f"/api/experts/{expert_id}/versions", data)


def with_a_non_finite_weight(adapter_dir: Path, value: float = float("nan")) -> Path:
    """The adapter, with one weight set to `value` (NaN or infinity): it passes every check but the deep one."""
    from safetensors.torch import load_file, save_file

    weights = str(Path(adapter_dir) / "adapter_model.safetensors")
    tensors = load_file(weights)
    next(iter(tensors.values()))[0, 0] = value
    save_file(tensors, weights)
    return Path(adapter_dir)


def stored_files() -> list[str]:
    """Every file under the expert storage directory (staging included), relative."""
    root = Path(settings.EXPERT_STORAGE_DIR)
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir())


def ledger_entries(prefix: str = "") -> list[tuple[str, dict]]:
    return [(entry.kind, json.loads(bytes(entry.payload)))
            for entry in Entry.objects.filter(kind__startswith=prefix).order_by("sequence")]


def assert_nothing_stored() -> None:
    assert stored_files() == []
    assert Expert.objects.count() == 0
    assert ExpertVersion.objects.count() == 0
    assert LicenseTerms.objects.count() == 0
    assert [kind for kind, _ in ledger_entries()
            if kind.startswith(("expert.", "license.", "alias."))] == []


def error_message(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]["message"]
