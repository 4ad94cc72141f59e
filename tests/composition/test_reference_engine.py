import copy

import pytest
import torch

from composition.engine import (
    GenerationRequest,
    MemoisingEngine,
    ReferenceEngine,
    ScoreRequest,
    mix_logprobs,
    pick_next_token,
)
from composition.errors import CompositionError


def greedy(prompt, mixture=None, **options):
    return GenerationRequest(prompt=prompt, mixture=mixture or {}, max_tokens=options.pop("max_tokens", 12), **options)


def test_kv_cached_greedy_generation_equals_recomputing_the_whole_sequence(tiny_base, experts, engine):
    uncached = ReferenceEngine(tiny_base, experts, use_cache=False)
    for mixture in ({}, {"alpha": 1.0}, {"alpha": 0.3, "gamma": 0.7}):
        request = greedy("hello world", mixture, max_tokens=15)
        cached_result, uncached_result = engine.generate([request])[0], uncached.generate([request])[0]
        assert cached_result.text == uncached_result.text
        assert cached_result.token_logprobs == pytest.approx(uncached_result.token_logprobs, abs=1e-4)


def test_one_expert_runs_exactly_its_adapter(tiny_base, experts, engine):
    """The expert's next-token distribution equals the base model with W + ΔW in every module."""
    expert = experts[1]
    dense = copy.deepcopy(ReferenceEngine(tiny_base).base)
    modules = dict(dense.named_modules())
    with torch.no_grad():
        for name, module in expert.adapter.modules.items():
            modules[name].weight += module.delta()
        ids = engine.tokenizer("abc def", return_tensors="pt")["input_ids"]
        expected = torch.log_softmax(dense(input_ids=ids).logits[0, -1], dim=-1)
    got = engine.next_token_logits([greedy("abc def", {"beta": 1.0})])[0]
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, engine.next_token_logits([greedy("abc def")])[0], atol=1e-3)


def test_a_mixture_is_the_weighted_mixture_of_the_experts_distributions(engine):
    alpha, gamma = engine.next_token_logits([greedy("xyz", {"alpha": 1.0}), greedy("xyz", {"gamma": 1.0})])
    mixed = engine.next_token_logits([greedy("xyz", {"alpha": 0.25, "gamma": 0.75})])[0]
    expected = torch.log(0.25 * alpha.exp() + 0.75 * gamma.exp())
    assert torch.allclose(mixed, expected, atol=1e-5)
    assert torch.allclose(mix_logprobs(torch.stack([alpha, gamma]), torch.tensor([0.25, 0.75])), expected, atol=1e-5)


def test_mixture_weights_must_sum_to_one_and_name_known_experts(engine):
    with pytest.raises(CompositionError, match="sum to 1"):
        engine.generate([greedy("a", {"alpha": 0.5, "beta": 0.2})])
    with pytest.raises(CompositionError, match="unknown expert 'nobody'"):
        engine.generate([greedy("a", {"nobody": 1.0})])


def test_generation_stops_at_max_tokens_with_finish_reason_length(engine):
    result = engine.generate([greedy("abc", {"alpha": 1.0}, max_tokens=5)])[0]
    assert (result.finish_reason, result.completion_tokens) == ("length", 5)
    assert len(result.token_logprobs) == 5 and len(result.text) <= 5  # special tokens decode to nothing
    assert result.prompt_tokens == 4  # <bos> a b c


def test_a_stop_sequence_ends_generation_and_is_cut_from_the_text(engine):
    free = engine.generate([greedy("abc", {"alpha": 1.0}, max_tokens=12)])[0].text
    assert len(free) >= 4, free
    stop = free[2:4]
    stopped = engine.generate([greedy("abc", {"alpha": 1.0}, max_tokens=12, stop=[stop])])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free[: free.find(stop)]
    assert stop not in stopped.text


