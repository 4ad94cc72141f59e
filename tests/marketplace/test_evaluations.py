"""System evaluation: held-out sets through the serving path, quality with intervals, Shapley per expert in the
ledger, and credit's measured shares read from those measurements.

Each test's expectations come from asking the worker directly (gpu_workers.serving.run_message with a task
message written here by hand): what the base model, each expert alone and the whole system answer."""
import hashlib
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from composition.evaluation import wilson_interval
from gpu_workers import contract
from ledger.models import Entry
from marketplace.credit.allocation import allocate_pending_usage
from marketplace.models import ComposedSystem, ContributionMeasurement, CreditLine, Expert, SystemEvaluation
from marketplace.services.systems import system_create
from tests.credit.factories import UsageFactory
from tests.marketplace import evaluation_suite
from tests.second_factor import sign_in_with_second_factor

FRENCH_PROMPTS = ["upp xy=", "srt cab=", "dbl ab=", "inc 12="]
POETRY_PROMPTS = ["nxt ab=", "upp xy=", "inc 12=", "rev abc="]
GENERAL_PROMPTS = ["hello", "cpy ab="]
MAX_TOKENS = 4


def ask(served, experts, prompt, *, strategy, config=None) -> str:
    """What the worker answers for one chat message, greedy, through the task message contract."""
    from gpu_workers.serving import run_message

    message = {
        "request_id": f"test-{strategy}-{'-'.join(str(e.pk) for e in experts)}-{prompt}",
        "base_model": {"name": served.base.name, "path": served.base.local_path, "content_hash": "0" * 64},
        "experts": [{"id": str(e.pk), "adapter_path": e.current_version.storage_path,
                     "sha256": hashlib.sha256((Path(e.current_version.storage_path) / "adapter_model.safetensors")
                                              .read_bytes()).hexdigest()} for e in experts],
        "strategy": strategy, "strategy_config": config or {},
        "params": {"max_tokens": MAX_TOKENS, "temperature": 0.0, "seed": 0},
        "messages": [{"role": "user", "content": prompt}],
    }
    key = json.dumps({k: v for k, v in message.items() if k != "request_id"}, sort_keys=True)
    if key not in ANSWERS:  # greedy answers of the session's tiny world do not change: ask each once
        ANSWERS[key] = run_message(message)["choices"][0]["text"]
    return ANSWERS[key]


ANSWERS: dict[str, str] = {}


@pytest.fixture
def world(served, settings):
    """The duo system (a logit mixture of french and poetry). French's skill items are answered right by french
    alone, poetry's by poetry alone, the general questions by the base model alone."""
    settings.EVALUATION_SUITE = "tests.marketplace.evaluation_suite"
    settings.EVALUATION_CONCURRENCY = 1
    Expert.objects.filter(pk=served.french.pk).update(tags=["skill:french"])
    Expert.objects.filter(pk=served.poetry.pk).update(tags=["skill:poetry"])
    french, poetry = (Expert.objects.select_related("current_version").get(pk=e.pk)
                      for e in (served.french, served.poetry))
    evaluation_suite.define(
        {"french": [(p, ask(served, [french], p, strategy="single")) for p in FRENCH_PROMPTS],
         "poetry": [(p, ask(served, [poetry], p, strategy="single")) for p in POETRY_PROMPTS]},
        [(p, ask(served, [], p, strategy="base")) for p in GENERAL_PROMPTS],
    )
    items = [*evaluation_suite.SKILLS["french"].items, *evaluation_suite.SKILLS["poetry"].items,
             *evaluation_suite.GENERAL]

    def correct(experts, **kwargs):
        return [evaluation_suite.is_correct(item, ask(served, experts, item.prompt, **kwargs)) for item in items]

    weights = served.duo.strategy_config["weights"]
    coalitions = {
        frozenset(): correct([], strategy="base"),
        frozenset({"f"}): correct([french], strategy="logit_mixture", config={"weights": {str(french.pk): 1.0}}),
        frozenset({"p"}): correct([poetry], strategy="logit_mixture", config={"weights": {str(poetry.pk): 1.0}}),
        frozenset({"f", "p"}): correct([french, poetry], strategy="logit_mixture", config={"weights": weights}),
    }
    yield served, french, poetry, items, coalitions
    evaluation_suite.clear()


