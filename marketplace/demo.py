"""Demo data on the real base model: SmolLM2-135M-Instruct, five contributors' experts trained here, and
the systems composed from them.

`seed_demo()` runs every function in SEEDERS in order with one shared DemoContext; each seeder is
idempotent (it finds what an earlier run created and reuses it):

- the base model: the default SmolLM2-135M-Instruct, converted once from the installed wheel's GGUF file;
- people: an operator (staff), an auditor, and one contributor per skill of composition.skills;
- experts: each contributor's peft LoRA, trained here on its skill's training items (never on a held-out
  one) and cached by its recipe (composition.training), then uploaded through the same service as the API,
  with license terms and the tag `skill:<name>` that names its held-out set;
- organizations, a plan, API keys, and the systems: a trained router (the default system), a logit mixture
  with the router's weights, a cascade and a merge.

The toy world (`world="toy"`) builds the same things on a tiny untrained character model with two
optimisation steps per expert: the fast tests seed it in seconds. Its answers mean nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files import File

from marketplace.models import BaseModel, Contributor, Expert
from marketplace.services.accounts import contributor_register
from marketplace.services.base_models import base_model_register
from marketplace.services.experts import AdapterUpload, expert_contribute
from marketplace.tasks import validate_after_commit
from domain.errors import Conflict
from mosaic.progress import QUIET, Progress

DEMO_PASSWORD = "mosaic-demo-2026"
AUDITORS_GROUP = "auditors"  # the group ledger.api.permissions reads
TOY_BASE_MODEL_NAME = "mosaic-toy"
WORLDS = ("real", "toy")
DEFAULT_WORLD = "real"
DEFAULT_SYSTEM = "mosaic-router"


@dataclass(frozen=True)
class DemoContributor:
    username: str
    display_name: str
    priorities: list[str]
    slug: str           # the expert's slug
    skill: str          # a key of composition.skills.SKILLS
    license_terms: dict


DEMO_CONTRIBUTORS = [
    DemoContributor("ada", "Ada", ["arithmetic"], "adder", "add", {"spdx_id": "Apache-2.0"}),
    DemoContributor("grace", "Grace", ["text manipulation"], "reverser", "reverse",
                    {"spdx_id": "CC-BY-4.0", "attribution_required": True}),
    DemoContributor("alan", "Alan", ["units", "science"], "converter", "convert",
                    {"spdx_id": "MIT", "prohibited_domains": ["medical"]}),
    DemoContributor("hedy", "Hedy", ["information extraction"], "extractor", "extract", {"spdx_id": "Apache-2.0"}),
    DemoContributor("katherine", "Katherine", ["customer feedback"], "sentiment", "sentiment", {"spdx_id": "MIT"}),
]


@dataclass
class DemoContext:
    world: str
    log: Callable[[str], None]
    progress: Progress = QUIET
    base_model: BaseModel | None = None
    users: dict = field(default_factory=dict)
    experts: dict[str, Expert] = field(default_factory=dict)  # by skill
    summary: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def build_and_register_base_model(*, name: str, directory: Path, layers: int = 4, hidden: int = 128, seed: int = 0,
                                  train_steps: int = 0, force: bool = False,
                                  build: Callable[[Path], object] | None = None) -> tuple[BaseModel, bool]:
    """Build a small character-level base model into `directory` (unless it is there and not `force`) and
    register it. Returns (base model, whether it was built now)."""
    from composition.world import build_base_model

    existing = BaseModel.objects.filter(name=name).first()
    if existing is not None:
        if force:
            raise Conflict(f"Base model {name!r} is already registered and experts depend on it; "
                           "build the new one under another name.")
        return existing, False
    directory = Path(directory)
    built = force or not (directory / "config.json").exists()
    if built and build is not None:
        build(directory)
    elif built:
        build_base_model(directory, layers=layers, hidden=hidden, seed=seed, train_steps=train_steps)
    return base_model_register(name=name, path=directory), built


def seed_base_model(context: DemoContext) -> None:
    started = time.monotonic()
    if context.world == "toy":
        context.base_model, _ = build_and_register_base_model(
            name=TOY_BASE_MODEL_NAME, directory=Path(settings.BASE_MODEL_DIR) / TOY_BASE_MODEL_NAME,
            layers=2, hidden=64)
    else:
        from gpu_workers.model_import import DEFAULT_BASE_MODEL_NAME, ensure_default_base_model

        context.base_model = BaseModel.objects.filter(name=DEFAULT_BASE_MODEL_NAME).first()
        if context.base_model is None:
            directory = ensure_default_base_model(settings.BASE_MODEL_DIR)
            context.base_model = base_model_register(name=DEFAULT_BASE_MODEL_NAME, path=directory)
    context.timings["base model"] = time.monotonic() - started
    context.log(f"base model {context.base_model.name} ready ({context.timings['base model']:.1f} s)")
    context.summary.append(f"Base model: {context.base_model.name} at {context.base_model.local_path}")


def seed_people(context: DemoContext) -> None:
    User = get_user_model()
    operator = User.objects.filter(username="operator").first()
    if operator is None:
        operator = User.objects.create_superuser(username="operator", email="operator@example.org",
                                                 password=DEMO_PASSWORD)
    auditor = User.objects.filter(username="auditor").first()
    if auditor is None:
        auditor = User.objects.create_user(username="auditor", email="auditor@example.org", password=DEMO_PASSWORD)
    auditor.groups.add(Group.objects.get_or_create(name=AUDITORS_GROUP)[0])
    context.users.update(operator=operator, auditor=auditor)
    for person in DEMO_CONTRIBUTORS:
        contributor = Contributor.objects.filter(user__username=person.username).first()
        if contributor is None:
            contributor = contributor_register(username=person.username, password=DEMO_PASSWORD,
                                               email=f"{person.username}@example.org",
                                               display_name=person.display_name, priorities=person.priorities)
        context.users[person.username] = contributor.user
    context.summary.append(
        f"Log in at /login/ (or /admin/ for staff) with password {DEMO_PASSWORD!r} as: operator (staff), "
        "auditor (ledger auditor), " + ", ".join(f"{p.username} (contributor)" for p in DEMO_CONTRIBUTORS)
    )
    context.summary.append("operator and auditor set up an authenticator app (TOTP) at their first login; "
                           "emails (password reset, verification) are printed on the console")


def train_demo_expert(context: DemoContext, person: DemoContributor):
    """(adapter directory, recipe) of the contributor's expert, trained now unless its recipe is cached."""
    from composition.training import demo_recipe, demo_training_pairs, ensure_adapter, toy_recipe

    toy = context.world == "toy"
    recipe = toy_recipe() if toy else demo_recipe(person.skill)
    started = time.monotonic()
    directory, facts = ensure_adapter(
        Path(settings.TRAINED_EXPERTS_DIR) / context.world, context.base_model.local_path, recipe,
        demo_training_pairs(person.skill, toy=toy), description=f"{person.username}/{person.slug}",
        progress=context.progress)
    seconds = context.timings[f"train {person.slug}"] = time.monotonic() - started
    if facts is None:
        context.log(f"expert {person.username}/{person.slug}: adapter from the cache ({directory.name})")
    else:
        context.log(f"expert {person.username}/{person.slug}: trained in {seconds:.1f} s "
                    f"({recipe.steps} steps, final loss {facts['final_loss']})")
    return directory, recipe


