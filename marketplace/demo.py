"""Demo data, built locally: a small pretrained base model, people, and real peft experts.

`seed_demo()` runs every function in SEEDERS in order with one shared DemoContext; each seeder is
idempotent (it finds what an earlier run created and reuses it). Other areas extend the demo by
appending a seeder here, e.g. organizations, a plan and composed systems after `seed_experts`:

    def seed_organizations(context: DemoContext) -> None: ...
    SEEDERS.append(seed_organizations)

Seeders add log-in details and other things worth showing to `context.summary`.
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
from mosaic.errors import Conflict

BASE_MODEL_NAME = "mosaic-tiny"
DEMO_PASSWORD = "mosaic-demo-2026"
AUDITORS_GROUP = "auditors"  # the group ledger.api.permissions reads


def _sizes() -> dict:
    from composition.small_world import SIZES as WORLD_SIZES

    return {
        # The small world's reduced size: 2-layer 64-wide base, light pretraining (120 steps), experts trained
        # 60 steps: ready in about 2.5 minutes on 2 busy cores.
        "small": dict(WORLD_SIZES["reduced"]),
        # The small world's full size: 4-layer 128-wide base, experts trained long enough to learn their
        # skills well; several times the compute of "small".
        "full": dict(WORLD_SIZES["full"]),
        # For tests of the demo itself: the same shapes of things, a few optimisation steps.
        "tiny": {**WORLD_SIZES["reduced"], "base_steps": 2, "expert_steps": 2, "train_items": 8},
    }


SIZES = ("small", "full", "tiny")
DEFAULT_SIZE = "small"

# (username, display name, priorities, expert slug, skill, license terms)
DEMO_CONTRIBUTORS = [
    ("ada", "Ada", ["text manipulation", "reversal"], "reverser", "reverse",
     {"spdx_id": "Apache-2.0"}),
    ("grace", "Grace", ["formatting", "capitalisation"], "upcaser", "uppercase",
     {"spdx_id": "CC-BY-4.0", "attribution_required": True}),
    ("alan", "Alan", ["arithmetic", "digits"], "incrementer", "increment",
     {"spdx_id": "MIT", "prohibited_domains": ["medical"]}),
]


@dataclass
class DemoContext:
    size: str
    config: dict
    log: Callable[[str], None]
    base_model: BaseModel | None = None
    users: dict = field(default_factory=dict)
    experts: dict[str, Expert] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    @property
    def work_dir(self) -> Path:
        return Path(settings.VAR_DIR) / "demo" / self.size


def build_and_register_base_model(*, name: str, directory: Path, layers: int = 4, hidden: int = 128, seed: int = 0,
                                  train_steps: int = 0, force: bool = False,
                                  build: Callable[[Path], object] | None = None) -> tuple[BaseModel, bool]:
    """Build the base model into `directory` (unless it is there and not `force`) and register it.
    Returns (base model, whether it was built now)."""
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
    from composition.small_world import build_base

    started = time.monotonic()
    suffix = "" if context.size == DEFAULT_SIZE else f"-{context.size}"
    directory = Path(settings.BASE_MODEL_DIR) / f"{BASE_MODEL_NAME}{suffix}"
    name = directory.name
    context.base_model, built = build_and_register_base_model(
        name=name, directory=directory, build=lambda target: build_base(target, context.config)
    )
    context.log(f"base model {name}: {'built and registered' if built else 'already there'} "
                f"({time.monotonic() - started:.1f} s)")
    context.summary.append(f"Base model: {name} at {context.base_model.local_path}")


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
    for username, display_name, priorities, *_ in DEMO_CONTRIBUTORS:
        contributor = Contributor.objects.filter(user__username=username).first()
        if contributor is None:
            contributor = contributor_register(username=username, password=DEMO_PASSWORD,
                                               email=f"{username}@example.org", display_name=display_name,
                                               priorities=priorities)
        context.users[username] = contributor.user
    context.summary.append(
        f"Log in at /login/ (or /admin/ for staff) with password {DEMO_PASSWORD!r} as: operator (staff), "
        "auditor (ledger auditor), " + ", ".join(f"{u[0]} (contributor)" for u in DEMO_CONTRIBUTORS)
    )


def seed_experts(context: DemoContext) -> None:
    from composition.small_world import SKILLS, prompt_for, train_expert

    for index, (username, display_name, priorities, slug, skill, terms) in enumerate(DEMO_CONTRIBUTORS):
        owner = Contributor.objects.get(user__username=username)
        expert = Expert.objects.filter(owner=owner, slug=slug).first()
        if expert is None:
            started = time.monotonic()
            directory = context.work_dir / "experts" / skill
            if not (directory / "adapter_model.safetensors").exists():
                train_expert(Path(context.base_model.local_path), directory, skill, context.config, seed=1 + index)
            example = prompt_for(skill, "abc" if SKILLS[skill][1].isalpha() else "123")
            card = (f"---\nlicense: {terms['spdx_id']}\nbase_model: {context.base_model.name}\n"
                    f"tags: [{skill}, demo]\ndescription: {display_name}'s expert for the {skill} skill.\n---\n"
                    f"# {slug}\n\nA LoRA expert (r={context.config['rank']}, all projections) trained with peft on "
                    f"the `{skill}` skill. Prompt format: `{example}`.\n")
            with (directory / "adapter_config.json").open("rb") as config_file, \
                    (directory / "adapter_model.safetensors").open("rb") as weights_file:
                version = expert_contribute(
                    owner=owner, name=f"{display_name}'s {skill}", slug=slug, model_card=card,
                    adapter=AdapterUpload(config_file=File(config_file, name="adapter_config.json"),
                                          weights_file=File(weights_file, name="adapter_model.safetensors")),
                    license_terms=terms, priorities=priorities,
                )
            version.refresh_from_db()
            expert = version.expert
            context.log(f"expert {username}/{slug} ({skill}): version {version.number} {version.status} "
                        f"({time.monotonic() - started:.1f} s)")
        context.experts[slug] = expert
    context.summary.append("Experts: " + ", ".join(
        f"{e.owner.user.username}/{e.slug} (id {e.pk}, {e.current_version and 'valid' or 'not valid'})"
        for e in context.experts.values()))


SEEDERS: list[Callable[[DemoContext], None]] = [seed_base_model, seed_people, seed_experts]


def seed_demo(*, size: str = DEFAULT_SIZE, log: Callable[[str], None] = print) -> DemoContext:
    context = DemoContext(size=size, config=_sizes()[size], log=log)
    for seeder in SEEDERS:
        seeder(context)
    return context


# --- organizations, a plan and composed systems (issue 6) ---------------------------------------------------

DEMO_ORGANIZATIONS = [
    # (username, organization, commercial, declared domains)
    ("alice", "alice-co", True, ["legal"]),
    ("bob", "bob-co", False, ["medical", "research"]),
]


def seed_organizations(context: DemoContext) -> None:
    """alice-co and bob-co with owners, a plan, subscriptions, fresh API keys and three composed systems.

    The plan goes through Stripe when STRIPE_API_BASE is set (e.g. a localstripe); otherwise the plan and the
    subscriptions are local rows only (nothing is billed), which the summary says."""
    from marketplace.models import ComposedSystem, Organization, OrganizationAPIKey, Plan, Subscription
    from marketplace.services.billing import plan_create
    from marketplace.services.organizations import api_key_create, api_key_revoke, organization_create
    from marketplace.services.systems import system_create

    User = get_user_model()
    organizations = {}
    for username, name, commercial, domains in DEMO_ORGANIZATIONS:
        user = User.objects.filter(username=username).first() or User.objects.create_user(
            username=username, email=f"{username}@example.org", password=DEMO_PASSWORD)
        organization = Organization.objects.filter(name=name).first() or organization_create(
            name=name, owner=user, is_commercial=commercial, domains=domains)
        organizations[name] = organization

    plan = Plan.objects.filter(slug="team").first()
    billed = bool(settings.STRIPE_API_BASE)
    if plan is None:
        limits = dict(requests_per_minute=600, tokens_per_minute=200_000, monthly_token_quota=10_000_000)
        if billed:
            plan = plan_create(slug="team", name="Team", monthly_fee_minor=2000, price_per_1k_tokens_minor=50, **limits)
        else:
            plan = Plan.objects.create(slug="team", name="Team", monthly_fee_minor=2000,
                                       price_per_1k_tokens_minor=50, **limits)
    for organization in organizations.values():
        if not Subscription.objects.filter(organization=organization, status=Subscription.Status.ACTIVE).exists():
            Subscription.objects.create(organization=organization, plan=plan, status=Subscription.Status.ACTIVE)

    valid = [e for e in context.experts.values()
             if e.current_version and e.current_version.status == "valid" and e.consent_revoked_at is None]
    by_slug = {e.slug: e for e in valid}
    wanted = [
        ("mosaic-mix", "Mosaic mix", "logit_mixture", [e.slug for e in valid], None,
         "Every expert's next-token distribution, mixed with equal weights."),
        ("mosaic-merge", "Mosaic merge", "merge", ["reverser", "upcaser"], None,
         "The reverser and upcaser adapters merged by task arithmetic (a derivative work)."),
        ("alice-upcaser", "Alice's upcaser", "single", ["upcaser"], "alice-co",
         "Private to alice-co: the upcaser alone."),
    ]
    operator = context.users.get("operator")
    for slug, name, strategy, expert_slugs, owner, description in wanted:
        experts = [by_slug[s] for s in expert_slugs if s in by_slug]
        if ComposedSystem.objects.filter(slug=slug).exists() or len(experts) != len(expert_slugs) or not experts:
            continue
        system_create(slug=slug, name=name, description=description, base_model=context.base_model,
                      strategy=strategy, strategy_config={}, expert_ids=[e.pk for e in experts],
                      owner_organization=organizations.get(owner), actor=f"user:{operator.pk if operator else 0}")
        context.log(f"system {slug} ({strategy} over {', '.join(expert_slugs)})")

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
    context.summary.append("API keys (new on each run): " + "; ".join(keys))
    from composition.small_world import prompt_for

    first_skill = DEMO_CONTRIBUTORS[0][4]
    context.summary.append("Try: OpenAI(base_url='http://127.0.0.1:8000/v1', api_key=<key>).completions.create("
                           f"model='mosaic-mix', prompt={prompt_for(first_skill, 'abc')!r}, max_tokens=8, "
                           "temperature=0)")


SEEDERS.append(seed_organizations)
