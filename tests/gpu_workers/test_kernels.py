"""The Triton kernels, run through the interpreter (TRITON_INTERPRET=1, set in tests/conftest.py), compute
the same function as their torch references on fresh random inputs of odd sizes."""
import zlib

import pytest
import torch

from gpu_workers.kernels.lora import (
    LoraKernelConfig,
    apply_lane_lora,
    apply_lora,
    build_lora_plan,
    default_kernel_config,
    gather_lane_lora,
    lora_reference,
)
from gpu_workers.kernels.mixture import apply_top_p, mix_next_token_logprobs, mixture_reference

# Relative error ||out - ref|| / ||ref|| allowed per dtype (the output itself is rounded to the dtype).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any()
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def random_lora_case(*, rows, in_features, out_features, n_slots, rank, k, dtype, seed, empty_fraction=0.25):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, in_features, generator=generator).to(dtype)
    a = (torch.randn(n_slots, rank, in_features, generator=generator) / in_features**0.5).to(dtype)
    b = torch.randn(n_slots, out_features, rank, generator=generator).to(dtype)
    scalings = torch.rand(n_slots, generator=generator) + 0.5
    indices = torch.randint(0, n_slots, (rows, k), generator=generator)
    indices[torch.rand(rows, k, generator=generator) < empty_fraction] = -1
    weights = torch.rand(rows, k, generator=generator)
    y = torch.randn(rows, out_features, generator=generator).to(dtype)
    return y, x, a, b, scalings, indices, weights


def expected(y, x, a, b, scalings, indices, weights):
    return y.double() + lora_reference(x.double(), a.double(), b.double(), scalings, indices, weights).double()


CASES = [
    # rows, in, out, slots, rank, k, dtype
    (1, 17, 64, 3, 1, 1, torch.float32),
    (7, 64, 96, 4, 8, 1, torch.float32),
    (33, 96, 17, 5, 16, 1, torch.float32),
    (7, 17, 96, 3, 33, 2, torch.float32),
    (33, 64, 64, 6, 64, 4, torch.float32),
    (7, 96, 64, 4, 16, 1, torch.float16),
    (33, 64, 17, 3, 5, 3, torch.float16),
    (1, 64, 96, 2, 64, 2, torch.bfloat16),
    (33, 17, 64, 4, 16, 1, torch.bfloat16),
    (7, 96, 96, 5, 24, 4, torch.bfloat16),
    (33, 64, 96, 3, 128, 1, torch.bfloat16),  # the largest rank served
    (7, 17, 64, 2, 128, 2, torch.float32),
]


@pytest.mark.parametrize("rows,in_features,out_features,n_slots,rank,k,dtype", CASES)
def test_triton_lora_matches_reference(rows, in_features, out_features, n_slots, rank, k, dtype):
    seed = zlib.crc32(repr((rows, in_features, out_features, rank, k, dtype)).encode())
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=rows, in_features=in_features, out_features=out_features, n_slots=n_slots, rank=rank, k=k,
        dtype=dtype, seed=seed,
    )
    ref = expected(y, x, a, b, scalings, indices, weights)

    out = apply_lora(y.clone(), x, a, b, scalings, indices, weights, backend="triton")

    assert out.dtype == dtype
    assert relative_error(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_lora_backend_matches_reference(dtype):
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=33, in_features=64, out_features=96, n_slots=5, rank=16, k=3, dtype=dtype, seed=7
    )
    out = apply_lora(y.clone(), x, a, b, scalings, indices, weights, backend="torch")
    assert relative_error(out, expected(y, x, a, b, scalings, indices, weights)) < TOLERANCE[dtype]


def lane_case(*, lanes, seq, k, dtype, seed):
    """A batch of `lanes` sequences of `seq` tokens; every token of a lane uses the lane's k adapters."""
    y, x, a, b, scalings, lane_slots, lane_weights = random_lora_case(
        rows=lanes, in_features=64, out_features=96, n_slots=5, rank=8, k=k, dtype=dtype, seed=seed,
    )
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(lanes, seq, 64, generator=generator).to(dtype)
    y = torch.randn(lanes, seq, 96, generator=generator).to(dtype)
    return y, x, a, b, scalings, lane_slots, lane_weights


def lane_expected(y, x, a, b, scalings, lane_slots, lane_weights):
    """The reference, row by row: each token row carries its lane's (slot, weight) pairs."""
    seq = x.shape[1]
    flat = expected(y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1]), a, b, scalings,
                    lane_slots.repeat_interleave(seq, dim=0), lane_weights.repeat_interleave(seq, dim=0))
    return flat.reshape(y.shape)


