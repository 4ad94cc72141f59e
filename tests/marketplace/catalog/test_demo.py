"""The demo seeding and the base-model command (run at the tiny size: same steps, a few optimisation steps)."""
import pytest
from django.core.management import CommandError, call_command

from ledger.models import Entry
from marketplace.models import BaseModel, Contributor, Expert, ExpertVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.BASE_MODEL_DIR = tmp_path / "var" / "base_models"
    return settings.VAR_DIR


def test_seed_demo_creates_people_and_validated_peft_experts_and_is_idempotent(var_dir, capsys):
    call_command("seed_demo", "--size", "tiny")
    output = capsys.readouterr().out

    assert BaseModel.objects.get().name == "mosaic-tiny-tiny"
    assert sorted(Contributor.objects.values_list("user__username", flat=True)) == ["ada", "alan", "grace"]
    assert Expert.objects.count() == 3
    assert set(ExpertVersion.objects.values_list("status", flat=True)) == {"valid"}
    assert all(expert.current_version_id for expert in Expert.objects.all())
    from django.contrib.auth import get_user_model
    users = get_user_model().objects
    assert users.get(username="operator").is_staff
    assert users.get(username="auditor").groups.filter(name="auditors").exists()
    assert "mosaic-demo-2026" in output and "Demo data ready" in output

    catalog_kinds = ("contributor.", "base_model.", "expert.", "license.", "alias.")
    entries = [e.kind for e in Entry.objects.all() if e.kind.startswith(catalog_kinds)]
    call_command("seed_demo", "--size", "tiny")

    assert Expert.objects.count() == 3 and ExpertVersion.objects.count() == 3
    assert [e.kind for e in Entry.objects.all() if e.kind.startswith(catalog_kinds)] == entries


def test_build_base_model_builds_registers_and_then_reuses(var_dir, tmp_path, capsys):
    directory = tmp_path / "bm"
    arguments = ["--name", "small", "--dir", str(directory), "--layers", "1", "--hidden", "32"]

    call_command("build_base_model", *arguments)
    call_command("build_base_model", *arguments)

    output = capsys.readouterr().out
    assert "Built" in output and "Reused" in output
    base_model = BaseModel.objects.get(name="small")
    assert (base_model.num_layers, base_model.hidden_size) == (1, 32)
    assert (directory / "model.safetensors").exists() and (directory / "tokenizer.json").exists()
    with pytest.raises(CommandError, match="already registered"):
        call_command("build_base_model", *arguments, "--force")