def test_the_same_seed_reproduces_a_sample_and_other_seeds_vary(engine):
    def sample(seed):
        request = greedy("once upon", {"beta": 1.0}, max_tokens=20, temperature=1.5, seed=seed)
        return engine.generate([request])[0].text

    assert sample(11) == sample(11)
    assert len({sample(seed) for seed in range(5)}) > 1


def test_temperature_zero_is_greedy_and_top_p_keeps_the_nucleus():
    logprobs = torch.log(torch.tensor([0.1, 0.6, 0.25, 0.05]))
    generator = torch.Generator().manual_seed(0)
    assert pick_next_token(logprobs, temperature=0.0, top_p=1.0, generator=generator) == 1
    picks = {pick_next_token(logprobs, temperature=1.0, top_p=0.7, generator=generator) for _ in range(200)}
    assert picks == {1, 2}


def test_scoring_a_continuation_matches_the_log_probabilities_of_generating_it(engine):
    generated = engine.generate([greedy("score me", {"gamma": 1.0}, max_tokens=6)])[0]
    scores = engine.score([ScoreRequest(prompt="score me", continuation=generated.text, mixture={"gamma": 1.0})])[0]
    assert scores == pytest.approx(generated.token_logprobs[: len(scores)], abs=1e-4)


def test_embeddings_come_from_the_base_model_and_distinguish_texts(tiny_base, engine):
    plain = ReferenceEngine(tiny_base)
    texts = ["abc", "a much longer sentence"]
    embedded = engine.embed(texts)
    assert embedded.shape == (2, 64)
    assert torch.allclose(embedded, plain.embed(texts), atol=1e-5)
    assert not torch.allclose(embedded[0], embedded[1])


def test_the_memoising_engine_answers_a_repeated_greedy_request_once(engine):
    memo = MemoisingEngine(engine)
    request = greedy("memo", {"alpha": 1.0}, max_tokens=4)
    first = memo.generate([request])[0]
    second = memo.generate([request, greedy("memo", {"beta": 1.0}, max_tokens=4)])
    assert second[0] is first
    assert (memo.hits, memo.misses) == (1, 2)


class CountingEngine:
    """An inner engine that answers slowly and counts the requests it decodes."""

    def __init__(self, tokenizer):
        import threading

        self.tokenizer = tokenizer
        self.decoded = []
        self.lock = threading.Lock()

    def register_expert(self, expert):
        pass

    def generate(self, requests):
        import time

        from composition.engine import Generation

        time.sleep(0.05)
        with self.lock:
            self.decoded += [r.prompt for r in requests]
        return [Generation(text=r.prompt.upper(), finish_reason="stop", prompt_tokens=1, completion_tokens=1)
                for r in requests]


def test_the_memoising_engine_decodes_a_request_asked_by_many_threads_at_once_only_once(engine):
    from concurrent.futures import ThreadPoolExecutor

    inner = CountingEngine(engine.tokenizer)
    memo = MemoisingEngine(inner)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: memo.generate([greedy("same"), greedy(f"own {i}")]), range(8)))
    assert sorted(inner.decoded) == sorted(["same"] + [f"own {i}" for i in range(8)])
    assert {a[0].text for a in answers} == {"SAME"} and [a[1].text for a in answers] == [f"OWN {i}" for i in range(8)]


def test_the_memoising_engine_forgets_the_answers_of_an_expert_registered_again_with_other_weights(engine):
    from composition.experts import Expert

    inner = CountingEngine(engine.tokenizer)
    memo = MemoisingEngine(inner)
    first, second = (Expert(id="candidate", adapter=None, metadata={}) for _ in range(2))
    memo.register_expert(first)
    memo.generate([greedy("q", {"candidate": 1.0})])
    memo.register_expert(first)
    memo.generate([greedy("q", {"candidate": 1.0})])
    memo.register_expert(second)
    memo.generate([greedy("q", {"candidate": 1.0})])
    assert inner.decoded == ["q", "q"]