@pytest.mark.parametrize("lanes,seq,k,dtype", [
    (8, 1, 1, torch.float32),  # a decode step, one adapter per lane
    (3, 13, 1, torch.float32),  # a prefill
    (5, 4, 3, torch.float32),  # a weighted mix of three adapters per lane
    (6, 1, 2, torch.bfloat16),
])
def test_lane_lora_matches_reference(lanes, seq, k, dtype):
    y, x, a, b, scalings, lane_slots, lane_weights = lane_case(lanes=lanes, seq=seq, k=k, dtype=dtype, seed=11)
    ref = lane_expected(y, x, a, b, scalings, lane_slots, lane_weights)

    out = apply_lane_lora(y.clone(), x, gather_lane_lora(a, b, scalings, lane_slots, lane_weights))

    assert out.dtype == dtype
    assert relative_error(out, ref) < TOLERANCE[dtype]


def test_lanes_without_adapter_are_left_unchanged_beside_lanes_with_one():
    y, x, a, b, scalings, lane_slots, lane_weights = lane_case(lanes=4, seq=3, k=1, dtype=torch.float32, seed=12)
    lane_slots[:, 0] = torch.tensor([2, -1, 0, -1])

    out = apply_lane_lora(y.clone(), x, gather_lane_lora(a, b, scalings, lane_slots, lane_weights))

    assert torch.equal(out[[1, 3]], y[[1, 3]])
    assert relative_error(out, lane_expected(y, x, a, b, scalings, lane_slots, lane_weights)) < 1e-5
    assert not torch.allclose(out[0], y[0])


def test_lane_lora_reads_b_stored_rank_major_as_the_pool_does():
    y, x, a, b, scalings, lane_slots, lane_weights = lane_case(lanes=4, seq=2, k=2, dtype=torch.float32, seed=13)
    rank_major = b.transpose(1, 2).contiguous().transpose(1, 2)
    out = apply_lane_lora(y.clone(), x, gather_lane_lora(a, rank_major, scalings, lane_slots, lane_weights))
    assert relative_error(out, lane_expected(y, x, a, b, scalings, lane_slots, lane_weights)) < 1e-5


def test_lane_lora_refuses_a_batch_of_another_size():
    y, x, a, b, scalings, lane_slots, lane_weights = lane_case(lanes=4, seq=2, k=1, dtype=torch.float32, seed=14)
    with pytest.raises(ValueError, match="shape mismatch"):
        apply_lane_lora(y[:3], x[:3], gather_lane_lora(a, b, scalings, lane_slots, lane_weights))


def test_rows_without_adapter_are_left_unchanged():
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=7, in_features=17, out_features=64, n_slots=3, rank=8, k=2, dtype=torch.float32, seed=3,
        empty_fraction=0.0,
    )
    indices[[0, 4]] = -1
    out = apply_lora(y.clone(), x, a, b, scalings, indices, weights, backend="triton")
    assert torch.equal(out[[0, 4]], y[[0, 4]])
    assert not torch.allclose(out[1], y[1])


def test_batch_with_no_adapter_at_all_is_a_no_op():
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=7, in_features=64, out_features=17, n_slots=2, rank=4, k=1, dtype=torch.float16, seed=4,
    )
    indices[:] = -1
    assert torch.equal(apply_lora(y.clone(), x, a, b, scalings, indices, weights, backend="triton"), y)


def test_padded_ranks_are_skipped_by_the_rank_array():
    """Slots hold different ranks zero-padded to r_max; garbage past a slot's rank must not be read."""
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=33, in_features=64, out_features=64, n_slots=3, rank=32, k=1, dtype=torch.float32, seed=5,
    )
    ranks = torch.tensor([4, 32, 9], dtype=torch.int32)
    clean_a, clean_b = a.clone(), b.clone()
    for slot, rank in enumerate(ranks.tolist()):
        clean_a[slot, rank:] = 0
        clean_b[slot, :, rank:] = 0
        a[slot, rank:] = float("nan")
        b[slot, :, rank:] = float("nan")
    ref = expected(y, x, clean_a, clean_b, scalings, indices, weights)

    out = apply_lora(y.clone(), x, a, b, scalings, indices, weights, ranks=ranks, backend="triton")

    assert relative_error(out, ref) < TOLERANCE[torch.float32]


def test_a_plan_is_shared_across_projections_and_split_k_gives_the_same_result():
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=33, in_features=96, out_features=64, n_slots=4, rank=16, k=1, dtype=torch.float32, seed=6,
    )
    plan = build_lora_plan(indices, weights, n_slots=4)
    ref = expected(y, x, a, b, scalings, indices, weights)
    for split_k in (1, 2):
        out = apply_lora(y.clone(), x, a, b, scalings, indices, weights, plan=plan, split_k=split_k,
                         backend="triton")
        assert relative_error(out, ref) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("config", [
    default_kernel_config(torch.bfloat16, 16, in_features=11008, num_pairs=64),  # the long-reduction launch
    default_kernel_config(torch.bfloat16, 16, in_features=4096, num_pairs=64),  # the decode launch
    LoraKernelConfig(block_k=128, block_n=256, split_k=2, shrink_warps=8, expand_warps=8, expand_stages=3),
])
def test_every_launch_configuration_computes_the_same_delta(config):
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=19, in_features=300, out_features=200, n_slots=4, rank=16, k=1, dtype=torch.bfloat16, seed=8,
    )
    out = apply_lora(y.clone(), x, a, b, scalings, indices, weights, config=config, backend="triton")
    assert relative_error(out, expected(y, x, a, b, scalings, indices, weights)) < TOLERANCE[torch.bfloat16]


