"""The prompt prefix cache: a prompt that starts like an earlier one on the same adapter row prefills only its new
tokens, and answers exactly as if it had prefilled them all."""
import pytest
import torch

from composition.engine import GenerationRequest, ReferenceEngine
from composition.experts import load_expert
from gpu_workers.batching import Scheduler
from gpu_workers.prefix_cache import PrefixCache

HEADER = "you are a careful assistant. "


def layers(tokens: int, fill: float = 1.0, n_layers: int = 2):
    """Stand-in keys and values [kv_heads=2, tokens, head_dim=4] per layer, column c filled with fill + c."""
    column = torch.arange(tokens, dtype=torch.float32)[None, :, None] + fill
    return [(column.expand(2, tokens, 4).clone(), -column.expand(2, tokens, 4).clone()) for _ in range(n_layers)]


def test_a_lookup_reuses_the_longest_common_prefix_on_the_same_row_key():
    cache = PrefixCache(1 << 20)
    cache.store(("alpha",), [1, 2, 3, 4], layers(4))
    cache.store(("alpha",), [1, 2, 9], layers(3, fill=10))

    hit = cache.lookup(("alpha",), [1, 2, 3, 7, 8])

    assert hit.length == 3
    assert hit.layers[0][0].shape == (2, 3, 4)
    assert hit.layers[0][0][0, :, 0].tolist() == [1.0, 2.0, 3.0]


def test_a_lookup_never_reuses_the_whole_prompt():
    cache = PrefixCache(1 << 20)
    cache.store(("alpha",), [1, 2, 3], layers(3))

    assert cache.lookup(("alpha",), [1, 2, 3]).length == 2  # the last token runs to give the next one's logits


def test_another_row_key_shares_nothing():
    cache = PrefixCache(1 << 20)
    cache.store(("alpha",), [1, 2, 3], layers(3))

    assert cache.lookup(("beta",), [1, 2, 3, 4]).length == 0
    assert cache.lookup((("alpha", 0.5), ("beta", 0.5)), [1, 2, 3, 4]).length == 0


def test_a_longer_prompt_replaces_the_entry_it_extends():
    cache = PrefixCache(1 << 20)
    cache.store(("alpha",), [1, 2], layers(2))
    cache.store(("alpha",), [1, 2, 3, 4], layers(4))
    cache.store(("alpha",), [1, 2, 3], layers(3))  # already held by the longer entry

    assert len(cache) == 1
    assert cache.bytes == sum(k.numel() * 4 + v.numel() * 4 for k, v in layers(4))


def test_the_least_recently_used_entries_leave_to_keep_within_the_budget():
    entry_bytes = sum(k.numel() * 4 + v.numel() * 4 for k, v in layers(4))
    cache = PrefixCache(2 * entry_bytes)
    cache.store(("alpha",), [1, 1, 1, 1], layers(4))
    cache.store(("beta",), [2, 2, 2, 2], layers(4))
    cache.lookup(("alpha",), [1, 1, 5])  # alpha is now the most recently used

    cache.store(("gamma",), [3, 3, 3, 3], layers(4))

    assert cache.bytes <= cache.budget_bytes and cache.stats.evictions == 1
    assert cache.lookup(("beta",), [2, 2, 5]).length == 0
    assert cache.lookup(("alpha",), [1, 1, 5]).length == 2


def test_forgetting_an_expert_drops_every_row_that_uses_it():
    cache = PrefixCache(1 << 20)
    cache.store(("alpha",), [1, 2, 3], layers(3))
    cache.store((("alpha", 0.5), ("beta", 0.5)), [1, 2, 3], layers(3))
    cache.store(("beta",), [1, 2, 3], layers(3))

    cache.forget("alpha")

    assert len(cache) == 1 and cache.lookup(("beta",), [1, 2, 3, 4]).length == 3


def test_a_stored_entry_is_a_copy():
    cache = PrefixCache(1 << 20)
    kv = layers(3)
    cache.store(("alpha",), [1, 2, 3], kv)
    kv[0][0].zero_()

    assert cache.lookup(("alpha",), [1, 2, 3, 4]).layers[0][0][0, :, 0].tolist() == [1.0, 2.0, 3.0]


# -- the engine -------------------------------------------------------------------------------------------------

@pytest.fixture
def engine(world_engine):
    return world_engine()


@pytest.fixture(scope="module")
def reference(gpu_world):
    base, adapters = gpu_world
    reference = ReferenceEngine(str(base))
    for adapter in adapters.values():
        reference.register_expert(load_expert(adapter.id, adapter.path))
    return reference