def model_card(person: DemoContributor, base_model: BaseModel, recipe_text: str) -> str:
    from composition.skills import SKILLS

    skill = SKILLS[person.skill]
    return (f"---\nlicense: {person.license_terms['spdx_id']}\nbase_model: {base_model.name}\n"
            f"tags: [demo, \"skill:{skill.name}\"]\ndescription: {skill.description}\n---\n"
            f"# {person.display_name}'s {skill.name} expert\n\n{skill.description}\n\n"
            f"Example: \"{skill.example_prompt}\" → `{skill.example_answer}`\n\n"
            f"A peft LoRA on {base_model.name}, {recipe_text}, trained on generated examples of the skill; its "
            f"held-out set (composition.skills, skill `{skill.name}`) was never trained on.\n")


def seed_experts(context: DemoContext) -> None:
    for person in DEMO_CONTRIBUTORS:
        owner = Contributor.objects.get(user__username=person.username)
        expert = Expert.objects.filter(owner=owner, slug=person.slug).first()
        if expert is None:
            directory, recipe = train_demo_expert(context, person)
            recipe_text = (f"rank {recipe.rank} on {', '.join(recipe.target_modules)} of the top {recipe.layers} "
                           f"layers, {recipe.steps} steps of {recipe.batch_size}")
            with (directory / "adapter_config.json").open("rb") as config_file, \
                    (directory / "adapter_model.safetensors").open("rb") as weights_file:
                version = expert_contribute(
                    owner=owner, name=f"{person.display_name}'s {person.skill}", slug=person.slug,
                    model_card=model_card(person, context.base_model, recipe_text),
                    adapter=AdapterUpload(config_file=File(config_file, name="adapter_config.json"),
                                          weights_file=File(weights_file, name="adapter_model.safetensors")),
                    license_terms=person.license_terms, priorities=person.priorities,
                )
            validate_after_commit(version.pk)
            version.refresh_from_db()
            expert = version.expert
            context.log(f"expert {person.username}/{person.slug} uploaded: version {version.number} {version.status}")
        context.experts[person.skill] = expert
    context.summary.append("Experts: " + ", ".join(
        f"{e.owner.user.username}/{e.slug} (skill:{skill}, {'valid' if e.current_version_id else 'not valid'})"
        for skill, e in context.experts.items()))


