import hashlib

import factory

from marketplace.models import (
    BaseModel,
    ComposedSystem,
    ContributionMeasurement,
    Expert,
    ExpertVersion,
    LicenseTerms,
    SystemExpert,
    Usage,
)
# People and organizations are the marketplace tests' factories; the credit tests import them from here too.
from tests.marketplace.factories import ContributorFactory, OrganizationFactory, UserFactory  # noqa: F401


class BaseModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BaseModel
        django_get_or_create = ("name",)

    name = "char-llama-tiny"
    local_path = "/nonexistent/char-llama-tiny"
    architecture = "llama"
    hidden_size = 128
    num_layers = 4
    vocab_size = 96
    content_hash = "0" * 64


class ExpertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Expert

    owner = factory.SubFactory(ContributorFactory)
    slug = factory.Sequence(lambda n: f"expert-{n}")
    name = factory.Sequence(lambda n: f"Expert {n}")
    base_model = factory.SubFactory(BaseModelFactory)


class ExpertVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ExpertVersion

    expert = factory.SubFactory(ExpertFactory)
    number = 1
    sha256 = factory.Sequence(lambda n: hashlib.sha256(str(n).encode()).hexdigest())
    storage_path = factory.LazyAttribute(lambda v: f"experts/{v.sha256}")
    status = ExpertVersion.Status.VALID


class LicenseTermsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LicenseTerms

    expert = factory.SubFactory(ExpertFactory)
    spdx_id = "CC-BY-4.0"
    attribution_required = True


class ComposedSystemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ComposedSystem

    slug = factory.Sequence(lambda n: f"system-{n}")
    name = factory.Sequence(lambda n: f"System {n}")
    base_model = factory.SubFactory(BaseModelFactory)
    strategy = "routing"
    attribution_alpha_bp = 5000


class SystemExpertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SystemExpert

    system = factory.SubFactory(ComposedSystemFactory)
    expert = factory.SubFactory(ExpertFactory)
    version = factory.LazyAttribute(lambda se: ExpertVersionFactory(expert=se.expert))


class ContributionMeasurementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContributionMeasurement

    system = factory.SubFactory(ComposedSystemFactory)
    expert = factory.SubFactory(ExpertFactory)
    method = "shapley_exact"
    metric = "exact_match"
    dataset_hash = "f" * 64
    value = "0.5"
    share_bp = 5000


class UsageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Usage

    request_id = factory.Sequence(lambda n: f"req-{n}")
    organization = factory.SubFactory(OrganizationFactory)
    system = factory.SubFactory(ComposedSystemFactory)
    prompt_tokens = 10
    completion_tokens = 20
    latency_ms = 5
    attribution = factory.LazyFunction(dict)
    charge_minor = 1000
