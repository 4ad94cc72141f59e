"""Strategies that learn on a development set: what they learned (`learned()`) carries the set's hash, restores
(`restore(learned)`, or build_strategy(..., learned=)) without learning again, and answers exactly as the freshly
learned strategy; a strategy that learns nothing has nothing to restore."""
import json

import pytest

from composition.errors import CompositionError
from composition.strategies import build_strategy
from composition.strategies.base import CompletionRequest
from composition.strategies.development import dev_set_sha256
from composition.strategy_specs import strategy_learns, validate_strategy_config

IDS = ["alpha", "beta", "gamma"]
DEV = [{"prompt": "ab", "answers": ["x"]}, {"prompt": "cd", "answers": ["y"]}]
LEARNERS = {
    "lorahub": {"dev_set": DEV, "max_tokens": 3, "budget": 4, "population": 2},
    "model_swarms": {"dev_set": DEV, "max_tokens": 3, "iterations": 1, "extra_particles": 1},
    "greedy_soup": {"dev_set": DEV, "max_tokens": 3},
    "expo": {"dev_set": DEV, "max_tokens": 3, "alpha_candidates": [0.1, 0.5]},
    "merge_search": {"dev_set": DEV, "max_tokens": 3, "samples": 2, "method": "linear"},
    "graph_router": {"dev_set": DEV, "max_tokens": 3, "neighbours": 1},
    "trained_router": {"mode": "mixture", "epochs": 5},
    "co_llm": {"assistant": "gamma", "gate": "learned", "dev_set": DEV, "epochs": 5},
    "heterogeneous_swarm": {"dev_set": DEV, "max_tokens": 2, "particles": 2, "iterations": 1},
    "slm_mux": {"samples": 2, "dev_set": DEV, "max_tokens": 2},
}
NON_LEARNERS = {
    "logit_mixture": {},
    "expo": {"strong": "alpha", "weak": "beta", "alpha": 0.5},
    "co_llm": {"assistant": "gamma"},
    "heterogeneous_swarm": {"edges": [["alpha", "beta"]], "output": "beta"},
    "slm_mux": {"samples": 2},
}
REQUEST = CompletionRequest(prompt="rev hgfe=", max_tokens=4, temperature=0.8, seed=3)


def learned_by(name, engine, experts):
    strategy = build_strategy(name, LEARNERS[name], experts)
    strategy.prepare(engine)
    return strategy, strategy.learned()


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_what_a_strategy_learned_is_json_and_names_its_experts_and_development_set(engine, experts, name):
    assert strategy_learns(name, validate_strategy_config(name, LEARNERS[name], IDS))
    _, learned = learned_by(name, engine, experts)
    assert json.loads(json.dumps(learned)) == learned
    assert learned["strategy"] == name and learned["experts"] == IDS
    if "dev_set" in LEARNERS[name]:
        assert learned["dev_set_sha256"] == dev_set_sha256(DEV)
    else:  # the trained router learns from labelled queries: their hash
        assert len(learned["dev_set_sha256"]) == 64


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_a_restored_strategy_does_not_learn_again_and_answers_as_the_learned_one(engine, experts, name,
                                                                                 monkeypatch):
    fresh, learned = learned_by(name, engine, experts)
    expected = fresh.run(REQUEST, engine)
    restored = build_strategy(name, LEARNERS[name], experts, learned=json.loads(json.dumps(learned)))
    calls = []
    monkeypatch.setattr(type(restored), "learn", lambda self, engine: calls.append(self))
    result = restored.run(REQUEST, engine)
    assert calls == []
    assert result.texts == expected.texts
    assert result.attribution == pytest.approx(expected.attribution)
    assert restored.learned() == learned


@pytest.mark.parametrize("name", ["lorahub", "greedy_soup"])
def test_a_restored_combination_never_searches(engine, experts, name, monkeypatch):
    _, learned = learned_by(name, engine, experts)
    restored = build_strategy(name, LEARNERS[name], experts, learned=learned)
    searches = []
    monkeypatch.setattr(type(restored), "search", lambda self, engine: searches.append(1) or {})
    restored.run(REQUEST, engine)
    assert searches == []
    assert restored.coefficients == learned["coefficients"]


@pytest.mark.parametrize("change, reason", [
    ({"strategy": "model_swarms"}, "another strategy"),
    ({"experts": ["beta", "alpha", "gamma"]}, "another experts"),
    ({"dev_set_sha256": "0" * 64}, "another dev_set_sha256"),
])
def test_a_state_learned_elsewhere_is_refused(engine, experts, change, reason):
    _, learned = learned_by("greedy_soup", engine, experts)
    with pytest.raises(CompositionError, match=reason):
        build_strategy("greedy_soup", LEARNERS["greedy_soup"], experts, learned={**learned, **change})


def test_malformed_coefficients_are_refused_when_prepared(engine, experts):
    _, learned = learned_by("greedy_soup", engine, experts)
    strategy = build_strategy("greedy_soup", LEARNERS["greedy_soup"], experts,
                              learned={**learned, "coefficients": {"alpha": 1.0}})
    with pytest.raises(CompositionError, match="each expert of the system once"):
        strategy.prepare(engine)


@pytest.mark.parametrize("name", sorted(NON_LEARNERS))
def test_a_strategy_that_learns_nothing_has_nothing_to_store_or_restore(engine, experts, name):
    config = {"weights": {"alpha": 0.5, "beta": 0.25, "gamma": 0.25}} if name == "logit_mixture" else NON_LEARNERS[name]
    assert not strategy_learns(name, validate_strategy_config(name, config, IDS))
    strategy = build_strategy(name, config, experts)
    strategy.prepare(engine)
    with pytest.raises(CompositionError, match="learns nothing"):
        strategy.learned()
    with pytest.raises(CompositionError, match="learns nothing"):
        strategy.restore({"strategy": name})