def greedy(prompt: str, mixture: dict, **options) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, mixture=mixture, max_tokens=8, **options)


def test_a_prompt_sharing_a_header_prefills_only_its_new_tokens_and_answers_as_the_reference(engine, reference):
    scheduler = Scheduler(engine)
    scheduler.generate([greedy(HEADER + "first question", {"alpha": 1.0})])
    reused_before = engine.prefix_cache.stats.reused_tokens

    later = greedy(HEADER + "second one", {"alpha": 1.0})
    answer = scheduler.generate([later])[0]

    header_tokens = len(engine._encode(HEADER))
    assert engine.prefix_cache.stats.reused_tokens - reused_before >= header_tokens - 1
    assert answer.text == reference.generate([later])[0].text


def test_one_prefill_mixes_rows_with_and_without_a_cached_prefix(engine, reference, world_engine):
    scheduler = Scheduler(engine)
    scheduler.generate([greedy(HEADER + "warm the cache", {"beta": 1.0})])
    batch = [
        greedy(HEADER + "a hit on beta, longer than the others", {"beta": 1.0}),
        greedy("no header at all", {"beta": 1.0}),
        greedy(HEADER + "a miss: gamma has no entry", {"gamma": 1.0}),
        greedy(HEADER + "two lanes", {"beta": 0.5, "gamma": 0.5}),
        greedy(HEADER + "adapters on one row", {"beta": 0.5, "gamma": 0.5}, mixture_space="adapters"),
    ]

    answers = scheduler.generate(batch)

    assert scheduler.stats.prefills == 2  # the warm-up, then all five in one prefill
    uncached = world_engine(prefix_cache_bytes=0)
    for request, answer in zip(batch, answers):
        # ReferenceEngine mixes distributions only; a row that mixes adapters is checked against no cache
        expected = Scheduler(uncached) if request.mixture_space == "adapters" else reference
        assert answer.text == expected.generate([request])[0].text, request.prompt


def test_a_reregistered_expert_answers_with_its_new_weights_not_its_old_cache(engine, gpu_world, reference):
    _base, adapters = gpu_world
    scheduler = Scheduler(engine)
    prompt = greedy(HEADER + "same words", {"alpha": 1.0})
    scheduler.generate([prompt])

    engine.register_expert(load_expert("alpha", adapters["gamma"].path))  # alpha's id, gamma's weights
    answer = scheduler.generate([prompt])[0]

    expected = reference.generate([greedy(HEADER + "same words", {"gamma": 1.0})])[0]
    assert answer.text == expected.text


def test_registering_the_same_adapter_again_keeps_its_cache(engine, gpu_world):
    _base, adapters = gpu_world
    Scheduler(engine).generate([greedy(HEADER + "kept", {"alpha": 1.0})])
    entries = len(engine.prefix_cache)

    engine.register_adapter("beta", str(adapters["beta"].path), adapters["beta"].sha256)
    engine.register_adapter("beta", str(adapters["beta"].path), adapters["beta"].sha256)

    assert len(engine.prefix_cache) == entries


def test_the_prefill_budget_counts_only_the_tokens_a_prefill_computes(engine):
    scheduler = Scheduler(engine)
    first = greedy(HEADER + "x", {"alpha": 1.0})
    scheduler.generate([first])
    sequence = engine.new_sequence(greedy(HEADER + "yz", {"alpha": 1.0}))

    assert engine.prefill_tokens(sequence) == len(sequence.prompt_ids) - len(engine._encode(HEADER))


def test_a_zero_budget_turns_the_cache_off(world_engine, reference):
    engine = world_engine(prefix_cache_bytes=0)
    scheduler = Scheduler(engine)
    request = greedy(HEADER + "no cache", {"alpha": 1.0})

    scheduler.generate([request])
    answer = scheduler.generate([request])[0]

    assert len(engine.prefix_cache) == 0 and engine.prefix_cache.stats.reused_tokens == 0
    assert answer.text == reference.generate([request])[0].text


def test_token_by_token_logits_compute_only_the_new_tokens_and_match_the_reference(engine, reference):
    request = greedy(HEADER + "one token at a time", {"alpha": 0.5, "gamma": 0.5})
    engine.next_token_logits([request])
    reused_before = engine.prefix_cache.stats.reused_tokens

    longer = greedy(request.prompt + "!", request.mixture)
    logits = engine.next_token_logits([longer])

    prompt_tokens = len(engine._encode(request.prompt))
    assert engine.prefix_cache.stats.reused_tokens - reused_before == 2 * prompt_tokens  # both lanes
    assert torch.allclose(logits, reference.next_token_logits([longer]), atol=1e-4)
