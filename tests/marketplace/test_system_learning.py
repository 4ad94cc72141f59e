"""Systems whose strategy learns on a development set learn it once, when they are composed: what was learned is
stored with the system and recorded in the ledger as composition.optimised with the development set's hash, and
every request restores it instead of learning again. A learning that fails says why and writes nothing."""
import json
import uuid

import pytest
from django.contrib import admin

from composition.strategies.development import dev_set_sha256
from composition.strategies.optimised import GreedySoup
from gpu_workers import serving
from ledger.models import Entry
from marketplace.admin_systems import ComposedSystemAdmin
from marketplace.models import ComposedSystem, SystemOptimisation
from marketplace.policy import serving_members
from marketplace.services.inference import EngineFailed, build_message, run_system_request
from marketplace.services.optimisation import learning_message
from marketplace.services.systems import system_create, system_update

pytestmark = pytest.mark.django_db

DEV_SET = [{"prompt": "ab", "answers": ["x"]}, {"prompt": "cd", "answers": ["y"]}]
SOUP = {"dev_set": DEV_SET, "max_tokens": 2}


def entries(kind):
    return [json.loads(bytes(e.payload)) for e in Entry.objects.filter(kind=kind).order_by("sequence")]


@pytest.fixture
def searches(monkeypatch):
    """Every greedy-soup search that runs, wherever it runs (the worker here is this process)."""
    calls = []
    search = GreedySoup.search

    def counted(self, engine):
        calls.append(self.expert_ids)
        return search(self, engine)

    monkeypatch.setattr(GreedySoup, "search", counted)
    serving._strategies.clear()  # no strategy built by an earlier test
    return calls


@pytest.fixture
def compose(served, django_capture_on_commit_callbacks):
    def compose(slug, strategy="greedy_soup", config=SOUP, **extra):
        with django_capture_on_commit_callbacks(execute=True):
            system = system_create(slug=slug, name=slug, base_model=served.base, strategy=strategy,
                                   strategy_config=config, expert_ids=[served.french.pk, served.poetry.pk],
                                   actor="user:0", **extra)
        system.refresh_from_db()
        return system

    return compose


def ask(system, prompt="ab"):
    plan = serving_members(system=system)
    message = build_message(request_id=f"ask-{uuid.uuid4().hex}",
                            system=system, plan=plan, params={"max_tokens": 3, "temperature": 0.0, "seed": 0},
                            prompt=prompt)
    return message, run_system_request(message=message)


def test_composing_a_learning_system_stores_what_it_learned_and_records_it_once(compose, served, searches):
    system = compose("soup")
    ids = [str(served.french.pk), str(served.poetry.pk)]
    assert system.learned["strategy"] == "greedy_soup" and system.learned["experts"] == ids
    assert system.learned["dev_set_sha256"] == dev_set_sha256(DEV_SET)
    assert sorted(system.learned["coefficients"]) == sorted(ids)
    assert len(searches) == 1
    [payload] = entries("composition.optimised")
    assert payload["system"] == system.ledger_ref and payload["strategy"] == "greedy_soup"
    assert payload["dev_set_sha256"] == dev_set_sha256(DEV_SET)
    assert payload["evaluations"] == system.learned["evaluations"] > 0
    assert payload["learned"]["coefficients"] == {k: repr(v) for k, v in system.learned["coefficients"].items()}
    optimisation = SystemOptimisation.objects.get(system=system)
    assert optimisation.state == SystemOptimisation.State.SUCCEEDED and payload["optimisation"] == optimisation.ledger_ref


def test_serving_restores_what_was_learned_without_searching_again(compose, searches):
    system = compose("soup")
    serving._strategies.clear()  # a fresh worker: nothing cached from the learning
    searches.clear()
    message, result = ask(system)
    assert message.learned == system.learned
    assert searches == []
    assert result.learned is None  # nothing was learned on the worker


def test_the_restored_strategy_answers_as_the_freshly_learned_one(compose, searches):
    system = compose("soup")
    stored = system.learned
    serving._strategies.clear()
    searches.clear()
    restored = [ask(system, prompt)[1] for prompt in ("ab", "cd", "hello")]
    assert searches == []
    ComposedSystem.objects.filter(pk=system.pk).update(learned={})  # as if nothing had been stored
    system.refresh_from_db()
    fresh = [ask(system, prompt)[1] for prompt in ("ab", "cd", "hello")]
    assert len(searches) == 1  # learned once on the worker, for the first of them
    assert [r.choices[0].text for r in restored] == [r.choices[0].text for r in fresh]
    assert [r.attribution for r in restored] == [r.attribution for r in fresh]
    again = run_system_request(message=learning_message(system=system, plan=serving_members(system=system)))
    assert again.learned == stored  # learning is deterministic: the same state as at composition


def test_a_strategy_that_learns_nothing_records_no_optimisation(compose, served):
    weights = {str(served.french.pk): 0.5, str(served.poetry.pk): 0.5}
    system = compose("mix", strategy="logit_mixture", config={"weights": weights})
    assert system.learned == {}
    assert not SystemOptimisation.objects.filter(system=system).exists()
    assert entries("composition.optimised") == []


def test_a_learning_that_fails_says_why_and_writes_nothing(compose, monkeypatch):
    from marketplace.services import optimisation

    def failing(*, message):
        raise EngineFailed("The engine could not complete this request (strategy_error): no dev set answers")

    monkeypatch.setattr(optimisation, "run_system_request", failing)
    system = compose("soup")
    job = SystemOptimisation.objects.get(system=system)
    assert job.state == SystemOptimisation.State.FAILED and "strategy_error" in job.error
    assert system.learned == {}
    assert entries("composition.optimised") == []
    assert ComposedSystemAdmin(ComposedSystem, admin.site).learning(system) == f"failed: {job.error}"


def test_changing_the_composition_learns_again_and_changing_the_name_does_not(compose, served, searches,
                                                                             django_capture_on_commit_callbacks):
    system = compose("soup")
    with django_capture_on_commit_callbacks(execute=True):
        system_update(system=system, actor="user:0", name="Soup")
    assert len(entries("composition.optimised")) == 1
    with django_capture_on_commit_callbacks(execute=True):
        system_update(system=system, actor="user:0", strategy_config={**SOUP, "max_tokens": 3})
    system.refresh_from_db()
    assert len(entries("composition.optimised")) == 2 and len(searches) == 2
    assert system.learned["dev_set_sha256"] == dev_set_sha256(DEV_SET)
    assert SystemOptimisation.objects.filter(system=system, state=SystemOptimisation.State.SUCCEEDED).count() == 2


def test_what_a_private_system_learned_stays_off_the_public_transparency_page(compose, served, client):
    compose("public-soup")
    compose("private-soup", owner_organization=served.organization)
    public, private = entries("composition.optimised")
    assert public["owner_organization"] is None
    assert private["owner_organization"] == served.organization.ledger_ref
    page = client.get("/transparency/").content.decode()
    assert public["system"] in page and private["system"] not in page
