"""The decoding helpers every engine shares: penalties, log-probabilities, and the JSON constraint."""
import json

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composition.decoding import penalised_scores
from composition.engine import GenerationRequest, ReferenceEngine
from gpu_workers.engine import MosaicEngine


@pytest.fixture(scope="module")
def reference(tiny_base):
    return ReferenceEngine(tiny_base)


@pytest.fixture(scope="module")
def mosaic(tiny_base):
    return MosaicEngine(tiny_base, device="cpu")


def test_penalties_lower_the_scores_of_tokens_already_generated():
    logprobs = torch.log_softmax(torch.tensor([2.0, 1.0, 0.0, -1.0]), dim=-1)
    scores = penalised_scores(logprobs, [0, 0, 2], presence=0.5, frequency=0.25, logit_bias={3: 4.0})
    expected = logprobs - torch.tensor([0.5 + 2 * 0.25, 0.0, 0.5 + 0.25, -4.0])
    assert torch.allclose(scores, expected)


def test_a_frequency_penalty_changes_the_answer_and_every_engine_applies_it_alike(reference, mosaic):
    plain = GenerationRequest(prompt="hello", max_tokens=24, temperature=0)
    penalised = GenerationRequest(prompt="hello", max_tokens=24, temperature=0, frequency_penalty=2.0)

    before = reference.generate([plain])[0].text
    after = reference.generate([penalised])[0].text

    assert after != before
    assert max(after.count(c) for c in set(after)) < max(before.count(c) for c in set(before))
    assert mosaic.generate([penalised])[0].text == after


def test_a_logit_bias_forces_a_token(reference):
    x = reference.tokenizer.convert_tokens_to_ids("x")
    generation = reference.generate([GenerationRequest(prompt="hello", max_tokens=5, temperature=0,
                                                       logit_bias={x: 100.0})])[0]
    assert generation.text == "xxxxx"


def test_logprobs_are_the_mixtures_and_the_top_alternatives_lead_with_the_greedy_choice(reference, mosaic):
    request = GenerationRequest(prompt="abc", max_tokens=6, temperature=0, logprobs=3)
    generation = reference.generate([request])[0]

    assert [t.token_id for t in generation.tokens] == [t.top[0][0] for t in generation.tokens]
    assert all(len(t.top) == 3 for t in generation.tokens)
    text = reference.tokenizer.decode([t.token_id for t in generation.tokens])
    from composition.engine import ScoreRequest
    expected = reference.score([ScoreRequest(prompt="abc", continuation=text)])[0]
    assert [t.logprob for t in generation.tokens] == pytest.approx(expected, abs=1e-4)
    served = mosaic.generate([request])[0]
    assert [t.token_id for t in served.tokens] == [t.token_id for t in generation.tokens]
    assert [t.logprob for t in served.tokens] == pytest.approx(expected, abs=1e-3)


def test_a_json_object_answer_parses(reference):
    generation = reference.generate([GenerationRequest(prompt="hello", max_tokens=200, temperature=1.0, seed=3,
                                                       json_output=True)])[0]
    assert generation.finish_reason == "stop"
    assert isinstance(json.loads(generation.text), dict)


def _schemas(depth: int):
    leaves = st.one_of(
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.integers(-50, 50).map(lambda low: {"type": "integer", "minimum": low, "maximum": low + 20}),
        st.integers(0, 4).map(lambda most: {"type": "string", "maxLength": most}),
        st.lists(st.sampled_from(["red", "green", "blue", 7, None]), min_size=1, max_size=3, unique=True)
        .map(lambda values: {"enum": values}),
    )
    if depth == 0:
        return leaves
    inner = _schemas(depth - 1)
    objects = st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), inner, min_size=1, max_size=3).map(
        lambda properties: {"type": "object", "properties": properties, "required": sorted(properties),
                            "additionalProperties": False})
    arrays = inner.map(lambda items: {"type": "array", "items": items, "maxItems": 3})
    return st.one_of(leaves, objects, arrays)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=_schemas(2).map(lambda root: {"type": "object", "properties": {"answer": root},
                                            "required": ["answer"], "additionalProperties": False}),
       seed=st.integers(0, 2**31))
def test_every_constrained_answer_parses_and_matches_its_schema(reference, schema, seed):
    generation = reference.generate([GenerationRequest(prompt="json:", max_tokens=400, temperature=1.0,
                                                       seed=seed, json_output=True, json_schema=schema)])[0]
    assert generation.finish_reason == "stop", generation.text
    jsonschema.validate(json.loads(generation.text), schema)


def test_a_text_level_strategy_constrains_its_final_answer(reference, experts):
    from composition.strategies import build_strategy
    from composition.strategies.base import CompletionRequest

    debate = build_strategy("debate", {"rounds": 1}, experts[:2])
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    result = debate.run(CompletionRequest(prompt="json:", max_tokens=60, temperature=1.0, seed=2, json_output=True,
                                          json_schema=schema), reference)
    assert result.finish_reasons == ["stop"]
    jsonschema.validate(json.loads(result.texts[0]), schema)


@pytest.mark.parametrize("strategy, config", [("contrastive", {"expert": "alpha"}),
                                              ("logit_mixture", {"source": "router"})])
def test_strategies_that_decide_every_token_themselves_are_constrained_too(reference, experts, strategy, config):
    from composition.strategies import build_strategy
    from composition.strategies.base import CompletionRequest

    system = build_strategy(strategy, config, experts[:2])
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    result = system.run(CompletionRequest(prompt="json:", max_tokens=30, temperature=1.0, seed=4, json_output=True,
                                          json_schema=schema, logprobs=1), reference)
    assert result.finish_reasons == ["stop"], result.texts
    jsonschema.validate(json.loads(result.texts[0]), schema)
    assert len(result.generations[0].tokens) == result.completion_tokens - 1  # the end token is not listed


def test_a_rule_that_allows_no_token_of_the_json_answer_refuses_to_go_on(reference):
    from composition.engine import DecodeState
    from composition.errors import UnconstrainedAnswer

    tokenizer = reference.tokenizer
    state = DecodeState(GenerationRequest(prompt="x", max_tokens=5, json_output=True), tokenizer, prompt_tokens=2)
    only_x = torch.full((len(tokenizer),), float("-inf"))
    only_x[tokenizer.convert_tokens_to_ids("x")] = 0.0
    with pytest.raises(UnconstrainedAnswer):
        state.step(only_x)
