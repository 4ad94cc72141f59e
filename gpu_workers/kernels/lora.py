"""Mixed-adapter LoRA: every token row carries up to k (adapter slot, weight) pairs and gets

    y[t] += sum_j  w[t, j] * scaling[slot_j] * B[slot_j] @ (A[slot_j] @ x[t])

Adapters live stacked in slots: A [n_slots, r_max, in], B [n_slots, out, r_max] (ranks below r_max are
zero-padded; `ranks` lets the kernel skip the padding). Slot index -1 means "no adapter" for that pair.

The Triton path runs in two launches. A plan (built once per batch and shared by every projection of the
model, since all projections see the same rows) sorts the (row, j) pairs by slot and cuts them into tiles
that each hold pairs of one slot only, so a program reads its adapter's weights once for the whole tile:
  shrink: h[pair] = x[row] @ A[slot]^T           (fp32, optionally split along `in` over several programs)
  expand: y[row] += (w * scaling * h[pair]) @ B[slot]^T
Rows that appear once (k == 1) are updated in place; with k > 1 several tiles may touch one row, so the
expand adds into a float32 scratch with atomics, added to y afterwards.

The CPU path works per lane (one sequence of the batch, all of whose tokens use the same adapters), which is
how the engine batches: once per batch composition, gather_lane_lora copies each lane's k adapters side by
side along the rank (a weighted mix of k rank-r adapters is one adapter of rank k*r, its weights and scalings
folded into B), and every forward then adds the delta with two batched products per projection, whatever
the number of distinct adapters:
  y[lane] += (x[lane] @ A_lane^T) @ B_lane^T       (apply_lane_lora; one bmm and one baddbmm_)
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with torch on Linux
    triton = None
    tl = None

BACKENDS = ("auto", "torch", "triton")


def lora_reference(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scalings: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """The LoRA delta [T, out] in float32, written to be obviously right: gather each row's adapters, einsum."""
    valid = indices >= 0
    slots = indices.clamp(min=0).long()
    coef = torch.where(valid, weights.float() * scalings.float()[slots], torch.zeros((), device=x.device))
    a_rows = a.float()[slots]  # [T, k, r, in]
    b_rows = b.float()[slots]  # [T, k, out, r]
    h = torch.einsum("ti,tkri->tkr", x.float(), a_rows)
    return torch.einsum("tkr,tkor,tk->to", h, b_rows, coef)


@dataclass(frozen=True)
class LaneLora:
    """One projection's adapters gathered per lane: the lane's k adapters stacked along the rank."""

    a: torch.Tensor  # [lanes, k * r_max, in]
    b: torch.Tensor  # [lanes, k * r_max, out]: B^T with weight * scaling folded in


def gather_lane_lora(
    a: torch.Tensor, b: torch.Tensor, scalings: torch.Tensor, lane_slots: torch.Tensor, lane_weights: torch.Tensor
) -> LaneLora:
    """a [n_slots, r_max, in], b [n_slots, out, r_max] (the pool's stacks); lane_slots [lanes, k] (int, -1 =
    none) and lane_weights [lanes, k]. A lane without adapters gets zeros (its delta is 0)."""
    if lane_slots.dim() == 1:
        lane_slots, lane_weights = lane_slots[:, None], lane_weights[:, None]
    lanes, k = lane_slots.shape
    valid = lane_slots >= 0
    slots = lane_slots.clamp(min=0).long().to(a.device)
    coef = torch.where(valid.to(a.device), lane_weights.to(a.device).float() * scalings.float()[slots], 0.0)
    # index_select, not a[slots]: on the CPU advanced indexing copies several times slower.
    a_lanes = a.index_select(0, slots.flatten()).reshape(lanes, k * a.shape[1], a.shape[2])
    # b.transpose(1, 2) is [slot, r, out], how the pool stores B: the gather copies contiguous rows.
    b_lanes = b.transpose(1, 2).index_select(0, slots.flatten()).reshape(lanes, k, b.shape[2], b.shape[1])
    b_lanes.mul_(coef[:, :, None, None].to(b.dtype))
    return LaneLora(a=a_lanes, b=b_lanes.reshape(lanes, k * b.shape[2], b.shape[1]))