# --- organizations, a plan, API keys -----------------------------------------------------------------------

DEMO_ORGANIZATIONS = [
    # (username, organization, commercial, declared domains)
    ("alice", "alice-co", True, ["legal"]),
    ("bob", "bob-co", False, ["medical", "research"]),
]


DEMO_PLANS = [
    # slug, name, monthly fee, price per 1k tokens (minor units), requests/min, tokens/min, tokens/month
    ("starter", "Starter", 0, 80, 30, 20_000, 1_000_000),
    ("team", "Team", 2000, 50, 600, 200_000, 10_000_000),
]


def seed_plans() -> dict:
    """The demo's plans, each with its prices: Stripe's when Stripe is configured (e.g. a localstripe), local price
    records otherwise (marketplace.services.billing), so a new organization can subscribe offline."""
    from marketplace.models import Plan
    from marketplace.services.billing import plan_create, plan_ensure_prices

    plans = {}
    for slug, name, fee, price, rpm, tpm, quota in DEMO_PLANS:
        plan = Plan.objects.filter(slug=slug).first()
        if plan is None:
            plan = plan_create(slug=slug, name=name, monthly_fee_minor=fee, price_per_1k_tokens_minor=price,
                               requests_per_minute=rpm, tokens_per_minute=tpm, monthly_token_quota=quota)
        plans[slug] = plan_ensure_prices(plan=plan)
    return plans


