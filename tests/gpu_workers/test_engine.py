"""MosaicEngine serves what composition's ReferenceEngine (transformers + peft, one request at a time) serves,
while batching requests for different experts and mixtures together with one KV cache."""
import pytest
import torch

from composition.engine import Engine, GenerationRequest, ReferenceEngine, ScoreRequest
from composition.errors import CompositionError
from composition.experts import load_expert
from gpu_workers.engine import MosaicEngine, get_engine

MIXED_BATCH = [
    GenerationRequest(prompt="hello", mixture={"alpha": 1.0}, max_tokens=9),
    GenerationRequest(prompt="a much longer prompt, to pad the others", mixture={}, max_tokens=5),
    GenerationRequest(prompt="abc", mixture={"beta": 1.0}, max_tokens=12),
    GenerationRequest(prompt="abc", mixture={"alpha": 0.3, "gamma": 0.7}, max_tokens=7),
    GenerationRequest(prompt="x", mixture={"gamma": 1.0}, max_tokens=3),
]


@pytest.fixture(scope="module")
def experts(gpu_world):
    _, adapters = gpu_world
    return [load_expert(adapter.id, adapter.path) for adapter in adapters.values()]


@pytest.fixture(scope="module")
def reference(gpu_world, experts):
    base, _ = gpu_world
    return ReferenceEngine(str(base), experts)


@pytest.fixture(scope="module")
def mosaic(gpu_world, experts):
    base, _ = gpu_world
    engine = MosaicEngine(base, lora_backend="torch")
    for expert in experts:
        engine.register_expert(expert)
    return engine


def test_mosaic_engine_implements_the_engine_protocol(mosaic):
    assert isinstance(mosaic, Engine)


def test_greedy_generation_of_a_mixed_batch_matches_the_reference(mosaic, reference):
    ours = mosaic.generate(MIXED_BATCH)
    theirs = reference.generate(MIXED_BATCH)

    assert [g.text for g in ours] == [g.text for g in theirs]
    assert [g.finish_reason for g in ours] == [g.finish_reason for g in theirs]
    assert [(g.prompt_tokens, g.completion_tokens) for g in ours] == [
        (g.prompt_tokens, g.completion_tokens) for g in theirs
    ]
    for mine, oracle in zip(ours, theirs):
        assert mine.token_logprobs == pytest.approx(oracle.token_logprobs, abs=1e-4)


def test_the_experts_change_what_is_generated(mosaic):
    texts = [g.text for g in mosaic.generate([
        GenerationRequest(prompt="abc", mixture=mixture, max_tokens=12)
        for mixture in ({}, {"alpha": 1.0}, {"beta": 1.0}, {"gamma": 1.0})
    ])]
    assert len(set(texts)) == 4


def test_next_token_logits_match_the_reference(mosaic, reference):
    ours = mosaic.next_token_logits(MIXED_BATCH)
    theirs = reference.next_token_logits(MIXED_BATCH)
    assert ours.shape == theirs.shape == (len(MIXED_BATCH), len(mosaic.tokenizer))
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_a_bfloat16_engine_stays_within_rounding_of_the_float32_reference(gpu_world, experts, reference):
    base, _ = gpu_world
    engine = MosaicEngine(base, lora_backend="torch", dtype=torch.bfloat16)
    for expert in experts:
        engine.register_expert(expert)
    ours, theirs = engine.next_token_logits(MIXED_BATCH), reference.next_token_logits(MIXED_BATCH)

    # bfloat16 rounding moves these log-probabilities by about 0.01; the experts move them by about 0.75
    assert torch.allclose(ours, theirs, atol=0.05)
    assert ours.argmax(-1).tolist() == theirs.argmax(-1).tolist()


def test_sampling_with_a_seed_follows_the_shared_decoding_rule(mosaic, reference):
    batch = [
        GenerationRequest(prompt="seeded", mixture={"beta": 1.0}, max_tokens=10, temperature=0.9, top_p=0.8, seed=7),
        GenerationRequest(prompt="other", mixture={"alpha": 0.5, "beta": 0.5}, max_tokens=10, temperature=1.2,
                          seed=11),
    ]
    assert [g.text for g in mosaic.generate(batch)] == [g.text for g in reference.generate(batch)]