def apply_lane_lora(y: torch.Tensor, x: torch.Tensor, lanes: LaneLora) -> torch.Tensor:
    """Add the LoRA delta to y [lanes, seq, out] in place: y[l] += x[l] @ A_l^T @ B_l. x is [lanes, seq, in]."""
    if x.dim() != 3 or y.dim() != 3 or x.shape[:2] != y.shape[:2] or x.shape[0] != lanes.a.shape[0]:
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, y {tuple(y.shape)}, lanes {lanes.a.shape[0]}")
    h = torch.bmm(x, lanes.a.transpose(1, 2))
    return y.baddbmm_(h, lanes.b)


@dataclass(frozen=True)
class LoraPlan:
    """The batch's (row, adapter) pairs sorted by slot and cut into single-slot tiles of `block_m` pairs."""

    pair_rows: torch.Tensor  # [P] int32: the token row of each pair, pairs sorted by slot
    pair_weights: torch.Tensor  # [P] float32: the pair's mixture weight (0 for unused pairs)
    tile_slot: torch.Tensor  # [n_tiles] int32: the slot a tile reads, -1 for a spare tile
    tile_start: torch.Tensor  # [n_tiles] int32: first pair of the tile
    tile_end: torch.Tensor  # [n_tiles] int32: one past its last pair
    block_m: int
    num_rows: int
    k: int

    @property
    def num_pairs(self) -> int:
        return self.pair_rows.shape[0]

    @property
    def num_tiles(self) -> int:
        return self.tile_slot.shape[0]


def default_block_m(num_pairs: int) -> int:
    return 16 if num_pairs <= 256 else 64