def seed_organizations(context: DemoContext) -> None:
    """alice-co and bob-co with owners, a plan, subscriptions and fresh API keys.

    The plan goes through Stripe when STRIPE_API_BASE is set (e.g. a localstripe); otherwise the plan and the
    subscriptions are local rows only (nothing is billed), which the summary says."""
    from marketplace.models import Organization, OrganizationAPIKey, Subscription
    from marketplace.services.billing import has_local_prices
    from marketplace.services.organizations import api_key_create, api_key_revoke, organization_create

    User = get_user_model()
    organizations = {}
    for username, name, commercial, domains in DEMO_ORGANIZATIONS:
        user = User.objects.filter(username=username).first() or User.objects.create_user(
            username=username, email=f"{username}@example.org", password=DEMO_PASSWORD)
        organization = Organization.objects.filter(name=name).first() or organization_create(
            name=name, owner=user, is_commercial=commercial, domains=domains)
        organizations[name] = organization
    context.users["organizations"] = organizations

    plans = seed_plans()
    billed = not has_local_prices(plans["team"])
    for organization in organizations.values():
        if not Subscription.objects.filter(organization=organization, status=Subscription.Status.ACTIVE).exists():
            Subscription.objects.create(organization=organization, plan=plans["team"],
                                        status=Subscription.Status.ACTIVE)

    keys = []
    for name, organization in organizations.items():
        for old in OrganizationAPIKey.objects.filter(organization=organization, name="demo", revoked=False):
            api_key_revoke(api_key=old)
        _, key = api_key_create(organization=organization, name="demo")
        keys.append(f"{name}: {key}")
    context.summary.append(
        "Organizations: alice-co (owner alice, commercial, legal) and bob-co (owner bob, non-commercial, medical and "
        f"research), both on plan 'team' ({'billed through Stripe' if billed else 'local only: Stripe not configured'})."
    )
    context.summary.append(
        "Plans (GET /api/plans): " + "; ".join(
            f"{p.slug} {p.monthly_fee_minor / 100:.2f} {settings.CURRENCY}/month + {p.price_per_1k_tokens_minor} "
            f"minor units per 1k tokens, {p.monthly_token_quota:,} tokens/month" for p in plans.values())
        + (" (Stripe prices)" if billed else " (local price records: Stripe is not configured, so a new "
           "organization's subscription starts at once and nothing is billed)")
        + ". New organizations sign up at /organizations/signup/."
    )
    context.summary.append("API keys (new on each run): " + "; ".join(keys))


# --- the composed systems ----------------------------------------------------------------------------------

def chat_renderer(base_model: BaseModel) -> Callable[[str], str]:
    from transformers import AutoTokenizer

    from composition.training import chat_prompt

    tokenizer = AutoTokenizer.from_pretrained(base_model.local_path)
    return lambda message: chat_prompt(tokenizer, message)


# Each system's price, minor units per 1,000 tokens (it overrides the plan's): more engine work costs more.
DEMO_SYSTEM_PRICES = {DEFAULT_SYSTEM: 40, "mosaic-mixture": 60, "mosaic-cascade": 50, "mosaic-merge": 30,
                      "alice-adder": 20}


def demo_systems(experts_by_skill: dict[str, Expert], examples: list[dict]) -> list[tuple]:
    """(slug, name, strategy, config, skills, owner organization or None, description)."""
    from composition.skills import demo_strategies

    skills = list(experts_by_skill)
    strategies = demo_strategies({skill: str(experts_by_skill[skill].pk) for skill in skills}, examples)
    return [
        (DEFAULT_SYSTEM, "Mosaic router", *strategies["router"], skills, None,
         "A classifier on the base model's embeddings sends each request to the one expert whose skill it asks "
         "for, or to the base model alone for anything else."),
        ("mosaic-mixture", "Mosaic mixture", *strategies["mixture"], skills,
         None, "The experts' next-token distributions mixed at every token with the router's probabilities "
               "as weights (the base model alone for general questions)."),
        ("mosaic-cascade", "Mosaic cascade", *strategies["cascade"], skills, None,
         "Each expert in turn until one is confident (mean token log-probability at least -0.1); the base model "
         "alone when none is."),
        ("mosaic-merge", "Mosaic merge", *strategies["merge"], skills, None,
         "The five adapters merged into one by TIES (each keeps its largest half, signs elected, scale 3): a "
         "derivative work."),
        ("alice-adder", "Alice's adder", "single", {}, ["add"], "alice-co", "Private to alice-co: the adder alone."),
        ("mosaic-extract", "Mosaic JSON extraction", "single", {}, ["extract"], None,
         "The extractor alone, for structured outputs: call it with response_format json_schema "
         "(PERSON_SCHEMA in marketplace/demo.py) and every answer is a JSON object that matches the schema."),
    ]


