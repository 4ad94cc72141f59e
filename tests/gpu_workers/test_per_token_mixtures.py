"""Mixtures decided per token (a routed logit mixture, a switch) run inside the scheduler: each expert keeps a
lane over the same prefix, so k experts cost k rows of one forward per token, and the answers are the
reference engine's."""
import pytest

from composition.engine import GenerationRequest, ReferenceEngine
from composition.experts import load_expert
from composition.strategies import build_strategy
from composition.strategies.base import CompletionRequest
from gpu_workers.engine import MosaicEngine
from gpu_workers.serving import ServingEngine

IDS = ("alpha", "beta", "gamma")
ROUTING = {  # what the router reads to pick an expert
    "alpha": {"description": "reverse letters", "examples": ["rev abcd=", "rev hgfe="]},
    "beta": {"description": "upper case", "examples": ["UPPER CASE PLEASE", "MAKE IT BIG"]},
    "gamma": {"description": "digits", "examples": ["1234567890", "0987 6543"]},
}


@pytest.fixture(scope="module")
def experts(gpu_world):
    _base, adapters = gpu_world
    return [load_expert(e, adapters[e].path, ROUTING[e]) for e in IDS]


@pytest.fixture(scope="module")
def reference(gpu_world, experts):
    base, _adapters = gpu_world
    return ReferenceEngine(str(base), experts)


@pytest.fixture
def serving(gpu_world, experts):
    base, _adapters = gpu_world
    engine = MosaicEngine(base, lora_backend="torch")
    return ServingEngine(engine)


def counting_forwards(monkeypatch, engine):
    rows = []
    forward = engine._forward

    def counted(input_ids, *args, **kwargs):
        rows.append(input_ids.shape[0])
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(engine, "_forward", counted)
    return rows


@pytest.mark.parametrize("name,config", [
    ("switch", {"segment": "tokens", "segment_tokens": 3}),
    ("logit_mixture", {"source": "router", "router_temperature": 0.5}),
])
def test_a_per_token_mixture_costs_k_rows_of_one_forward_per_token(monkeypatch, experts, reference, serving,
                                                                  name, config):
    request = CompletionRequest(prompt="rev hgfe=", max_tokens=9, temperature=0.0)
    expected = build_strategy(name, config, experts).run(request, reference)
    rows = counting_forwards(monkeypatch, serving.engine)

    result = build_strategy(name, config, experts).run(request, serving)

    assert result.texts == expected.texts
    assert result.attribution == pytest.approx(expected.attribution, abs=1e-4)
    tokens = result.completion_tokens
    assert rows == [len(IDS)] * tokens  # one prefill and tokens - 1 decode steps, 3 rows each


def test_a_rule_that_names_an_expert_outside_the_mixture_is_refused(serving, experts):
    for expert in experts:
        serving.register_expert(expert)
    request = GenerationRequest(prompt="x", mixture={"alpha": 0.5, "beta": 0.5}, max_tokens=3,
                                mixture_rule=lambda _context, _step: {"gamma": 1.0})
    with pytest.raises(Exception, match="outside the request's mixture"):
        serving.generate([request])


def test_a_failing_rule_fails_its_request_alone(serving, experts):
    for expert in experts:
        serving.register_expert(expert)

    def broken(_context, step):
        if step == 2:
            raise RuntimeError("the router broke")
        return {"alpha": 1.0}

    scheduler = serving.scheduler
    failing = scheduler.submit([GenerationRequest(prompt="x", mixture={"alpha": 0.5, "beta": 0.5}, max_tokens=6,
                                                  mixture_rule=broken)])
    other = GenerationRequest(prompt="y", mixture={"gamma": 1.0}, max_tokens=6)
    healthy = scheduler.submit([other])
    assert failing.done.wait(60) and healthy.done.wait(60)
    assert "the router broke" in str(failing.error)
    assert healthy.error is None and healthy.results[0].text == serving.engine.generate([other])[0].text


def recording_lane_weights(monkeypatch):
    """Every (lane slots, lane weights) the engine hands the LoRA for a forward: [rows, k] each."""
    import gpu_workers.engine as engine_module

    seen = []
    gather = engine_module.gather_lane_lora

    def recorded(a, b, scalings, lane_slots, lane_weights):
        seen.append((lane_slots.cpu().clone(), lane_weights.cpu().clone()))
        return gather(a, b, scalings, lane_slots, lane_weights)

    monkeypatch.setattr(engine_module, "gather_lane_lora", recorded)
    return seen


@pytest.mark.parametrize("name,config", [
    ("switch", {"segment": "tokens", "segment_tokens": 3, "mix": "adapters"}),
    ("logit_mixture", {"source": "router", "router_temperature": 0.5, "mix": "adapters"}),
])
def test_a_per_token_mixture_of_adapters_is_one_row_through_the_weighted_lora(monkeypatch, experts, reference,
                                                                              serving, name, config):
    request = CompletionRequest(prompt="rev hgfe=", max_tokens=9, temperature=0.0)
    expected = build_strategy(name, config, experts).run(request, reference)
    rows = counting_forwards(monkeypatch, serving.engine)
    weights_seen = recording_lane_weights(monkeypatch)

    result = build_strategy(name, config, experts).run(request, serving)

    assert result.texts == expected.texts
    assert result.attribution == pytest.approx(expected.attribution, abs=1e-4)
    assert rows == [1] * result.completion_tokens  # one row per token, whatever the number of experts
    assert weights_seen and all(slots.shape == (1, len(IDS)) for slots, _ in weights_seen)
    if name == "logit_mixture":  # the router's soft weights reach the LoRA, not 1 per adapter
        assert any(0 < float(w.min()) and float(w.max()) < 1 for _, w in weights_seen)


def test_a_row_mixing_adapters_matches_the_reference_token_by_token(experts, reference, serving):
    weights_by_step = [{"alpha": 0.7, "beta": 0.2, "gamma": 0.1}, {"alpha": 0.1, "beta": 0.1, "gamma": 0.8},
                       {"alpha": 0.3, "beta": 0.6, "gamma": 0.1}]
    request = GenerationRequest(prompt="rev abcd=", mixture={e: 1 / 3 for e in IDS}, max_tokens=8, logprobs=0,
                                mixture_space="adapters",
                                mixture_rule=lambda _context, step: weights_by_step[step % len(weights_by_step)])
    for expert in experts:
        serving.register_expert(expert)

    expected = reference.generate([request])[0]
    got = serving.scheduler.generate([request])[0]

    assert got.text == expected.text
    assert got.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-4)
    assert got.token_logprobs != pytest.approx(
        reference.generate([GenerationRequest(prompt="rev abcd=", mixture={e: 1 / 3 for e in IDS}, max_tokens=8,
                                              logprobs=0, mixture_rule=request.mixture_rule)])[0].token_logprobs,
        abs=1e-4)  # mixing adapters is not mixing distributions


def test_an_unknown_mixture_space_is_refused(serving):
    with pytest.raises(Exception, match="mixture_space"):
        serving.generate([GenerationRequest(prompt="x", mixture_space="weights")])
