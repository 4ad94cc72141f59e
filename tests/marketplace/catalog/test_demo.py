"""The demo seeding (on the toy world: the same steps, two optimisation steps per expert) and the base-model
command."""
import pytest
from django.core.management import CommandError, call_command

from composition.skills import SKILLS
from ledger.models import Checkpoint, Entry
from marketplace.demo import DEFAULT_SYSTEM
from marketplace.models import BaseModel, ComposedSystem, Contributor, Expert, ExpertVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.BASE_MODEL_DIR = tmp_path / "var" / "base_models"
    settings.TRAINED_EXPERTS_DIR = tmp_path / "var" / "cache" / "experts"
    settings.STRIPE_API_BASE = ""
    settings.LEDGER_WITNESS_DIR = tmp_path / "var" / "witness"
    return settings.VAR_DIR


@pytest.mark.django_db(transaction=True)  # committed uploads: validation runs inside the request, as in use
def test_seed_demo_creates_people_validated_experts_per_skill_and_systems(var_dir, capsys):
    call_command("seed_demo", "--world", "toy")
    output = capsys.readouterr().out

    assert BaseModel.objects.get().name == "mosaic-toy"
    assert Contributor.objects.count() >= 5
    experts = list(Expert.objects.all())
    assert len(experts) == len(SKILLS) >= 5
    assert set(ExpertVersion.objects.values_list("status", flat=True)) == {"valid"}
    assert sorted(tag for e in experts for tag in e.tags if tag.startswith("skill:")) == sorted(
        f"skill:{name}" for name in SKILLS)
    from django.contrib.auth import get_user_model
    users = get_user_model().objects
    assert users.get(username="operator").is_staff
    assert users.get(username="auditor").groups.filter(name="auditors").exists()
    assert "mosaic-demo-2026" in output and "Demo data ready" in output

    strategies = dict(ComposedSystem.objects.values_list("slug", "strategy"))
    assert strategies[DEFAULT_SYSTEM] == "trained_router"
    assert {"trained_router", "cascade", "merge"} <= set(strategies.values())
    mixture = ComposedSystem.objects.get(slug="mosaic-mixture")
    assert mixture.strategy_config["mode"] == "mixture"
    assert ComposedSystem.objects.get(slug="mosaic-merge").license_summary["derivative_work"] is True
    for skill in SKILLS.values():
        assert f"{skill.example_prompt}  ->  {skill.example_answer}" in output

    # the router learns from training prompts only, and leaves general questions to the base model
    examples = ComposedSystem.objects.get(slug=DEFAULT_SYSTEM).strategy_config["examples"]
    heldout = {item.prompt for skill in SKILLS.values() for item in skill.heldout_items(50)}
    assert not any(example["text"] in heldout for example in examples)
    labels = {example["expert"] for example in examples}
    assert labels == {str(pk) for pk in Expert.objects.values_list("pk", flat=True)} | {"base"}
    assert any(example["text"].startswith("user: ") for example in examples)  # the toy template's chat form


def test_seeding_again_trains_nothing_and_records_nothing_new_in_the_catalog(var_dir, capsys):
    call_command("seed_demo", "--world", "toy")
    catalog_kinds = ("contributor.", "base_model.", "expert.", "license.", "alias.", "system.")
    entries = [e.kind for e in Entry.objects.all() if e.kind.startswith(catalog_kinds)]
    cached = sorted(p.name for p in (var_dir / "cache" / "experts" / "toy").iterdir())
    assert len(cached) == len(SKILLS)
    capsys.readouterr()

    call_command("seed_demo", "--world", "toy")

    assert Expert.objects.count() == len(SKILLS) and ExpertVersion.objects.count() == len(SKILLS)
    assert [e.kind for e in Entry.objects.all() if e.kind.startswith(catalog_kinds)] == entries
    assert sorted(p.name for p in (var_dir / "cache" / "experts" / "toy").iterdir()) == cached
    assert "trained in" not in capsys.readouterr().out


def test_seeding_leaves_a_checkpoint_that_the_demo_witness_cosigned(var_dir, settings):
    call_command("seed_demo", "--world", "toy")

    call_command("ledger", "verify", "--witness", str(settings.LEDGER_WITNESS_DIR))  # raises on failure
    latest = Checkpoint.objects.order_by("-tree_size").first()
    assert latest.tree_size == Entry.objects.count()
    assert (settings.LEDGER_WITNESS_DIR).is_dir()


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