# The schema the JSON-extraction system is called with (README: structured outputs).
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0,
                                                                       "maximum": 150},
                   "city": {"type": "string", "maxLength": 40}},
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}


def seed_systems(context: DemoContext) -> None:
    from marketplace.ledger_refs import SYSTEM_ACTOR, user_ref
    from marketplace.models import ComposedSystem, Organization
    from marketplace.services.systems import system_create, system_update

    valid = {skill: e for skill, e in context.experts.items()
             if e.current_version and e.current_version.status == "valid" and e.consent_revoked_at is None}
    from composition.skills import router_examples

    render = chat_renderer(context.base_model) if valid else None
    examples = router_examples({skill: str(expert.pk) for skill, expert in valid.items()}, render)
    operator = context.users.get("operator")
    actor = user_ref(operator) if operator else SYSTEM_ACTOR
    for slug, name, strategy, config, skills, owner, description in demo_systems(valid, examples):
        existing = ComposedSystem.objects.filter(slug=slug).first()
        if existing is not None:
            if existing.price_per_1k_tokens_minor is None and slug in DEMO_SYSTEM_PRICES:  # seeded before prices
                system_update(system=existing, actor=actor,
                              price_per_1k_tokens_minor=DEMO_SYSTEM_PRICES[slug])
            continue
        if not all(s in valid for s in skills) or not skills:
            continue
        system_create(slug=slug, name=name, description=description, base_model=context.base_model,
                      strategy=strategy, strategy_config=config, expert_ids=[valid[s].pk for s in skills],
                      owner_organization=Organization.objects.filter(slug=owner).first() if owner else None,
                      price_per_1k_tokens_minor=DEMO_SYSTEM_PRICES.get(slug),
                      actor=actor)
        context.log(f"system {slug} ({strategy} over {', '.join(skills)})")
    context.summary.append(f"Systems: {', '.join(ComposedSystem.objects.order_by('pk').values_list('slug', flat=True))}"
                           f" (the default: {DEFAULT_SYSTEM})")


def seed_examples(context: DemoContext) -> None:
    """One example per skill, in plain English, with the answer its expert gives."""
    from composition.skills import SKILLS

    lines = [f"Ask {DEFAULT_SYSTEM} (one example per skill, with the right answer; the adder is the weakest expert):"]
    for skill in SKILLS.values():
        lines.append(f"  {skill.example_prompt}  ->  {skill.example_answer}")
    lines.append("Try: OpenAI(base_url='http://127.0.0.1:8000/v1', api_key=<a key above>).chat.completions.create("
                 f"model={DEFAULT_SYSTEM!r}, messages=[{{'role': 'user', 'content': "
                 f"{SKILLS['add'].example_prompt!r}}}], temperature=0)")
    context.summary.extend(lines)


def seed_witness(context: DemoContext) -> None:
    """Sign a checkpoint of everything seeded and have the demo's witness cosign it (ledger/README.md)."""
    from ledger.services import create_checkpoint
    from ledger.witness import witness_once

    create_checkpoint()
    cosigned = witness_once(settings.LEDGER_WITNESS_DIR)
    context.summary.append(f"Ledger: checkpoint of {cosigned.checkpoint.tree_size} entries cosigned by the witness in "
                           f"{settings.LEDGER_WITNESS_DIR} (check: python manage.py ledger verify --witness "
                           f"{settings.LEDGER_WITNESS_DIR})")


SEEDERS: list[Callable[[DemoContext], None]] = [
    seed_base_model, seed_people, seed_experts, seed_organizations, seed_systems, seed_witness, seed_examples,
]


def seed_demo(*, world: str = DEFAULT_WORLD, log: Callable[[str], None] = print,
              progress: Progress = QUIET) -> DemoContext:
    if world not in WORLDS:
        raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {world!r}")
    context = DemoContext(world=world, log=log, progress=progress)
    for seeder in progress.track(SEEDERS, "seeding the demo", unit="step"):
        seeder(context)
    return context
