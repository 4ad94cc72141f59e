"""factory-boy factories for marketplace rows (shared: add factories, do not change others')."""
import factory
from django.contrib.auth import get_user_model

from marketplace import models


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = "!"  # unusable; tests authenticate with force_authenticate (no slow password hashing)


class ContributorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Contributor

    user = factory.SubFactory(UserFactory)
    display_name = factory.LazyAttribute(lambda c: c.user.username.capitalize())


class BaseModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.BaseModel
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"tiny-llama-{n}")
    local_path = "/nonexistent"
    architecture = "LlamaForCausalLM"
    hidden_size = 64
    num_layers = 2
    vocab_size = 100
    content_hash = "0" * 64


class ExpertFactory(factory.django.DjangoModelFactory):
    """A valid expert with license terms (permissive by default) and a current version."""

    class Meta:
        model = models.Expert

    owner = factory.SubFactory(ContributorFactory)
    slug = factory.Sequence(lambda n: f"expert-{n}")
    name = factory.LazyAttribute(lambda e: e.slug.replace("-", " ").title())
    base_model = factory.SubFactory(BaseModelFactory)

    @factory.post_generation
    def terms(expert, create, extracted, **kwargs):
        """ExpertFactory(terms__commercial_use=False, ...) sets the license terms."""
        if create:
            expert.license = models.LicenseTerms.objects.create(expert=expert, **{"spdx_id": "Apache-2.0", **kwargs})
            expert.save(update_fields=["license"])

    @factory.post_generation
    def adapter(expert, create, extracted, **kwargs):
        """ExpertFactory(adapter="/path/to/peft/adapter") points the valid current version at a real adapter."""
        if create:
            sha256 = f"{expert.pk:064x}"
            if extracted:
                import hashlib
                from pathlib import Path

                sha256 = hashlib.sha256((Path(extracted) / "adapter_model.safetensors").read_bytes()).hexdigest()
            version = models.ExpertVersion.objects.create(
                expert=expert, number=1, sha256=sha256, storage_path=str(extracted or "/nonexistent"),
                status=kwargs.get("status", models.ExpertVersion.Status.VALID),
            )
            expert.current_version = version
            expert.save(update_fields=["current_version"])


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Organization
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"org-{n}")
    slug = factory.LazyAttribute(lambda o: o.name)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = models.Membership.Role.OWNER


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Plan
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.LazyAttribute(lambda p: p.slug.title())
    monthly_fee_minor = 2000
    price_per_1k_tokens_minor = 50


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Subscription

    organization = factory.SubFactory(OrganizationFactory)
    plan = factory.SubFactory(PlanFactory)
    status = models.Subscription.Status.ACTIVE


class ComposedSystemFactory(factory.django.DjangoModelFactory):
    """A system row (no experts, no policy check): for tests that only need something to point at.
    Compose real systems with marketplace.services.systems.system_create."""

    class Meta:
        model = models.ComposedSystem

    slug = factory.Sequence(lambda n: f"system-{n}")
    name = factory.LazyAttribute(lambda s: s.slug.title())
    base_model = factory.SubFactory(BaseModelFactory)
    strategy = "linear"
