"""Uploading experts and versions: the happy path, content addressing, the alias, the ledger."""
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from marketplace.models import Expert, ExpertVersion
from marketplace.uploads import content_sha256
from mosaic.celery import app
from tests.helpers import tar_directory, zip_directory
from tests.marketplace.catalog.support import (
    adapter_files,
    error_message,
    expert_form,
    ledger_entries,
    stored_files,
    upload_expert,
    upload_version,
)
from django.core.files.uploadedfile import SimpleUploadedFile

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)  # committed uploads: validation runs inside the request, as in use
def test_upload_validates_the_adapter_and_points_the_alias_at_it(alice_api, base_model, adapter_dirs):
    response = upload_expert(alice_api, adapter_dirs["qv"], slug="summarizer")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "valid"
    assert body["current_version"] == 1
    assert body["version"]["number"] == 1
    assert body["version"]["failure_reason"] == ""
    assert body["version"]["rank"] == 4
    assert body["version"]["target_modules"] == ["q_proj", "v_proj"]
    assert body["license"]["spdx_id"] == "Apache-2.0"
    assert body["tags"] == ["english", "summarization"]
    assert body["owner"] == "alice"


@pytest.fixture
def queued_validations(monkeypatch):
    """The version ids handed to the validation task's queue (not run)."""
    from marketplace.tasks import validate_expert_version

    queued = []
    monkeypatch.setattr(validate_expert_version, "delay", queued.append)
    return queued


def upload_in_the_current_transaction(client, adapter_dir):
    return client.post("/api/experts", data={**expert_form(), **adapter_files(adapter_dir)}, format="multipart")