def accuracy(values):
    return sum(values) / len(values)


def shapley_of_two(coalitions, me, other):
    v = {key: accuracy(values) for key, values in coalitions.items()}
    return 0.5 * (v[frozenset({me})] - v[frozenset()]) + 0.5 * (v[frozenset({me, other})] - v[frozenset({other})])


def entry(kind):
    return json.loads(bytes(Entry.objects.get(kind=kind).payload))


def test_the_command_writes_the_systems_quality_with_wilson_intervals(world, client):
    served, _, _, items, coalitions = world

    call_command("evaluate_system", "duo", "--items", "4")

    system = ComposedSystem.objects.get(slug="duo")
    answered = coalitions[frozenset({"f", "p"})]
    low, high = wilson_interval(sum(answered), len(answered))
    assert system.quality["n"] == len(items) == 10
    assert system.quality["accuracy"] == round(accuracy(answered), 4)
    assert system.quality["interval95"] == [round(low, 4), round(high, 4)]
    assert system.quality["base_accuracy"] == round(accuracy(coalitions[frozenset()]), 4)
    assert set(system.quality["per_skill"]) == {"french", "poetry", "general"}
    assert system.quality["per_skill"]["general"]["n"] == 2
    models = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {served.key}").json()["data"]
    assert next(m for m in models if m["id"] == "duo")["quality"] == system.quality
    page = client.get("/systems/duo/").content.decode()
    assert f"Accuracy <strong>{system.quality['accuracy']:.3f}</strong>" in page
    assert f"on {len(items)} held-out items" in page