def test_stop_sequences_end_generation_like_the_reference(mosaic, reference):
    probe = reference.generate([GenerationRequest(prompt="abc", mixture={"beta": 1.0}, max_tokens=12)])[0].text
    stop = probe[4:6]
    request = GenerationRequest(prompt="abc", mixture={"beta": 1.0}, max_tokens=12, stop=[stop])
    ours, theirs = mosaic.generate([request])[0], reference.generate([request])[0]
    assert (ours.text, ours.finish_reason) == (theirs.text, theirs.finish_reason)
    assert ours.finish_reason == "stop" and stop not in ours.text


def test_scores_match_the_reference(mosaic, reference):
    requests = [
        ScoreRequest(prompt="question: ", continuation="answer", mixture={"gamma": 1.0}),
        ScoreRequest(prompt="q", continuation="a longer continuation", mixture={"alpha": 0.4, "beta": 0.6}),
        ScoreRequest(prompt="nothing", continuation="", mixture={}),
    ]
    ours, theirs = mosaic.score(requests), reference.score(requests)
    assert [len(row) for row in ours] == [len(row) for row in theirs]
    for mine, oracle in zip(ours, theirs):
        assert mine == pytest.approx(oracle, abs=1e-4)


def test_scores_of_many_requests_are_computed_in_bounded_groups_and_still_match(mosaic, reference, monkeypatch):
    import gpu_workers.engine as engine_module

    monkeypatch.setattr(engine_module, "SCORE_ROW_TOKENS", 40)  # a few requests per forward
    forwards = []
    forward = mosaic._forward
    monkeypatch.setattr(mosaic, "_forward", lambda *args, **kwargs: forwards.append(args[0].shape) or forward(*args, **kwargs))
    requests = [ScoreRequest(prompt=f"prompt number {i}: ", continuation=" yes" * (1 + i % 3),
                             mixture={"alpha": 0.5, "gamma": 0.5} if i % 2 else {"beta": 1.0}) for i in range(8)]

    ours, theirs = mosaic.score(requests), reference.score(requests)

    assert len(forwards) > 1 and all(rows * width <= 40 or rows <= 2 for rows, width in forwards)
    for mine, oracle in zip(ours, theirs):
        assert mine == pytest.approx(oracle, abs=1e-4)


def test_options_scored_after_one_question_share_one_forward_row(mosaic, reference, monkeypatch):
    forwards = []
    forward = mosaic._forward
    monkeypatch.setattr(mosaic, "_forward", lambda *args, **kwargs: forwards.append(args[0].shape) or forward(*args, **kwargs))
    requests = [ScoreRequest(prompt="which is better? ", continuation=option, mixture={"alpha": 1.0})
                for option in ("a", "b", "c")]
    requests.append(ScoreRequest(prompt="which is better? ", continuation="a", mixture={"beta": 1.0}))

    ours, theirs = mosaic.score(requests), reference.score(requests)

    assert [rows for rows, _width in forwards] == [2]  # one row per mixture, not one per option
    for mine, oracle in zip(ours, theirs):
        assert mine == pytest.approx(oracle, abs=1e-4)


def test_embeddings_match_the_reference(mosaic, reference):
    texts = ["short", "a rather longer text to embed"]
    assert torch.allclose(mosaic.embed(texts), reference.embed(texts), atol=1e-4)


def test_streaming_callback_sees_the_text_grow(mosaic):
    seen: dict[int, list[str]] = {}
    results = mosaic.generate(MIXED_BATCH[:3], on_token=lambda index, text: seen.setdefault(index, []).append(text))
    for index, result in enumerate(results):
        assert seen[index][-1] == result.text
        assert len(seen[index]) == result.completion_tokens


def test_unknown_expert_in_a_mixture_is_refused(mosaic):
    with pytest.raises(CompositionError, match="unknown expert"):
        mosaic.generate([GenerationRequest(prompt="x", mixture={"nobody": 1.0})])