def test_an_upload_queues_its_validation_once_it_commits(alice_api, base_model, adapter_dirs, queued_validations,
                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as on_commit:
        response = upload_in_the_current_transaction(alice_api, adapter_dirs["qv"])
        assert response.status_code == 201, response.content
        assert queued_validations == []

    for callback in on_commit:
        callback()
    assert queued_validations == [ExpertVersion.objects.get().pk]


class RolledBack(Exception):
    pass


def test_a_rolled_back_upload_queues_nothing(alice_api, base_model, adapter_dirs, queued_validations,
                                             django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RolledBack), transaction.atomic():
            assert upload_in_the_current_transaction(alice_api, adapter_dirs["qv"]).status_code == 201
            raise RolledBack

    assert queued_validations == []
    assert not ExpertVersion.objects.exists()


def test_upload_stores_files_at_their_content_address(alice_api, base_model, adapter_dirs):
    response = upload_expert(alice_api, adapter_dirs["qv"])

    sha = content_sha256(adapter_dirs["qv"])
    assert response.json()["version"]["sha256"] == sha
    assert stored_files() == [f"{sha}/adapter_config.json", f"{sha}/adapter_model.safetensors"]
    stored = Path(settings.EXPERT_STORAGE_DIR) / sha / "adapter_model.safetensors"
    assert stored.read_bytes() == (adapter_dirs["qv"] / "adapter_model.safetensors").read_bytes()


def test_upload_writes_contribution_license_validation_and_alias_to_the_ledger(alice_api, base_model, adapter_dirs):
    expert_id = upload_expert(alice_api, adapter_dirs["qv"]).json()["id"]

    entries = [(kind, payload) for kind, payload in ledger_entries()
               if kind.split(".")[0] in ("expert", "license", "alias")]
    assert [kind for kind, _ in entries] == ["expert.contributed", "license.set", "expert.validated", "alias.moved"]
    contributed = entries[0][1]
    assert contributed["expert"] == f"expert:{expert_id}"
    assert contributed["owner"] == f"contributor:{Expert.objects.get().owner_id}"
    assert contributed["sha256"] == content_sha256(adapter_dirs["qv"])
    assert entries[1][1]["terms"]["spdx_id"] == "Apache-2.0"
    assert entries[3][1]["from_version"] is None and entries[3][1]["to_version"] == 1


def test_a_version_is_pending_until_the_task_validates_it(alice_api, base_model, adapter_dirs):
    from marketplace.tasks import validate_expert_version

    app.conf.task_always_eager = False  # the task is queued on the in-memory broker, not run
    response = upload_expert(alice_api, adapter_dirs["qv"])
    app.conf.task_always_eager = True

    version = ExpertVersion.objects.get()
    assert response.json()["version"]["status"] == "pending"
    assert Expert.objects.get().current_version is None

    assert validate_expert_version(version.pk) == "valid"
    version.refresh_from_db()
    assert version.status == "valid" and version.validated_at is not None
    assert Expert.objects.get().current_version == version


def test_zip_and_tar_archives_give_the_same_content_address_as_the_two_files(alice_api, base_model, adapter_dirs):
    sha = content_sha256(adapter_dirs["qv"])
    as_zip = SimpleUploadedFile("adapter.zip", zip_directory(adapter_dirs["qv"], folder="my-adapter"))
    as_tar = SimpleUploadedFile("adapter.tar.gz", tar_directory(adapter_dirs["qv"]))

    first = upload_expert(alice_api, files={"adapter_archive": as_zip}, slug="zipped")
    second = upload_expert(alice_api, files={"adapter_archive": as_tar}, slug="tarred")

    assert first.status_code == 201, first.content
    assert second.status_code == 201, second.content
    assert first.json()["version"]["sha256"] == second.json()["version"]["sha256"] == sha
    assert stored_files() == [f"{sha}/adapter_config.json", f"{sha}/adapter_model.safetensors"]


@pytest.mark.django_db(transaction=True)  # committed uploads: validation runs inside the request, as in use
def test_a_new_version_moves_the_alias_to_it(alice_api, base_model, adapter_dirs):
    expert_id = upload_expert(alice_api, adapter_dirs["qv"]).json()["id"]

    response = upload_version(alice_api, expert_id, adapter_dirs["qv2"])

    assert response.status_code == 201, response.content
    assert response.json()["number"] == 2
    assert response.json()["status"] == "valid"
    assert alice_api.get(f"/api/experts/{expert_id}").json()["current_version"] == 2
    moved = [payload for kind, payload in ledger_entries("alias.")]
    assert [(m["from_version"], m["to_version"]) for m in moved] == [(None, 1), (1, 2)]


def test_identical_content_is_refused_as_a_new_version(alice_api, base_model, adapter_dirs):
    expert_id = upload_expert(alice_api, adapter_dirs["qv"]).json()["id"]
    files_before = stored_files()

    response = upload_version(alice_api, expert_id, adapter_dirs["qv"])

    assert response.status_code == 409
    assert "identical to version 1" in error_message(response)
    assert ExpertVersion.objects.count() == 1
    assert stored_files() == files_before


@pytest.mark.django_db(transaction=True)  # committed uploads: validation runs inside the request, as in use
def test_a_version_that_fails_the_deep_check_keeps_the_alias_on_the_last_valid_one(
    alice_api, base_model, adapter_dirs, adapter_copy
):
    from safetensors.torch import load_file, save_file

    expert_id = upload_expert(alice_api, adapter_dirs["qv"]).json()["id"]
    broken = adapter_copy("qv2")
    tensors = load_file(str(broken / "adapter_model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(broken / "adapter_model.safetensors"))

    response = upload_version(alice_api, expert_id, broken)

    assert response.status_code == 201
    assert response.json()["status"] == "failed"
    assert "NaN" in response.json()["failure_reason"] and name in response.json()["failure_reason"]
    assert alice_api.get(f"/api/experts/{expert_id}").json()["current_version"] == 1
    failed = [payload for kind, payload in ledger_entries("expert.failed")]
    assert len(failed) == 1 and "NaN" in failed[0]["reason"] and failed[0]["version"] == 2


def test_new_license_terms_are_a_new_row_and_a_ledger_entry(alice_api, base_model, adapter_dirs):
    expert_id = upload_expert(alice_api, adapter_dirs["qv"]).json()["id"]

    response = alice_api.put(f"/api/experts/{expert_id}/license", {
        "spdx_id": "CC-BY-NC-4.0", "commercial_use": False, "attribution_required": True,
        "prohibited_domains": ["medical"],
    }, format="json")

    assert response.status_code == 200, response.content
    expert = Expert.objects.get()
    assert expert.license_history.count() == 2
    assert expert.license.as_terms() == {
        "spdx_id": "CC-BY-NC-4.0", "commercial_use": False, "derivatives_allowed": True,
        "attribution_required": True, "share_alike": False, "allowed_domains": [], "prohibited_domains": ["medical"],
    }
    assert [payload["terms"]["spdx_id"] for kind, payload in ledger_entries("license.set")] == [
        "Apache-2.0", "CC-BY-NC-4.0"]


def test_model_card_metadata_fills_fields_the_form_leaves_out(alice_api, base_model, adapter_dirs):
    card = ("---\nlicense: mit\nbase_model: mosaic-tiny\ntags: [Poetry, rhyme]\n"
            "description: Writes rhymes.\n---\n# Rhymer\n")

    response = upload_expert(alice_api, adapter_dirs["qv"], spdx_id=None, base_model=None, tags=None,
                             description=None, model_card=card)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["license"]["spdx_id"] == "mit"
    assert body["tags"] == ["poetry", "rhyme"]
    assert body["description"] == "Writes rhymes."
    assert body["version"]["card_metadata"]["base_model"] == "mosaic-tiny"


def test_validate_pending_requeues_versions_left_pending(alice_api, base_model, adapter_dirs, capsys):
    from django.core.management import call_command

    app.conf.task_always_eager = False
    upload_expert(alice_api, adapter_dirs["qv"])
    app.conf.task_always_eager = True
    assert ExpertVersion.objects.get().status == "pending"

    call_command("validate_pending")

    assert ExpertVersion.objects.get().status == "valid"
    assert Expert.objects.get().current_version.number == 1
    assert "1 pending" in capsys.readouterr().out


def test_license_terms_that_contradict_themselves_are_refused(alice_api, base_model, adapter_dirs):
    expert_id = upload_expert(alice_api, adapter_dirs["qv"]).json()["id"]

    response = alice_api.put(f"/api/experts/{expert_id}/license", {
        "spdx_id": "MIT", "allowed_domains": ["legal", "medical"], "prohibited_domains": ["medical"],
    }, format="json")

    assert response.status_code == 400
    assert "both allowed and prohibited" in error_message(response)
    assert Expert.objects.get().license_history.count() == 1


def test_a_tag_may_be_namespaced_with_a_colon():
    from marketplace.services.experts import clean_tags

    assert clean_tags(["demo", "Skill:add"]) == ["demo", "skill:add"]