def test_the_command_shows_the_coalitions_it_answers_when_forced_and_nothing_otherwise(world):
    import io
    import re

    err = io.StringIO()
    call_command("evaluate_system", "duo", "--items", "4", "--progress", stdout=io.StringIO(), stderr=err)
    # exact Shapley over two experts: the system, each expert alone, the base model
    assert set(re.findall(r"duo: coalitions of 10 items: 100%\|[^|]*\| (\d+/\d+)", err.getvalue())) == {"4/4"}
    quiet = io.StringIO()
    call_command("evaluate_system", "duo", "--items", "4", stdout=io.StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""


def test_the_ledger_records_the_evaluation_and_each_experts_shapley_value(world):
    served, french, poetry, items, coalitions = world

    call_command("evaluate_system", "duo", "--items", "4")

    recorded, measured = entry("evaluation.recorded"), entry("contribution.measured")
    answered = coalitions[frozenset({"f", "p"})]
    assert recorded["system"] == served.duo.ledger_ref and recorded["n"] == 10 and recorded["correct"] == sum(answered)
    assert recorded["accuracy"] == f"{accuracy(answered):.6f}"
    assert [s["sha256"] for s in recorded["sets"]] == [
        evaluation_suite.heldout_sha256(evaluation_suite.SKILLS["french"].items),
        evaluation_suite.heldout_sha256(evaluation_suite.SKILLS["poetry"].items),
        evaluation_suite.heldout_sha256(evaluation_suite.GENERAL),
    ]
    assert recorded["dataset_sha256"] == evaluation_suite.heldout_sha256(items)
    assert measured["evaluation_event"] == Entry.objects.get(kind="evaluation.recorded").event_id
    assert measured["method"] == "exact_shapley" and measured["dataset_sha256"] == recorded["dataset_sha256"]
    assert measured["values"] == {
        french.ledger_ref: f"{shapley_of_two(coalitions, 'f', 'p'):.6f}",
        poetry.ledger_ref: f"{shapley_of_two(coalitions, 'p', 'f'):.6f}",
    }
    for ref, (low, high) in measured["intervals95"].items():
        assert float(low) <= float(measured["values"][ref]) <= float(high)
    assert sum(measured["shares_bp"].values()) in (0, 10000)


def test_credit_splits_by_the_measured_shares_of_the_evaluation(world):
    served, french, poetry, _, _ = world
    # Measured shares alone decide (alpha 0). French leads this mixture, so it adds something to the base.
    leaning = system_create(slug="leaning", name="leaning", base_model=served.base, strategy="logit_mixture",
                            strategy_config={"weights": {str(french.pk): 0.9, str(poetry.pk): 0.1}},
                            expert_ids=[french.pk, poetry.pk], actor="user:0", attribution_alpha_bp=0)
    call_command("evaluate_system", "leaning", "--items", "4")
    shares = entry("contribution.measured")["shares_bp"]
    assert sum(shares.values()) == 10000, "the fixture's experts must add something for this test to mean anything"
    rows = {m.expert_id: m.share_bp for m in ContributionMeasurement.objects.filter(system=leaning)}
    assert rows == {french.pk: shares[french.ledger_ref], poetry.pk: shares[poetry.ledger_ref]}
    usage = UsageFactory(organization=served.organization, system=leaning, charge_minor=10_000,
                         attribution={str(french.pk): "0.5", str(poetry.pk): "0.5"})

    allocate_pending_usage()

    pool = 10_000 - 10_000 * 2000 // 10_000
    paid = {line.expert_id: line.amount_minor for line in CreditLine.objects.filter(usage=usage) if line.expert_id}
    assert sum(paid.values()) == pool
    for expert in (french, poetry):
        assert abs(paid.get(expert.pk, 0) - pool * shares[expert.ledger_ref] / 10_000) <= 1


def test_an_unknown_slug_is_a_command_error_naming_the_systems(world):
    with pytest.raises(CommandError, match="No system 'nope'; systems: alice-private, bob-private, duo."):
        call_command("evaluate_system", "nope")


def test_a_system_whose_experts_name_no_skill_fails_with_the_reason_and_writes_nothing(world):
    Expert.objects.update(tags=[])

    with pytest.raises(CommandError, match="None of this system's experts names a skill"):
        call_command("evaluate_system", "duo")

    assert SystemEvaluation.objects.get().state == SystemEvaluation.State.FAILED
    assert ComposedSystem.objects.get(slug="duo").quality == {}
    assert not Entry.objects.filter(kind__in=["evaluation.recorded", "contribution.measured"]).exists()
    assert not ContributionMeasurement.objects.exists()


def test_the_admin_action_queues_an_evaluation_the_operator_can_watch(world, staff, client,
                                                                     django_capture_on_commit_callbacks):
    served = world[0]
    sign_in_with_second_factor(client, staff)

    with django_capture_on_commit_callbacks(execute=True) as queued:
        response = client.post("/admin/marketplace/composedsystem/",
                               {"action": "evaluate", "_selected_action": [served.duo.pk]})

    assert response.status_code == 302 and len(queued) == 1
    evaluation = SystemEvaluation.objects.get()
    assert evaluation.system == served.duo and evaluation.requested_by == staff
    assert evaluation.state == SystemEvaluation.State.SUCCEEDED, evaluation.error
    assert evaluation.progress_done == evaluation.progress_total == 4
    assert evaluation.result == ComposedSystem.objects.get(pk=served.duo.pk).quality
    page = client.get(f"/admin/marketplace/systemevaluation/{evaluation.pk}/change/")
    assert page.status_code == 200 and b"succeeded" in page.content


def test_the_evaluate_button_runs_the_evaluation_and_the_system_page_shows_its_progress_and_result(
        world, staff, client, django_capture_on_commit_callbacks):
    served = world[0]
    sign_in_with_second_factor(client, staff)
    change_page = f"/admin/marketplace/composedsystem/{served.duo.pk}/change/"
    assert f'action="/admin/marketplace/composedsystem/{served.duo.pk}/evaluate/"' in client.get(change_page).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/marketplace/composedsystem/{served.duo.pk}/evaluate/")

    assert response.status_code == 302 and response["Location"] == change_page
    evaluation = SystemEvaluation.objects.get()
    page = client.get(change_page).content.decode()
    assert evaluation.state == SystemEvaluation.State.SUCCEEDED, evaluation.error
    assert f"<td>{evaluation.pk}</td><td>succeeded</td><td>4/4</td>" in page
    assert f"accuracy {evaluation.result['accuracy']:.3f}" in page and f"expert:{served.french.pk}" in page
    assert f'<div class="job-state job-succeeded" id="job-systemevaluation-{evaluation.pk}"' in page
    assert "data-job-state-url" not in page  # finished: nothing to poll


def test_a_queued_evaluation_shows_its_state_on_the_systems_pages_and_polls_until_it_ends(
        world, staff, client, django_capture_on_commit_callbacks):
    served = world[0]
    sign_in_with_second_factor(client, staff)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(f"/admin/marketplace/composedsystem/{served.duo.pk}/evaluate/")
    evaluation = SystemEvaluation.objects.get()
    state_url = f"/admin/marketplace/systemevaluation/{evaluation.pk}/state/"

    for page in (f"/admin/marketplace/composedsystem/{served.duo.pk}/change/", "/systems/duo/"):
        html = client.get(page).content.decode()
        assert f'data-job-state-url="{state_url}"' in html and '<span class="job-state-name">queued</span>' in html
        assert 'src="/static/marketplace/job_state.js"' in html
    assert "job-state" not in Client().get("/systems/duo/").content.decode()  # for staff only

    queued[0]()  # the task, as the worker runs it

    box = client.get(state_url).content.decode()
    assert '<span class="job-state-name">succeeded</span>' in box and "data-job-state-url" not in box
    assert f"accuracy {SystemEvaluation.objects.get().result['accuracy']:.3f}" in box


def test_an_evaluation_records_running_while_it_answers_and_its_stage(world, monkeypatch):
    from marketplace.services import evaluations
    from marketplace.services.evaluations import evaluation_request, evaluation_run

    served = world[0]
    seen = []
    answer = evaluations.answer_items

    def answer_and_look(**arguments):
        row = SystemEvaluation.objects.get()
        seen.append((row.state, row.stage, row.progress_total))
        return answer(**arguments)

    monkeypatch.setattr(evaluations, "answer_items", answer_and_look)
    queued = evaluation_request(system=served.duo, items_per_skill=4)
    assert queued.state == "queued" and queued.started_at is None

    done = evaluation_run(evaluation_id=queued.pk)

    assert seen and set(seen) == {("running", "duo: coalitions of 10 items", 4)}
    assert done.state == "succeeded" and done.started_at <= done.finished_at


def test_after_a_revocation_only_the_experts_still_serving_are_measured(world):
    from marketplace.services.revocation import expert_revoke_consent

    served, french, poetry, items, coalitions = world
    expert_revoke_consent(expert=poetry, user=poetry.owner.user)

    call_command("evaluate_system", "duo", "--items", "4")

    measured = entry("contribution.measured")
    alone = coalitions[frozenset({"f"})][:4] + coalitions[frozenset({"f"})][8:]  # french's items and the general
    assert entry("evaluation.recorded")["correct"] == sum(alone)
    assert measured["values"] == {
        french.ledger_ref: f"{accuracy(alone) - accuracy(coalitions[frozenset()][:4] + coalitions[frozenset()][8:]):.6f}"}
    assert list(ContributionMeasurement.objects.values_list("expert_id", flat=True)) == [french.pk]


def test_each_item_gets_a_deadline_counted_from_when_it_is_sent_not_from_when_the_run_began(world, settings,
                                                                                             monkeypatch):
    import time

    from marketplace.services import evaluations

    served, _french, _poetry, items, _coalitions = world
    settings.INFERENCE_DEADLINE_SECONDS = 1
    seen = []

    def slow_engine(*, message):
        seen.append(message.deadline - time.time())
        time.sleep(0.4)
        return contract.CompletionResult("r", (contract.ChoiceResult(0, "x", "stop"),), contract.Usage(1, 1), {})

    monkeypatch.setattr(evaluations, "run_system_request", slow_engine)
    sets = [evaluations.HeldOutSet("all", items, "0" * 64, 4)]

    evaluations.answer_items(system=served.duo, plan=None, sets=sets, concurrency=1)

    assert len(seen) > 3 and min(seen) > 0.5  # built up front, the fourth item's deadline had already passed
