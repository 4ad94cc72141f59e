"""Mixture of experts' next-token distributions.

For each row b, k experts' logits [k, V] and mixture weights w [k]:
    log p_mix(v) = logsumexp_j( log w_j + log_softmax(logits_j)(v) )
then temperature (divide by T and renormalise) and top-p (keep the smallest set of most likely tokens whose
mass reaches p, renormalise). The result is float32 log-probabilities [B, V], -inf outside the top-p set.

The Triton path splits every row's vocabulary into chunks, one program per (row, chunk), so that a decode
batch of a few dozen rows still fills the GPU: a first launch gives, per chunk, every expert's online-softmax
partials (max and sum of exponentials), combined into each expert's log-normaliser; a second writes the
tempered mixture of the chunk and its own partials, combined into the row's normaliser and subtracted.
Top-p, which needs an order over the vocabulary, is applied afterwards with a sort, only for rows with p < 1.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

BACKENDS = ("auto", "torch", "triton")


def _per_row(value, rows: int, device) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float32, device=device)
    return tensor.expand(rows).contiguous() if tensor.dim() == 0 else tensor.float().contiguous()


def _effective_temperature(temperature: torch.Tensor) -> torch.Tensor:
    """Temperature 0 means greedy decoding; the argmax is the same at any temperature, so leave it at 1."""
    return torch.where(temperature > 0, temperature, torch.ones_like(temperature))


def apply_top_p(logprobs: torch.Tensor, top_p) -> torch.Tensor:
    """Keep, per row, the most likely tokens until their mass reaches top_p (at least one), renormalised."""
    if isinstance(top_p, (int, float)):
        if top_p >= 1:
            return logprobs
        top_p = _per_row(top_p, logprobs.shape[0], logprobs.device)
    elif bool((top_p >= 1).all()):
        return logprobs
    sorted_lp, order = torch.sort(logprobs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_lp.exp(), dim=-1) - sorted_lp.exp()
    drop_sorted = mass_before >= top_p[:, None]
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    kept = logprobs.masked_fill(drop, float("-inf"))
    return torch.log_softmax(kept, dim=-1)


def mixture_reference(
    logits: torch.Tensor, weights: torch.Tensor, *, temperature=1.0, top_p=1.0
) -> torch.Tensor:
    rows = logits.shape[0]
    temperature = _effective_temperature(_per_row(temperature, rows, logits.device))
    logp = torch.log_softmax(logits.float(), dim=-1)
    w = weights.float() / weights.float().sum(dim=-1, keepdim=True)
    mixed = torch.logsumexp(torch.log(w)[:, :, None] + logp, dim=1)
    tempered = torch.log_softmax(mixed / temperature[:, None], dim=-1)
    return apply_top_p(tempered, top_p)


if triton is not None:

    @triton.jit
    def _expert_normaliser_kernel(
        logits_ptr, part_m_ptr, part_s_ptr,
        K, V, V_PER_PROGRAM,
        stride_lb, stride_lk, stride_lv,
        BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        """Over one chunk of the vocabulary, each expert's max and sum of exponentials (online softmax)."""
        row = tl.program_id(0).to(tl.int64)
        chunk = tl.program_id(1)
        n_chunks = tl.num_programs(1)
        offs_k = tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        base = logits_ptr + row * stride_lb + offs_k[:, None] * stride_lk
        m = tl.full((BLOCK_K,), float("-inf"), dtype=tl.float32)
        s = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for v0 in range(0, V_PER_PROGRAM, BLOCK_V):
            offs_v = chunk * V_PER_PROGRAM + v0 + tl.arange(0, BLOCK_V)
            v_mask = offs_v < V
            x = tl.load(base + offs_v[None, :] * stride_lv, mask=k_mask[:, None] & v_mask[None, :],
                        other=float("-inf")).to(tl.float32)
            x = tl.where(k_mask[:, None], x, 0.0)
            m_new = tl.maximum(m, tl.max(x, axis=1))
            # Logits masked to -inf (a constrained vocabulary) can fill a whole block: keep s at 0, not NaN.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), axis=1)
            m = m_new
        partial = (row * n_chunks + chunk) * K + offs_k
        tl.store(part_m_ptr + partial, m, mask=k_mask)
        tl.store(part_s_ptr + partial, s, mask=k_mask)

    @triton.jit
    def _mixture_chunk_kernel(
        logits_ptr, offset_ptr, inv_temp_ptr, out_ptr, part_m_ptr, part_s_ptr,
        K, V, V_PER_PROGRAM,
        stride_lb, stride_lk, stride_lv, stride_ob,
        BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        """Over one chunk: the tempered mixture log Σ_j exp(x_j + offset_j) / T, written out unnormalised,
        and that chunk's max and sum of exponentials for the row's normaliser."""
        row = tl.program_id(0).to(tl.int64)
        chunk = tl.program_id(1)
        n_chunks = tl.num_programs(1)
        offs_k = tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        base = logits_ptr + row * stride_lb + offs_k[:, None] * stride_lk
        offset = tl.load(offset_ptr + row * K + offs_k, mask=k_mask, other=0.0)
        inv_temp = tl.load(inv_temp_ptr + row)
        mz = float("-inf")
        sz = 0.0
        for v0 in range(0, V_PER_PROGRAM, BLOCK_V):
            offs_v = chunk * V_PER_PROGRAM + v0 + tl.arange(0, BLOCK_V)
            v_mask = offs_v < V
            x = tl.load(base + offs_v[None, :] * stride_lv, mask=k_mask[:, None] & v_mask[None, :],
                        other=0.0).to(tl.float32)
            c = tl.where(k_mask[:, None], x + offset[:, None], float("-inf"))
            cm = tl.max(c, axis=0)
            cm = tl.where(cm == float("-inf"), 0.0, cm)  # a token every expert rules out stays -inf, not NaN
            mixed = cm + tl.log(tl.sum(tl.exp(c - cm[None, :]), axis=0))
            z = tl.where(v_mask, mixed * inv_temp, float("-inf"))
            tl.store(out_ptr + row * stride_ob + offs_v, z, mask=v_mask)
            mz_new = tl.maximum(mz, tl.max(z, axis=0))
            mz_safe = tl.where(mz_new == float("-inf"), 0.0, mz_new)
            sz = sz * tl.exp(mz - mz_safe) + tl.sum(tl.exp(z - mz_safe), axis=0)
            mz = mz_new
        tl.store(part_m_ptr + row * n_chunks + chunk, mz)
        tl.store(part_s_ptr + row * n_chunks + chunk, sz)


def _combine(part_m: torch.Tensor, part_s: torch.Tensor, dim: int) -> torch.Tensor:
    """log Σ s·exp(m) over the chunks: the normaliser from each chunk's online-softmax partials."""
    return torch.logsumexp(part_m + torch.log(part_s), dim=dim)


def _vocabulary_chunks(rows: int, vocab: int, block_v: int, device: torch.device) -> int:
    """Enough chunks of the vocabulary for rows x chunks programs to fill the GPU four times over."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        wanted = -(-4 * sms // rows)
    else:
        wanted = 3  # the interpreter: several chunks, so that the combine is exercised
    return max(1, min(wanted, -(-vocab // block_v)))


def _mixture_triton(logits, log_w, temperature):
    """Split over the vocabulary in two launches: every expert's normaliser (partials per chunk, combined in
    torch), then the tempered mixture per chunk with its own partial normaliser, subtracted at the end."""
    rows, k, vocab = logits.shape
    device = logits.device
    block_k = max(2, 1 << (k - 1).bit_length())
    block_v = max(16, min(2048 // block_k, 1 << (vocab - 1).bit_length()))
    chunks = _vocabulary_chunks(rows, vocab, block_v, device)
    v_per_program = -(-vocab // (chunks * block_v)) * block_v
    chunks = -(-vocab // v_per_program)
    interpreted = device.type != "cuda"
    launch = {} if interpreted else {"num_warps": 4}
    strides = (logits.stride(0), logits.stride(1), logits.stride(2))

    part_m = torch.empty((rows, chunks, k), dtype=torch.float32, device=device)
    part_s = torch.empty_like(part_m)
    _expert_normaliser_kernel[(rows, chunks)](
        logits, part_m, part_s, k, vocab, v_per_program, *strides, BLOCK_K=block_k, BLOCK_V=block_v, **launch,
    )
    offset = (log_w - _combine(part_m, part_s, dim=1)).contiguous()

    out = torch.empty((rows, vocab), dtype=torch.float32, device=device)
    part_mz = torch.empty((rows, chunks), dtype=torch.float32, device=device)
    part_sz = torch.empty_like(part_mz)
    _mixture_chunk_kernel[(rows, chunks)](
        logits, offset, (1.0 / temperature).contiguous(), out, part_mz, part_sz, k, vocab, v_per_program,
        *strides, out.stride(0), BLOCK_K=block_k, BLOCK_V=block_v, **launch,
    )
    return out.sub_(_combine(part_mz, part_sz, dim=1)[:, None])


def mix_next_token_logprobs(
    logits: torch.Tensor,
    weights: torch.Tensor,
    *,
    temperature=1.0,
    top_p=1.0,
    backend: str = "auto",
    check: bool = True,
) -> torch.Tensor:
    """Mixed, tempered, top-p filtered log-probabilities [B, V] (float32) from logits [B, k, V] and
    weights [B, k] (non-negative, normalised per row here). temperature and top_p: a number or one per row."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown mixture backend {backend!r}; expected one of {BACKENDS}")
    if logits.dim() != 3 or weights.shape != logits.shape[:2]:
        raise ValueError(f"expected logits [B, k, V] and weights [B, k]; got {tuple(logits.shape)}, "
                         f"{tuple(weights.shape)}")
    if check and (bool((weights < 0).any()) or bool((weights.sum(dim=-1) <= 0).any())):
        raise ValueError("mixture weights must be non-negative with a positive sum in every row")
    if backend == "auto":
        backend = "triton" if (logits.is_cuda and triton is not None) else "torch"
    if backend == "torch":
        return mixture_reference(logits, weights, temperature=temperature, top_p=top_p)
    rows = logits.shape[0]
    temp = _effective_temperature(_per_row(temperature, rows, logits.device))
    w = weights.float()
    log_w = torch.log(w / w.sum(dim=-1, keepdim=True)).contiguous()
    tempered = _mixture_triton(logits, log_w, temp)
    return apply_top_p(tempered, top_p if isinstance(top_p, (int, float)) else _per_row(top_p, rows, logits.device))
