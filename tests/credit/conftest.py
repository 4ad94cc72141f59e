from dataclasses import dataclass

import pytest

from tests.credit.factories import (
    ComposedSystemFactory,
    ContributionMeasurementFactory,
    ContributorFactory,
    ExpertFactory,
    OrganizationFactory,
    SystemExpertFactory,
)


@dataclass
class World:
    organization: object
    system: object
    contributors: list
    experts: list


@pytest.fixture
def world(db):
    """A system of four experts: alice owns two, bob and charlie one each; measured shares 40/30/20/10%."""
    alice, bob, charlie = (ContributorFactory(user__username=name) for name in ("alice", "bob", "charlie"))
    system = ComposedSystemFactory(attribution_alpha_bp=5000)
    owners = [alice, alice, bob, charlie]
    experts = [ExpertFactory(owner=owner) for owner in owners]
    for position, (expert, share) in enumerate(zip(experts, (4000, 3000, 2000, 1000))):
        SystemExpertFactory(system=system, expert=expert, position=position)
        ContributionMeasurementFactory(system=system, expert=expert, share_bp=share)
    return World(
        organization=OrganizationFactory(), system=system, contributors=[alice, bob, charlie], experts=experts
    )