def test_plan_tiles_each_hold_one_slot_and_cover_every_pair_once():
    indices = torch.tensor([[2, -1], [0, 2], [2, 1], [-1, -1], [2, 0]])
    plan = build_lora_plan(indices, torch.ones(5, 2), n_slots=3, block_m=2)
    covered = []
    for slot, start, end in zip(plan.tile_slot.tolist(), plan.tile_start.tolist(), plan.tile_end.tolist()):
        if slot < 0:
            continue
        pairs = range(start, end)
        assert 0 < len(pairs) <= 2
        rows = plan.pair_rows[start:end].tolist()
        assert all(slot in indices[row].tolist() for row in rows)
        covered.extend((row, slot) for row in rows)
    expected_pairs = [(r, s) for r in range(5) for s in indices[r].tolist() if s >= 0]
    assert sorted(covered) == sorted(expected_pairs)


def test_mismatched_shapes_are_refused():
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=7, in_features=17, out_features=64, n_slots=3, rank=8, k=1, dtype=torch.float32, seed=8,
    )
    with pytest.raises(ValueError, match="adapter stacks"):
        apply_lora(y, x[:, :16], a, b, scalings, indices, weights, backend="triton")


@pytest.mark.parametrize(
    "rows,k,vocab,dtype,top_p",
    [
        (1, 1, 17, torch.float32, 1.0),
        (3, 2, 100, torch.float32, 0.9),
        (4, 3, 1000, torch.bfloat16, 0.8),
        (2, 4, 3001, torch.float16, 1.0),
    ],
)
def test_triton_mixture_matches_reference(rows, k, vocab, dtype, top_p):
    generator = torch.Generator().manual_seed(rows * 1000 + vocab)
    logits = (torch.randn(rows, k, vocab, generator=generator) * 4).to(dtype)
    weights = torch.rand(rows, k, generator=generator)
    temperature = torch.rand(rows, generator=generator) + 0.3

    out = mix_next_token_logprobs(logits, weights, temperature=temperature, top_p=top_p, backend="triton")
    ref = mixture_reference(logits.double(), weights, temperature=temperature, top_p=top_p)

    kept = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out), kept)
    assert (out[kept] - ref[kept]).abs().max().item() < 1e-4
    assert torch.allclose(out.exp().sum(-1), torch.ones(rows), atol=1e-4)


def test_mixture_of_one_expert_is_its_own_tempered_distribution():
    logits = torch.randn(2, 1, 50)
    out = mix_next_token_logprobs(logits, torch.ones(2, 1), temperature=0.5, backend="triton")
    assert torch.allclose(out, torch.log_softmax(logits[:, 0] / 0.5, dim=-1), atol=1e-5)


def test_zero_weight_expert_does_not_count():
    logits = torch.randn(3, 2, 64)
    weights = torch.tensor([[1.0, 0.0]] * 3)
    out = mix_next_token_logprobs(logits, weights, backend="triton")
    assert torch.allclose(out, torch.log_softmax(logits[:, 0], dim=-1), atol=1e-5)


def test_tokens_masked_out_in_whole_chunks_stay_impossible_and_the_rest_is_a_distribution():
    logits = torch.randn(2, 2, 3000)
    logits[:, :, 1000:2600] = float("-inf")  # more than one whole chunk of the vocabulary, in both experts
    weights = torch.tensor([[0.3, 0.7], [1.0, 1.0]])

    out = mix_next_token_logprobs(logits, weights, temperature=0.7, backend="triton")

    ref = mixture_reference(logits.double(), weights, temperature=0.7)
    assert torch.isinf(out[:, 1000:2600]).all()
    kept = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out), kept)
    assert (out[kept] - ref[kept]).abs().max().item() < 1e-4


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logprobs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = apply_top_p(logprobs, 0.75).exp()
    assert torch.allclose(kept, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


def test_negative_mixture_weights_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        mix_next_token_logprobs(torch.randn(1, 2, 8), torch.tensor([[1.0, -0.5]]), backend="triton")


def test_b_stored_rank_major_as_the_pool_does_gives_the_same_result():
    y, x, a, b, scalings, indices, weights = random_lora_case(
        rows=33, in_features=64, out_features=96, n_slots=4, rank=16, k=1, dtype=torch.bfloat16, seed=9,
    )
    rank_major = b.transpose(1, 2).contiguous().transpose(1, 2)  # [n, out, r] view of [n, r, out] storage
    assert rank_major.stride(1) == 1
    out = apply_lora(y.clone(), x, a, rank_major, scalings, indices, weights, backend="triton")
    assert relative_error(out, expected(y, x, a, b, scalings, indices, weights)) < TOLERANCE[torch.bfloat16]