def build_lora_plan(
    indices: torch.Tensor, weights: torch.Tensor, *, n_slots: int, block_m: int | None = None
) -> LoraPlan:
    """Sort pairs by slot and describe the tiles, with tensor ops only (no host synchronisation).

    The number of tiles is bounded by ceil(P / block_m) + min(n_slots, P); tiles past the real count get
    slot -1 and their programs exit at once."""
    if indices.dim() == 1:
        indices = indices[:, None]
        weights = weights[:, None]
    num_rows, k = indices.shape
    num_pairs = num_rows * k
    block_m = block_m or default_block_m(num_pairs)
    device = indices.device
    flat = indices.reshape(-1).long()
    key = torch.where(flat >= 0, flat, torch.full_like(flat, n_slots))
    key = key.clamp(max=n_slots)
    order = torch.sort(key, stable=True).indices
    pair_rows = (order // k).to(torch.int32)
    pair_weights = weights.reshape(-1).float()[order] * (key[order] < n_slots)

    counts = torch.zeros(n_slots + 1, dtype=torch.long, device=device)
    counts.scatter_add_(0, key, torch.ones_like(key))
    counts = counts[:n_slots]
    seg_start = torch.cumsum(counts, 0) - counts
    tiles_per_slot = (counts + block_m - 1) // block_m
    tiles_cum = torch.cumsum(tiles_per_slot, 0)

    n_tiles = max(1, -(-num_pairs // block_m) + min(n_slots, num_pairs))
    tile_ids = torch.arange(n_tiles, device=device)
    slot_of_tile = torch.searchsorted(tiles_cum, tile_ids, right=True)
    real = slot_of_tile < n_slots
    slot = slot_of_tile.clamp(max=n_slots - 1)
    local = tile_ids - (tiles_cum[slot] - tiles_per_slot[slot])
    start = seg_start[slot] + local * block_m
    end = torch.minimum(start + block_m, seg_start[slot] + counts[slot])
    return LoraPlan(
        pair_rows=pair_rows,
        pair_weights=pair_weights,
        tile_slot=torch.where(real, slot, torch.full_like(slot, -1)).to(torch.int32),
        tile_start=torch.where(real, start, torch.zeros_like(start)).to(torch.int32),
        tile_end=torch.where(real, end, torch.zeros_like(end)).to(torch.int32),
        block_m=block_m,
        num_rows=num_rows,
        k=k,
    )


def _lora_torch(y, x, a, b, scalings, indices, weights):
    """CPU path: one pass per slot in use, reading each adapter once; the same arithmetic as peft
    (h = x A^T in the input dtype, then h B^T * scaling)."""
    if indices.dim() == 1:
        indices, weights = indices[:, None], weights[:, None]
    delta = torch.zeros(y.shape, dtype=torch.float32, device=y.device)
    for slot in torch.unique(indices[indices >= 0]).tolist():
        rows, cols = torch.nonzero(indices == slot, as_tuple=True)
        h = x[rows] @ a[slot].T
        coef = (weights[rows, cols].float() * scalings[slot].float())[:, None]
        delta.index_add_(0, rows, (h @ b[slot].T).float() * coef)
    y += delta.to(y.dtype)
    return y


if triton is not None:

    @triton.jit
    def _lora_shrink_kernel(
        x_ptr, a_ptr, ranks_ptr, h_ptr,
        pair_rows_ptr, tile_slot_ptr, tile_start_ptr, tile_end_ptr,
        IN, K_PER_SPLIT,
        stride_xm, stride_xk,
        stride_as, stride_ar, stride_ak,
        stride_hs, stride_hp,
        BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        tile = tl.program_id(0)
        split = tl.program_id(1)
        slot = tl.load(tile_slot_ptr + tile)
        if slot >= 0:
            start = tl.load(tile_start_ptr + tile)
            end = tl.load(tile_end_ptr + tile)
            offs_m = start + tl.arange(0, BLOCK_M)
            m_mask = offs_m < end
            rows = tl.load(pair_rows_ptr + offs_m, mask=m_mask, other=0).to(tl.int64)
            rank = tl.load(ranks_ptr + slot)
            offs_r = tl.arange(0, BLOCK_R)
            r_mask = offs_r < rank
            a_base = a_ptr + slot.to(tl.int64) * stride_as
            acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
            k_begin = split * K_PER_SPLIT
            for k0 in range(0, K_PER_SPLIT, BLOCK_K):
                offs_k = k_begin + k0 + tl.arange(0, BLOCK_K)
                k_mask = offs_k < IN
                xt = tl.load(
                    x_ptr + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=m_mask[:, None] & k_mask[None, :], other=0.0,
                )
                at = tl.load(
                    a_base + offs_r[:, None] * stride_ar + offs_k[None, :] * stride_ak,
                    mask=r_mask[:, None] & k_mask[None, :], other=0.0,
                )
                if UPCAST:
                    acc = tl.dot(xt.to(tl.float32), tl.trans(at.to(tl.float32)), acc, input_precision="ieee")
                elif IEEE:
                    acc = tl.dot(xt, tl.trans(at), acc, input_precision="ieee")
                else:
                    acc = tl.dot(xt, tl.trans(at), acc)
            h_ptrs = h_ptr + split * stride_hs + offs_m[:, None].to(tl.int64) * stride_hp + offs_r[None, :]
            tl.store(h_ptrs, acc, mask=m_mask[:, None])

    @triton.jit
    def _lora_expand_kernel(
        h_ptr, b_ptr, y_ptr, scalings_ptr, ranks_ptr,
        pair_rows_ptr, pair_weights_ptr, tile_slot_ptr, tile_start_ptr, tile_end_ptr,
        OUT,
        stride_hs, stride_hp,
        stride_bs, stride_bo, stride_br,
        stride_ym, stride_yn,
        SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
        ATOMIC: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    ):
        tile = tl.program_id(0)
        pid_n = tl.program_id(1)
        slot = tl.load(tile_slot_ptr + tile)
        if slot >= 0:
            start = tl.load(tile_start_ptr + tile)
            end = tl.load(tile_end_ptr + tile)
            offs_m = start + tl.arange(0, BLOCK_M)
            m_mask = offs_m < end
            rows = tl.load(pair_rows_ptr + offs_m, mask=m_mask, other=0).to(tl.int64)
            rank = tl.load(ranks_ptr + slot)
            offs_r = tl.arange(0, BLOCK_R)
            r_mask = offs_r < rank
            h = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
            for s in tl.static_range(SPLIT_K):
                h += tl.load(
                    h_ptr + s * stride_hs + offs_m[:, None].to(tl.int64) * stride_hp + offs_r[None, :],
                    mask=m_mask[:, None], other=0.0,
                )
            coef = tl.load(pair_weights_ptr + offs_m, mask=m_mask, other=0.0) * tl.load(scalings_ptr + slot)
            offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            n_mask = offs_n < OUT
            bt = tl.load(
                b_ptr + slot.to(tl.int64) * stride_bs + offs_n[None, :] * stride_bo + offs_r[:, None] * stride_br,
                mask=r_mask[:, None] & n_mask[None, :], other=0.0,
            )
            if UPCAST:
                acc = tl.dot(h.to(bt.dtype).to(tl.float32), bt.to(tl.float32), input_precision="ieee")
            elif IEEE:
                acc = tl.dot(h.to(bt.dtype), bt, input_precision="ieee")
            else:
                acc = tl.dot(h.to(bt.dtype), bt)
            acc = acc * coef[:, None]
            y_ptrs = y_ptr + rows[:, None] * stride_ym + offs_n[None, :] * stride_yn
            mask = m_mask[:, None] & n_mask[None, :]
            if ATOMIC:
                tl.atomic_add(y_ptrs, acc, mask=mask)
            else:
                old = tl.load(y_ptrs, mask=mask, other=0.0)
                tl.store(y_ptrs, (old.to(tl.float32) + acc).to(y_ptr.dtype.element_ty), mask=mask)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@dataclass(frozen=True)
class LoraKernelConfig:
    """Launch parameters of the two Triton kernels. `split_k` None means: split the shrink's reduction over
    `in` until the tiles fill the GPU twice over (decode shapes have few tiles)."""

    block_k: int = 64
    block_n: int = 64
    split_k: int | None = None
    shrink_warps: int = 4
    shrink_stages: int = 3
    expand_warps: int = 4
    expand_stages: int = 2


def default_kernel_config(dtype: torch.dtype, r_max: int, in_features: int, num_pairs: int) -> LoraKernelConfig:
    """Launch parameters by shape, from the sweep on an H100 (bench/results/gpu_sweep.md): a long reduction
    (in >= 8192) takes wide K blocks split four ways; at decode sizes a narrow-warp expand over 128 outputs
    wins. fp32 (the CPU interpreter, tests) keeps small blocks."""
    block_r = max(16, _next_pow2(r_max))
    if dtype == torch.float32:
        return LoraKernelConfig(block_k=32, block_n=64 if block_r <= 64 else 32)
    long_reduction = in_features >= 8192
    decode = num_pairs <= 256
    return LoraKernelConfig(
        block_k=256 if long_reduction else 64,
        split_k=4 if long_reduction else None,
        shrink_stages=4 if long_reduction else 3,
        block_n=32 if block_r > 64 else (64 if long_reduction else 128),
        expand_warps=2 if decode and not long_reduction else 4,
        expand_stages=1 if decode and not long_reduction else 2,
    )


def _triton_split_k(n_tiles: int, in_features: int, block_k: int, device: torch.device) -> int:
    """Split the reduction over `in` when there are too few tiles to fill the GPU (decode shapes)."""
    if device.type != "cuda":
        return 1
    sms = _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())
    max_split = max(1, in_features // (4 * block_k))
    split = 1
    while split < max_split and n_tiles * split < 2 * sms:
        split *= 2
    return split


def _lora_triton(y, x, a, b, scalings, ranks, plan: LoraPlan, config: LoraKernelConfig):
    num_rows, in_features = x.shape
    n_slots, r_max, _ = a.shape
    out_features = b.shape[1]
    block_r = max(16, _next_pow2(r_max))
    ieee = x.dtype == torch.float32
    block_k = config.block_k
    split_k = config.split_k or _triton_split_k(plan.num_tiles, in_features, block_k, x.device)
    k_per_split = -(-in_features // (split_k * block_k)) * block_k
    split_k = -(-in_features // k_per_split)
    h = torch.empty((split_k, max(plan.num_pairs, 1), block_r), dtype=torch.float32, device=x.device)
    interpreted = x.device.type != "cuda"
    # The Triton interpreter multiplies bfloat16 operands of tl.dot as raw integers; exact fp32 products
    # of the same bf16 values give what the GPU's bf16 dot (fp32 accumulate) gives.
    upcast = interpreted and x.dtype == torch.bfloat16
    _lora_shrink_kernel[(plan.num_tiles, split_k)](
        x, a, ranks, h,
        plan.pair_rows, plan.tile_slot, plan.tile_start, plan.tile_end,
        in_features, k_per_split,
        x.stride(0), x.stride(1),
        a.stride(0), a.stride(1), a.stride(2),
        h.stride(0), h.stride(1),
        BLOCK_M=plan.block_m, BLOCK_R=block_r, BLOCK_K=block_k, IEEE=ieee, UPCAST=upcast,
        **({} if interpreted else {"num_warps": config.shrink_warps, "num_stages": config.shrink_stages}),
    )
    atomic = plan.k > 1
    target = torch.zeros(y.shape, dtype=torch.float32, device=y.device) if atomic else y
    block_n = config.block_n
    _lora_expand_kernel[(plan.num_tiles, triton.cdiv(out_features, block_n))](
        h, b, target, scalings, ranks,
        plan.pair_rows, plan.pair_weights, plan.tile_slot, plan.tile_start, plan.tile_end,
        out_features,
        h.stride(0), h.stride(1),
        b.stride(0), b.stride(1), b.stride(2),
        target.stride(0), target.stride(1),
        SPLIT_K=split_k, BLOCK_M=plan.block_m, BLOCK_N=block_n, BLOCK_R=block_r,
        ATOMIC=atomic, IEEE=ieee, UPCAST=upcast,
        **({} if interpreted else {"num_warps": config.expand_warps, "num_stages": config.expand_stages}),
    )
    if atomic:
        y += target.to(y.dtype)
    return y


def apply_lora(
    y: torch.Tensor,
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scalings: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    *,
    ranks: torch.Tensor | None = None,
    plan: LoraPlan | None = None,
    backend: str = "auto",
    split_k: int | None = None,
    config: LoraKernelConfig | None = None,
) -> torch.Tensor:
    """Add the mixed LoRA delta to y [T, out] in place and return y.

    x [T, in]; a [n_slots, r_max, in]; b [n_slots, out, r_max]; scalings [n_slots]; indices [T, k] (int,
    -1 = none) and weights [T, k]; ranks [n_slots] (defaults to r_max). backend "auto" runs Triton on CUDA
    and torch elsewhere; "triton" on the CPU needs TRITON_INTERPRET=1. A plan built with build_lora_plan
    for these indices may be passed to share its cost across projections. config sets the Triton launch
    (default_kernel_config when None); split_k, when given, overrides its split of the shrink's reduction."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown LoRA backend {backend!r}; expected one of {BACKENDS}")
    if indices.dim() == 1:
        indices, weights = indices[:, None], weights[:, None]
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0] or indices.shape[0] != x.shape[0]:
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, y {tuple(y.shape)}, indices {tuple(indices.shape)}")
    if a.shape[0] != b.shape[0] or a.shape[1] != b.shape[2] or a.shape[2] != x.shape[1] or b.shape[1] != y.shape[1]:
        raise ValueError(f"adapter stacks do not fit: a {tuple(a.shape)}, b {tuple(b.shape)}, x {tuple(x.shape)}")
    if x.shape[0] == 0 or a.shape[0] == 0:
        return y
    if backend == "auto":
        backend = "triton" if (x.is_cuda and triton is not None) else "torch"
    if backend == "torch":
        return _lora_torch(y, x, a, b, scalings, indices, weights)
    if triton is None:
        raise RuntimeError("triton is not installed")
    if ranks is None:
        ranks = torch.full((a.shape[0],), a.shape[1], dtype=torch.int32, device=a.device)
    if plan is None:
        plan = build_lora_plan(indices, weights, n_slots=a.shape[0])
    elif plan.num_rows != x.shape[0]:
        raise ValueError(f"plan is for {plan.num_rows} rows, x has {x.shape[0]}")
    config = config or default_kernel_config(x.dtype, a.shape[1], x.shape[1], plan.num_pairs)
    if split_k is not None:
        config = dataclasses.replace(config, split_k=split_k)
    return _lora_triton(
        y, x.contiguous(), a, b, scalings.float().contiguous(), ranks.to(torch.int32).contiguous(), plan, config
    )