def test_triton_lora_inside_the_engine_gives_the_same_tokens(gpu_world, experts, mosaic):
    """The Triton kernels (interpreted here) inside a real forward pass, with a batch of mixed experts."""
    base, _ = gpu_world
    engine = MosaicEngine(base, lora_backend="triton")
    for expert in experts:
        engine.register_expert(expert)
    batch = [
        GenerationRequest(prompt="abc", mixture={"beta": 1.0}, max_tokens=4),
        GenerationRequest(prompt="hello", mixture={"alpha": 0.5, "gamma": 0.5}, max_tokens=3),
    ]
    assert [g.text for g in engine.generate(batch)] == [g.text for g in mosaic.generate(batch)]


def test_get_engine_loads_a_base_once_per_process(gpu_world):
    base, _ = gpu_world
    assert get_engine(str(base)) is get_engine(str(base))


def test_lane_weights_are_gathered_once_per_batch_and_again_when_a_slot_changes(mosaic, experts):
    from dataclasses import replace

    from composition.experts import LoraAdapter, LoraModule
    from gpu_workers.adapter_pool import AdapterPool
    from gpu_workers.engine import LoraBatchContext

    pool = AdapterPool(mosaic.pool.module_shapes, max_slots=4)
    alpha = next(expert for expert in experts if expert.id == "alpha")
    pool.register(alpha)
    context = LoraBatchContext()
    q_proj = next(name for name in alpha.adapter.modules if name.endswith("q_proj"))
    k_proj = q_proj.replace("q_proj", "k_proj")  # alpha adapts q, v and down only

    def decode_step():
        lane_slots = torch.tensor([pool.acquire(["alpha"])["alpha"], -1], dtype=torch.int32)
        context.set(lane_slots, 1, n_slots=pool.capacity, device=torch.device("cpu"), use_plan=False)
        lanes = context.lanes_for(q_proj, pool), context.lanes_for(k_proj, pool)
        context.clear()
        return lanes

    first, untouched = decode_step()
    assert untouched is None
    assert decode_step()[0] is first  # the next step reuses the gathered weights
    doubled = LoraAdapter({name: LoraModule(module.A, module.B * 2, module.scaling)
                           for name, module in alpha.adapter.modules.items()})
    pool.register(replace(alpha, adapter=doubled))
    again = decode_step()[0]
    assert torch.allclose(again.b[0], 2 * first.b[0])
    assert torch.equal(again.b[1], torch.zeros_like(again.b[1]))  # the base-model lane adds nothing


def test_a_kv_layer_grows_into_spare_columns_without_copying_what_it_holds():
    from transformers.cache_utils import DynamicLayer

    from gpu_workers.engine import _EngineCacheLayer

    growing, plain = _EngineCacheLayer(), DynamicLayer()
    steps = [torch.randn(2, 3, 5, 4)] + [torch.randn(2, 3, 1, 4) for _ in range(3)]
    for states in steps:
        growing.update(states, -states)
        plain.update(states, -states)
        if states is steps[1]:
            first_column = growing.keys.data_ptr()

    assert growing.keys.data_ptr() == first_column  # the last steps wrote in place
    assert torch.equal(growing.keys, plain.keys) and torch.equal(growing.values, plain.values)


def test_a_kv_layer_whose_keys_were_replaced_grows_from_the_replacement():
    from gpu_workers.engine import _EngineCacheLayer

    layer = _EngineCacheLayer()
    layer.update(torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4))
    kept_keys, kept_values = layer.keys[[0, 2]], layer.values[[0, 2]]  # a row left the batch
    layer.keys, layer.values = kept_keys, kept_values
    new_keys, new_values = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)

    keys, values = layer.update(new_keys, new_values)

    assert torch.equal(keys, torch.cat([kept_keys, new_keys], dim=2))
    assert torch.equal(values, torch.cat([kept_values, new_values], dim=2))


def test_a_kv_layer_keeps_the_rows_it_is_told_to():
    from gpu_workers.engine import _EngineCacheLayer

    layer = _EngineCacheLayer()
    keys, values = torch.randn(4, 2, 3, 4), torch.randn(4, 2, 3, 4)
    layer.update(keys, values)

    layer.batch_select_indices(torch.tensor([3, 1]))

    assert torch.equal(layer.keys, keys[[3, 1]]) and torch.equal(layer.values, values[[3, 1]])
