"""MosaicEngine: one base model, many experts' adapters in a pool, batches that mix experts.

Every adaptable nn.Linear of the base model (by default every linear layer but the output embeddings; the
adapters' target modules must be among them) is wrapped by a MultiLoraLinear that adds the mixed-adapter LoRA
delta for the rows of the current forward pass. A request's mixture {expert: weight} is served as one lane
per expert (composition's rule: the next-token distribution is the weighted mixture of each expert's own
distribution); all lanes of all requests run in one batch with one KV cache, each lane pointing at its
expert's slot, and the lanes' distributions are mixed per request by gpu_workers.kernels.mixture. Decoding
then follows composition.engine.DecodeState, the rule every engine shares.

Two ways to add the delta (gpu_workers.kernels.lora): with Triton (CUDA), one plan per forward over the token
rows serves every projection; elsewhere each lane's adapter weights are gathered once per batch composition
(kept while the lanes stay the same, i.e. across decode steps) and every projection adds its delta with two
batched matrix products.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import DynamicLayer

from composition.engine import (
    DecodeState,
    Generation,
    GenerationRequest,
    ScoreRequest,
    check_request,
    normalise_mixture,
    step_mixture,
)
from composition.experts import Expert
from gpu_workers.adapter_pool import AdapterPool
from gpu_workers.kernels.lora import LaneLora, apply_lane_lora, apply_lora, build_lora_plan, gather_lane_lora
from gpu_workers.kernels.mixture import mix_next_token_logprobs
from gpu_workers.prefix_cache import PrefixCache, PrefixHit


SCORE_ROW_TOKENS = 8192  # padded tokens (rows x width) per scoring forward


@dataclass
class RowAdapters:
    """Which adapter slot each token row of the current forward pass uses (one per row, -1 = base model)."""

    indices: torch.Tensor  # [rows, 1] int32
    weights: torch.Tensor  # [rows, 1] float32
    plan: object | None  # a LoraPlan on CUDA (shared by every projection), None with the torch backend


class LoraBatchContext:
    """The per-forward adapter assignment that every MultiLoraLinear reads.

    set() is called before each forward with one slot per lane (sequence). With use_plan (Triton) the token
    rows and their plan are built; otherwise each projection's per-lane weights are gathered on first use and
    kept while the same lanes on the same pool contents come back (every decode step of a batch)."""

    def __init__(self):
        self.any_adapter = False
        self.rows: RowAdapters | None = None
        self.lane_slots: torch.Tensor | None = None  # [lanes, k]
        self.lane_weights: torch.Tensor | None = None  # [lanes, k]
        self._lanes_key: tuple | None = None
        self._lanes: dict[str, LaneLora | None] = {}
        self._adapted: set[str] | None = None  # the projections the lanes' adapters adapt
        self._pool_version: int | None = None

    def set(self, lane_slots: torch.Tensor, seq_len: int, *, n_slots: int, device: torch.device,
            use_plan: bool, lane_weights: torch.Tensor | None = None) -> None:
        """lane_slots: a CPU tensor, one slot per lane (row) of the batch (-1 = base model), or [lanes, k] for
        lanes that mix k adapters' deltas, weighted by lane_weights [lanes, k] (the kernel's weighted path)."""
        if lane_slots.dim() == 1:
            lane_slots = lane_slots[:, None]
        if lane_weights is None:
            lane_weights = torch.ones(lane_slots.shape, dtype=torch.float32)
        self.any_adapter = bool((lane_slots >= 0).any())
        self.rows = None
        if not self.any_adapter:
            return
        if use_plan:
            indices = lane_slots.to(device=device, dtype=torch.int32).repeat_interleave(seq_len, dim=0)
            weights = lane_weights.to(device=device, dtype=torch.float32).repeat_interleave(seq_len, dim=0)
            self.rows = RowAdapters(indices, weights, build_lora_plan(indices, weights, n_slots=n_slots))
            return
        key = (tuple(lane_slots.flatten().tolist()), tuple(lane_weights.flatten().tolist()), lane_slots.shape[1])
        if key != self._lanes_key:
            self._lanes_key, self._lanes, self._adapted = key, {}, None
            self.lane_slots, self.lane_weights = lane_slots.clone(), lane_weights.float().clone()

    def lanes_for(self, name: str, pool: AdapterPool) -> LaneLora | None:
        """The lanes' gathered weights for one projection, None when no lane's expert adapts it."""
        if self._pool_version != pool.version:  # a slot was rewritten: gather again
            self._lanes, self._pool_version, self._adapted = {}, pool.version, None
        if self._adapted is None:
            self._adapted = self._adapted_modules(pool)
        if name not in self._lanes:
            self._lanes[name] = (
                gather_lane_lora(pool.a[name], pool.b[name], pool.scalings[name], self.lane_slots.to(pool.device),
                                 self.lane_weights.to(pool.device))
                if name in self._adapted else None
            )
        return self._lanes[name]

    def _adapted_modules(self, pool: AdapterPool) -> set[str]:
        """The projections some lane's adapter adapts (rank > 0), found for all of them at once."""
        slots = self.lane_slots.flatten()
        used = slots[slots >= 0].long().to(pool.device)
        names = list(pool.ranks)
        ranks = torch.stack([pool.ranks[name] for name in names]).index_select(1, used)  # [modules, slots used]
        return {name for name, adapted in zip(names, (ranks > 0).any(dim=1).tolist()) if adapted}

    def clear(self) -> None:
        """After a forward: nothing is applied until the next set() (the gathered lanes are kept)."""
        self.any_adapter = False
        self.rows = None

    def release(self) -> None:
        """After a batch: drop the gathered lanes too."""
        self.clear()
        self._lanes_key, self._lanes, self._adapted, self.lane_slots = None, {}, None, None


class MultiLoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, name: str, pool: AdapterPool, context: LoraBatchContext, backend: str):
        super().__init__()
        self.base = base
        self.name = name
        self.pool = pool
        self.context = context
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        context = self.context
        if not context.any_adapter:
            return y
        rows = context.rows
        if rows is None:
            lanes = context.lanes_for(self.name, self.pool)
            if lanes is None:
                return y
            if x.dim() != 3 or x.shape[0] != lanes.a.shape[0]:
                raise RuntimeError(f"{self.name}: input {tuple(x.shape)} but adapters were set for "
                                   f"{lanes.a.shape[0]} sequences")
            apply_lane_lora(y, x, lanes)
            return y
        flat_x = x.reshape(-1, x.shape[-1])
        flat_y = y.reshape(-1, y.shape[-1])
        if flat_x.shape[0] != rows.indices.shape[0]:
            raise RuntimeError(f"{self.name}: {flat_x.shape[0]} rows but adapters were set for {rows.indices.shape[0]}")
        apply_lora(
            flat_y, flat_x, self.pool.a[self.name], self.pool.b[self.name], self.pool.scalings[self.name],
            rows.indices, rows.weights, ranks=self.pool.ranks[self.name], plan=rows.plan, backend=self.backend,
        )
        return flat_y.view(y.shape)


def adaptable_linears(model: nn.Module, target_modules: list[str] | tuple[str, ...] | None = None
                      ) -> dict[str, tuple[int, int]]:
    """{module name: (in_features, out_features)} of the projections experts may adapt: the model's linear
    layers except its output embeddings, or only those whose name ends with one of target_modules."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets = tuple(target_modules) if target_modules else None
    return {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not output
        and (targets is None or name.rsplit(".", 1)[-1] in targets or name in targets)
    }


def attach_multi_lora(model: nn.Module, pool: AdapterPool, context: LoraBatchContext, backend: str) -> None:
    """Wrap every projection the pool knows in a MultiLoraLinear (in place)."""
    for name in pool.module_shapes:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, MultiLoraLinear(getattr(parent, child), name, pool, context, backend))


def detach_multi_lora(model: nn.Module) -> None:
    """Put the plain projections back (benchmarks compare the same base model with and without)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, MultiLoraLinear):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.base)


@dataclass
class Lane:
    """One row of a forward: a request's expert (its distribution mixed with `weight`), or, for a request that
    mixes its experts' adapters (mixture_space "adapters"), all of them on one row with their weights."""

    request_index: int
    expert_id: str | None
    weight: float
    adapters: tuple[tuple[str, float], ...] = ()


@dataclass
class Sequence:
    """One request decoding in a RunningBatch: its prompt's tokens, its lanes (one per expert of its mixture,
    each with its weight; one base-model lane for an empty mixture) and its decoding state."""

    request: GenerationRequest
    prompt_ids: list[int]
    lanes: list[tuple[str | None, float]]
    state: DecodeState
    on_token: Callable[[str], None] | None = None  # called with the text so far after each token
    error: BaseException | None = None  # its per-token mixture rule failed: it leaves at the end of the step
    prefilled: list[PrefixHit] | None = None  # per row, the prompt's keys and values chunked prefill computed

    @property
    def experts(self) -> set[str]:
        return {expert_id for expert_id, _weight in self.lanes if expert_id is not None}

    @property
    def rows(self) -> int:
        """Rows in the batch: one per expert, or one in all when the request mixes its adapters."""
        return 1 if self.request.mixture_space == "adapters" else len(self.lanes)


class _EngineCacheLayer(DynamicLayer):
    """The engine's KV cache layer: a DynamicLayer that keeps spare columns after its last one, so that a decode
    step writes its keys and values there instead of copying the whole layer into a new tensor (DynamicLayer's
    torch.cat, once per layer and step), and that selects rows with index_select (DynamicLayer's advanced
    indexing copies several times slower on the CPU). `keys` and `values` stay plain tensors (views of the
    buffers), so whatever replaces them (a merge, a row selection) just makes the next update start a new
    buffer."""

    SPARE_COLUMNS = 64

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized or self.keys.numel() == 0:
            self.lazy_initialization(key_states, value_states)
            self.keys = self.values = key_states[:, :, :0]
        used, new = self.keys.shape[-2], key_states.shape[-2]
        if not (self._in_buffer() and used + new <= self._key_buffer.shape[-2]):
            self._key_buffer = self._grown(self.keys, used + new)
            self._value_buffer = self._grown(self.values, used + new)
        self._key_buffer[:, :, used:used + new] = key_states
        self._value_buffer[:, :, used:used + new] = value_states
        self.keys, self.values = self._key_buffer[:, :, :used + new], self._value_buffer[:, :, :used + new]
        return self.keys, self.values

    def _in_buffer(self) -> bool:
        """Whether keys and values are still the buffers' first columns (nothing replaced them)."""
        buffer = getattr(self, "_key_buffer", None)
        return (buffer is not None and self.keys.data_ptr() == buffer.data_ptr()
                and self.keys.shape[:2] == buffer.shape[:2] and self.keys.stride() == buffer.stride()
                and self.values.data_ptr() == self._value_buffer.data_ptr())

    def _grown(self, states: torch.Tensor, columns: int) -> torch.Tensor:
        shape = list(states.shape)
        shape[-2] = columns + self.SPARE_COLUMNS
        buffer = states.new_empty(shape)
        buffer[:, :, :states.shape[-2]] = states
        return buffer

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self.keys, self.values = self.keys.index_select(0, indices), self.values.index_select(0, indices)


def cpu_computes_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512_BF16 or AMX, read from /proc/cpuinfo's
    flags): there a bfloat16 matmul runs about twice as fast as a float32 one (measured on an AMD EPYC with
    AVX512_BF16: a 16-row decode step of SmolLM2-135M took 123 ms in float32, 70 ms in bfloat16); elsewhere
    bfloat16 is emulated and slower."""
    flags = _cpu_flags() if cpuinfo is None else frozenset(cpuinfo.split())
    return not {"avx512_bf16", "amx_bf16"}.isdisjoint(flags)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The words of /proc/cpuinfo (its flags among them), read once per process; empty where there is none."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


SERVING_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def serving_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The dtype a worker serves in: "float32", "bfloat16", or "auto" (bfloat16 on CUDA and on a CPU that
    computes it natively, float32 elsewhere). Engines built directly keep their own default (float32 on the
    CPU), the arithmetic the reference engine is compared with."""
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" or cpu_computes_bf16() else torch.float32
    if choice not in SERVING_DTYPES:
        raise ValueError(f"the dtype must be auto, {' or '.join(SERVING_DTYPES)}, not {choice!r}")
    return SERVING_DTYPES[choice]


def _new_cache() -> DynamicCache:
    """A KV cache of _EngineCacheLayer layers."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = _EngineCacheLayer
    return cache


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class RunningBatch:
    """The sequences decoding together and their one KV cache, one row per lane, rows of a sequence together.

    Every row is left-padded: its attention mask is 0 over the columns before its own tokens, so sequences
    of different lengths share the cache. A newcomer's prefilled cache is merged in by padding the shorter
    side on the left; a sequence that leaves takes its rows out, and columns that no row uses any more are
    cut off the left."""

    def __init__(self):
        self.sequences: list[Sequence] = []
        self.cache: DynamicCache | None = None
        self.attention: torch.Tensor | None = None  # [rows, columns] 1 where a row has a token
        self.positions: torch.Tensor | None = None  # [rows, 1] the position of each row's next token
        self.next_input: torch.Tensor | None = None  # [rows, 1] each row's last token, fed at the next step

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def rows(self) -> int:
        return sum(sequence.rows for sequence in self.sequences)

    @property
    def experts(self) -> set[str]:
        return {expert_id for sequence in self.sequences for expert_id in sequence.experts}

    @property
    def columns(self) -> int:
        return 0 if self.attention is None else self.attention.shape[1]

    def merge(self, sequences: list[Sequence], cache: DynamicCache, attention: torch.Tensor,
              positions: torch.Tensor, next_input: torch.Tensor) -> None:
        if not self.sequences:
            self.sequences, self.cache = list(sequences), cache
            self.attention, self.positions, self.next_input = attention, positions, next_input
            return
        width = max(self.columns, attention.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)])
            mine.values = torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)])
        self.attention = torch.cat([_left_pad(self.attention, width, 1), _left_pad(attention, width, 1)])
        self.positions = torch.cat([self.positions, positions])
        self.next_input = torch.cat([self.next_input, next_input])
        self.sequences.extend(sequences)

    def keep(self, kept: list[Sequence]) -> None:
        """Only `kept` (in batch order) stay; the others' rows leave the cache."""
        if len(kept) == len(self.sequences):
            return
        if not kept:
            self.__init__()
            return
        kept_ids = {id(sequence) for sequence in kept}
        rows, row = [], 0
        for sequence in self.sequences:
            if id(sequence) in kept_ids:
                rows.extend(range(row, row + sequence.rows))
            row += sequence.rows
        index = torch.tensor(rows, dtype=torch.long, device=self.attention.device)
        self.cache.batch_select_indices(index)
        self.attention, self.positions = self.attention[index], self.positions[index]
        self.next_input = self.next_input[index]
        self.sequences = [sequence for sequence in self.sequences if id(sequence) in kept_ids]
        used = self.attention.any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else 0
        if first > 0:  # columns only the departed used
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.attention = self.attention[:, first:]


@dataclass
class _ScoreRow:
    """One scoring forward row: the tokens it reads, its mixture, and the (request index, continuation) pairs
    read off its last positions."""
    ids: list[int]
    mixture: dict[str, float]
    asks: list[tuple[int, list[int]]]


class MosaicEngine:
    def __init__(
        self,
        base_model_path: str | Path | None = None,
        *,
        model: nn.Module | None = None,
        tokenizer=None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        adapter_budget_bytes: int = 1 << 30,
        max_slots: int = 64,
        lora_backend: str = "auto",
        target_modules: list[str] | tuple[str, ...] | None = None,
        prefix_cache_bytes: int = 256 << 20,
    ):
        """Load the base model from a local directory (bf16 on CUDA, float32 on the CPU), or serve an
        already built `model` with its `tokenizer` (benchmarks). target_modules: the short names of the
        projections experts may adapt (default: every linear layer but the output embeddings).
        prefix_cache_bytes: the budget of the scheduler's prompt prefix cache (0: none)."""
        self.base_model_path = str(base_model_path) if base_model_path is not None else None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        if model is None:
            if base_model_path is None:
                raise ValueError("give a base model directory or a model and its tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(self.base_model_path)
            model = AutoModelForCausalLM.from_pretrained(self.base_model_path, dtype=self.dtype)
        self.tokenizer = tokenizer
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.lora_backend = lora_backend
        self.context = LoraBatchContext()
        self.pool = AdapterPool(
            adaptable_linears(self.model, target_modules), device=self.device, dtype=self.dtype,
            budget_bytes=adapter_budget_bytes, max_slots=max_slots,
        )
        attach_multi_lora(self.model, self.pool, self.context, lora_backend)
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.lock = threading.RLock()

    @property
    def uses_triton(self) -> bool:
        """Whether the LoRA runs through the Triton kernels (then one plan per forward serves every layer)."""
        return self.lora_backend == "triton" or (self.lora_backend == "auto" and self.device.type == "cuda")

    # -- experts ------------------------------------------------------------------------------------------
    def register_expert(self, expert: Expert) -> None:
        with self.lock:
            if self.pool.register(expert):
                self.prefix_cache.forget(expert.id)

    def register_adapter(self, expert_id: str, adapter_path: str, sha256: str) -> None:
        with self.lock:
            if self.pool.register_path(expert_id, adapter_path, sha256):
                self.prefix_cache.forget(expert_id)

    @property
    def known_experts(self) -> set[str]:
        return self.pool.known

    # -- batching -----------------------------------------------------------------------------------------
    def _lanes(self, mixtures: list[dict[str, float]]) -> list[Lane]:
        lanes = []
        for index, mixture in enumerate(mixtures):
            normalised = normalise_mixture(mixture, self.known_experts)
            if not normalised:
                lanes.append(Lane(index, None, 1.0))
            else:
                lanes.extend(Lane(index, expert_id, weight) for expert_id, weight in sorted(normalised.items()))
        return lanes

    @staticmethod
    def _step_lanes(lanes: list[Lane], states: list[DecodeState]) -> list[Lane]:
        """The lanes reweighted for this token where a request's mixture is decided per token."""
        if all(state.request.mixture_rule is None for state in states):
            return lanes
        weights: dict[int, list[tuple[str | None, float]]] = {}
        for position, state in enumerate(states):
            members = [(lane.expert_id, lane.weight) for lane in lanes if lane.request_index == position]
            weights[position] = step_mixture(state.request, members, state.text, len(state.token_ids))
        taken = {position: iter(members) for position, members in weights.items()}
        return [Lane(lane.request_index, *next(taken[lane.request_index])) for lane in lanes]

    def _lane_slots(self, lanes: list[Lane]) -> torch.Tensor:
        slots = self.pool.acquire([lane.expert_id for lane in lanes if lane.expert_id is not None])
        return torch.tensor(
            [slots[lane.expert_id] if lane.expert_id is not None else -1 for lane in lanes],
            dtype=torch.int32,
        )

    def _forward(self, input_ids, attention_mask, position_ids, lane_slots, cache, *, last_only: bool = False,
                 logits_to_keep: int = 0):
        """lane_slots: one slot per row, or (slots, weights) [rows, k] each (_lane_adapters). last_only: compute
        the vocabulary projection for the last position only (decoding)."""
        lane_slots, lane_weights = lane_slots if isinstance(lane_slots, tuple) else (lane_slots, None)
        self.context.set(
            lane_slots, input_ids.shape[1], n_slots=self.pool.capacity, device=self.device,
            use_plan=self.uses_triton, lane_weights=lane_weights,
        )
        try:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                past_key_values=cache, use_cache=cache is not None, logits_to_keep=1 if last_only else logits_to_keep,
            )
        finally:
            self.context.clear()

    def _left_padded(self, token_lists: list[list[int]]):
        width = max(len(ids) for ids in token_lists)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(token_lists), width), pad, dtype=torch.long)
        attention = torch.zeros((len(token_lists), width), dtype=torch.long)
        for row, ids in enumerate(token_lists):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        return input_ids.to(self.device), attention.to(self.device), positions.to(self.device)

    def _mix(self, lane_logits: torch.Tensor, lanes: list[Lane], n_requests: int) -> torch.Tensor:
        """Per request, log Σ w_i p_i over its lanes' logits [lanes, vocab] -> [n_requests, vocab] float32."""
        lane_logits = lane_logits.float()  # a bfloat16 model's logits are mixed in float32
        if len(lanes) == n_requests:  # one lane per request, in request order: the mixture is that lane
            return torch.log_softmax(lane_logits, dim=-1)
        members: list[list[int]] = [[] for _ in range(n_requests)]
        for row, lane in enumerate(lanes):
            members[lane.request_index].append(row)
        k = max(len(rows) for rows in members)
        # Requests with fewer lanes repeat their first lane with weight 0, which never counts.
        gather = torch.tensor([rows + [rows[0]] * (k - len(rows)) for rows in members], dtype=torch.long)
        weights = torch.tensor([[lanes[row].weight for row in rows] + [0.0] * (k - len(rows)) for rows in members])
        stacked = lane_logits[gather.to(lane_logits.device)]
        return mix_next_token_logprobs(stacked, weights.to(lane_logits.device), check=False)

    @staticmethod
    def _decode_step(mixed: torch.Tensor, states: list[DecodeState]) -> list[int]:
        """Each request's next token from its mixed log-probabilities [requests, vocab]. A greedy request needs
        only its best token and that token's log-probability, so only those leave the device."""
        best_values, best_tokens = mixed.max(dim=-1)
        best_values, best_tokens = best_values.tolist(), best_tokens.tolist()
        tokens = []
        for row, state in enumerate(states):
            if state.needs_distribution:  # sampling, penalties, a constraint or top logprobs
                tokens.append(state.step(mixed[row].cpu()))
            else:
                tokens.append(state.accept(best_tokens[row], best_values[row]))
        return tokens

    def _encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]

    # -- iteration-level scheduling (gpu_workers.batching drives these, one step at a time) ---------------
    def new_sequence(self, request: GenerationRequest, on_token=None) -> Sequence:
        """A request ready to join a RunningBatch (checked: its parameters and its mixture's experts)."""
        check_request(request)
        normalised = normalise_mixture(request.mixture, self.known_experts)
        lanes = sorted(normalised.items()) if normalised else [(None, 1.0)]
        prompt_ids = self._encode(request.prompt)
        return Sequence(request, prompt_ids, lanes, DecodeState(request, self.tokenizer, len(prompt_ids)), on_token)

    @staticmethod
    def _sequence_lanes(sequences: list[Sequence]) -> list[Lane]:
        """The lanes of one forward (one token per sequence), weighted by each sequence's mixture for this
        token (a per-token rule is asked once per token)."""
        lanes = []
        for index, sequence in enumerate(sequences):
            members = sequence.lanes
            if sequence.request.mixture_rule is not None and sequence.error is None:
                try:
                    members = step_mixture(sequence.request, sequence.lanes, sequence.state.text,
                                           len(sequence.state.token_ids))
                except Exception as error:  # noqa: BLE001 - this sequence fails alone, not the whole batch
                    sequence.error = error
            lanes.extend(MosaicEngine._rows_of(index, sequence, members))
        return lanes

    @staticmethod
    def _rows_of(index: int, sequence: Sequence, members: list[tuple[str | None, float]]) -> list[Lane]:
        if sequence.request.mixture_space == "adapters":
            return [Lane(index, None, 1.0, tuple((e, w) for e, w in members if e is not None))]
        return [Lane(index, expert_id, weight) for expert_id, weight in members]

    @staticmethod
    def _row_key(lane: Lane) -> tuple:
        """What a row's keys and values depend on besides its tokens: its expert, or its adapters and weights."""
        return lane.adapters if lane.adapters else (lane.expert_id,)

    def prefill_tokens(self, sequence: Sequence) -> int:
        """The prompt tokens prefilling this sequence computes: its rows' prompts less what chunked prefill or
        the prefix cache already holds (the scheduler's prefill budget counts these)."""
        prompt = len(sequence.prompt_ids)
        if sequence.prefilled is not None:
            return sum(prompt - done.length for done in sequence.prefilled)
        rows = self._rows_of(0, sequence, sequence.lanes)
        if not self.prefix_cache.enabled:
            return len(rows) * prompt
        with self.lock:
            return sum(prompt - self.prefix_cache.cached_length(self._row_key(row), sequence.prompt_ids)
                       for row in rows)

    @staticmethod
    def _lane_adapters(lanes: list[Lane], slots: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each lane's adapter slots and their weights, [lanes, k] each (-1 and 0 pad a lane with fewer)."""
        pairs = [[(slots[e], w) for e, w in lane.adapters] if lane.adapters
                 else [(slots[lane.expert_id] if lane.expert_id is not None else -1, 1.0)] for lane in lanes]
        k = max(len(row) for row in pairs)
        pairs = [row + [(-1, 0.0)] * (k - len(row)) for row in pairs]
        return (torch.tensor([[slot for slot, _ in row] for row in pairs], dtype=torch.int32),
                torch.tensor([[weight for _, weight in row] for row in pairs], dtype=torch.float32))

    def _advance(self, sequences: list[Sequence], lanes: list[Lane], logits: torch.Tensor) -> torch.Tensor:
        """Each sequence's next token from its lanes' last logits; returns them as next inputs [rows, 1]."""
        mixed = self._mix(logits, lanes, len(sequences))
        tokens = self._decode_step(mixed, [sequence.state for sequence in sequences])
        for sequence in sequences:
            if sequence.on_token is not None:
                sequence.on_token(sequence.state.text)
        return torch.tensor([tokens[lane.request_index] for lane in lanes], dtype=torch.long,
                            device=self.device)[:, None]

    @torch.inference_mode()
    def prefill(self, batch: RunningBatch, newcomers: list[Sequence]) -> None:
        """Run the newcomers' prompts (their first token) and merge them into the batch. The pool holds the
        batch's experts and theirs together (PoolFull otherwise, and nothing changes). Each row starts from
        what chunked prefill computed of its prompt, or else from the longest prefix of its prompt the prefix
        cache holds for its adapters; its prompt is kept there."""
        with self.lock:
            lanes = self._sequence_lanes(newcomers)
            slots = self.pool.acquire(sorted(batch.experts | {e for s in newcomers for e in s.experts}))
            lane_slots = self._lane_adapters(lanes, slots)
            prompts = [newcomers[lane.request_index].prompt_ids for lane in lanes]
            hits = self._starts(newcomers, lanes, prompts)
            input_ids, attention, positions, cache = self._after_prefixes(prompts, hits)
            output = self._forward(input_ids, attention, positions, lane_slots, cache, last_only=True)
            if self.prefix_cache.enabled:
                self._keep_prompts(lanes, prompts, self._row_prompts(prompts, hits, cache))
            for sequence in newcomers:
                sequence.prefilled = None
            next_input = self._advance(newcomers, lanes, output.logits[:, -1])
            batch.merge(newcomers, cache, attention, positions[:, -1:] + 1, next_input)

    @torch.inference_mode()
    def prefill_chunk(self, batch: RunningBatch, sequence: Sequence, tokens: int) -> None:
        """Compute up to `tokens` more of each row's prompt of a sequence too long to prefill in one step, keeping
        them on the sequence (and in the prefix cache); the last prompt token is left for `prefill`, which gives
        the first token. The batch's experts stay resident."""
        with self.lock:
            lanes = self._sequence_lanes([sequence])
            slots = self.pool.acquire(sorted(batch.experts | sequence.experts))
            lane_slots = self._lane_adapters(lanes, slots)
            hits = self._starts([sequence], lanes, [sequence.prompt_ids] * len(lanes))
            chunks = [sequence.prompt_ids[:max(hit.length, min(hit.length + tokens, len(sequence.prompt_ids) - 1))]
                      for hit in hits]
            input_ids, attention, positions, cache = self._after_prefixes(chunks, hits)
            self._forward(input_ids, attention, positions, lane_slots, cache, last_only=True)
            sequence.prefilled = self._row_prompts(chunks, hits, cache)
            if self.prefix_cache.enabled:
                self._keep_prompts(lanes, chunks, sequence.prefilled)

    def _starts(self, sequences: list[Sequence], lanes: list[Lane], prompts: list[list[int]]) -> list[PrefixHit]:
        """Per row, what is already computed of its prompt: its chunks so far, or its longest cached prefix."""
        starts, seen = [], {}
        for lane, ids in zip(lanes, prompts):
            sequence = sequences[lane.request_index]
            if sequence.prefilled is not None:
                row = seen[id(sequence)] = seen.get(id(sequence), -1) + 1
                starts.append(sequence.prefilled[row])
            else:
                starts.append(self._cached_start(lane, ids))
        return starts

    def _cached_start(self, lane: Lane, prompt: list[int]) -> PrefixHit:
        """The longest prefix of the row's prompt the prefix cache holds (nothing when the cache is off)."""
        return self.prefix_cache.lookup(self._row_key(lane), prompt) if self.prefix_cache.enabled else PrefixHit(0)

    def _keep_prompts(self, lanes: list[Lane], prompts: list[list[int]], rows: list[PrefixHit]) -> None:
        """Put each row's prompt (its keys and values from _row_prompts) in the prefix cache."""
        for lane, ids, kept in zip(lanes, prompts, rows):
            self.prefix_cache.store(self._row_key(lane), ids, kept.layers)

    def _after_prefixes(self, prompts: list[list[int]], hits: list[PrefixHit]):
        """The forward's inputs for the prompts' tokens after their cached prefixes, and a cache that holds the
        prefixes: each row's prefix is left-padded to the longest, then its new tokens left-padded to the
        longest (a row's mask is 0 over both paddings)."""
        input_ids, attention, positions = self._left_padded([ids[hit.length:] for ids, hit in zip(prompts, hits)])
        cache = _new_cache()
        past = max(hit.length for hit in hits)
        if past == 0:
            return input_ids, attention, positions, cache
        lengths = torch.tensor([hit.length for hit in hits], device=self.device)
        past_attention = (torch.arange(past, device=self.device)[None, :] >= past - lengths[:, None]).long()
        sample = next(hit for hit in hits if hit.length).layers
        for layer, (sample_keys, _values) in enumerate(sample):
            empty = sample_keys.new_zeros((sample_keys.shape[0], past, sample_keys.shape[2]))
            keys = torch.stack([_left_pad(hit.layers[layer][0], past, 1) if hit.length else empty for hit in hits])
            values = torch.stack([_left_pad(hit.layers[layer][1], past, 1) if hit.length else empty for hit in hits])
            cache.update(keys, values, layer)
        return input_ids, torch.cat([past_attention, attention], dim=1), positions + lengths[:, None], cache

    @staticmethod
    def _row_prompts(prompts: list[list[int]], hits: list[PrefixHit], cache: DynamicCache) -> list[PrefixHit]:
        """Each row's keys and values over its whole prompt, out of a forward's cache (_after_prefixes' layout:
        its prefix before the forward's columns, its new tokens at their end)."""
        width = cache.layers[0].keys.shape[2]
        past = max(hit.length for hit in hits)
        rows = []
        for row, (ids, hit) in enumerate(zip(prompts, hits)):
            new = len(ids) - hit.length
            columns = torch.cat([torch.arange(past - hit.length, past), torch.arange(width - new, width)])
            columns = columns.to(cache.layers[0].keys.device)
            rows.append(PrefixHit(len(ids), [(layer.keys[row][:, columns], layer.values[row][:, columns])
                                             for layer in cache.layers]))
        return rows

    @torch.inference_mode()
    def decode(self, batch: RunningBatch) -> None:
        """One decode step for every sequence of the batch (each gets one more token)."""
        with self.lock:
            lanes = self._sequence_lanes(batch.sequences)
            slots = self.pool.acquire(sorted(batch.experts))  # kept resident: a newcomer's load may move them
            lane_slots = self._lane_adapters(lanes, slots)
            attention = torch.cat([batch.attention, batch.attention.new_ones((batch.attention.shape[0], 1))], dim=1)
            output = self._forward(batch.next_input, attention, batch.positions, lane_slots, batch.cache,
                                   last_only=True)
            batch.next_input = self._advance(batch.sequences, lanes, output.logits[:, -1])
            batch.attention, batch.positions = attention, batch.positions + 1

    # -- the engine protocol ------------------------------------------------------------------------------
    @torch.inference_mode()
    def next_token_logits(self, requests: list[GenerationRequest]) -> torch.Tensor:
        """Each request's mixed next-token log-probabilities [requests, vocab]. Token-by-token strategies ask
        again with one more token each time: each row starts from its longest prompt prefix in the prefix
        cache, so such a call computes the new tokens only."""
        with self.lock:
            lanes = self._lanes([request.mixture for request in requests])
            lane_slots = self._lane_slots(lanes)
            prompts = [self._encode(requests[lane.request_index].prompt) for lane in lanes]
            hits = [self._cached_start(lane, ids) for lane, ids in zip(lanes, prompts)]
            input_ids, attention, positions, cache = self._after_prefixes(prompts, hits)
            try:
                logits = self._forward(input_ids, attention, positions, lane_slots, cache, last_only=True).logits
            finally:
                self.context.release()
            if self.prefix_cache.enabled:
                self._keep_prompts(lanes, prompts, self._row_prompts(prompts, hits, cache))
            return self._mix(logits[:, -1].float(), lanes, len(requests)).cpu()

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest], on_token=None) -> list[Generation]:
        """Decode all requests together. on_token(request_index, text_so_far), when given, is called after each
        token (streaming), as ReferenceEngine does."""
        for request in requests:
            check_request(request)
        if any(request.mixture_space == "adapters" for request in requests):
            from gpu_workers.batching import Scheduler  # the one path that mixes adapters on a row

            return Scheduler(self).generate(requests, on_token)
        with self.lock:
            try:
                return self._generate(requests, on_token)
            finally:
                self.context.release()

    def _generate(self, requests: list[GenerationRequest], on_token) -> list[Generation]:
        lanes = self._lanes([request.mixture for request in requests])
        lane_slots = self._lane_slots(lanes)
        prompts = [self._encode(request.prompt) for request in requests]
        states = [DecodeState(request, self.tokenizer, len(ids)) for request, ids in zip(requests, prompts)]
        input_ids, attention, positions = self._left_padded([prompts[lane.request_index] for lane in lanes])
        cache = _new_cache()
        active = list(range(len(requests)))  # requests still decoding, in lane order
        while True:
            output = self._forward(input_ids, attention, positions, lane_slots, cache, last_only=True)
            lanes = self._step_lanes(lanes, [states[request_index] for request_index in active])
            mixed = self._mix(output.logits[:, -1], lanes, len(active))
            tokens = self._decode_step(mixed, [states[request_index] for request_index in active])
            if on_token is not None:
                for request_index in active:
                    on_token(request_index, states[request_index].text)
            still = [position for position, request_index in enumerate(active) if not states[request_index].done]
            if not still:
                return [state.result() for state in states]
            if len(still) < len(active):
                kept_requests = set(still)
                keep_lanes = [row for row, lane in enumerate(lanes) if lane.request_index in kept_requests]
                keep = torch.tensor(keep_lanes, dtype=torch.long, device=self.device)
                cache.batch_select_indices(keep)
                attention, positions = attention[keep], positions[keep]
                lane_slots = lane_slots[keep.cpu()]
                renumber = {old: new for new, old in enumerate(still)}
                lanes = [Lane(renumber[lanes[row].request_index], lanes[row].expert_id, lanes[row].weight)
                         for row in keep_lanes]
                active = [active[position] for position in still]
                tokens = [tokens[position] for position in still]
            input_ids = torch.tensor([tokens[lane.request_index] for lane in lanes], dtype=torch.long,
                                     device=self.device)[:, None]
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
            positions = positions[:, -1:] + 1

    @torch.inference_mode()
    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        """Each continuation's per-token log-probabilities under its request's mixture. A continuation's last
        token is never read, so one forward row serves every request with the same mixture and the same prompt +
        continuation-but-its-last-token (options scored after one question share it). Rows run in groups of at
        most SCORE_ROW_TOKENS padded tokens, keeping logits for the continuations' positions only (a
        [rows, positions, vocabulary] tensor over whole prompts would not fit many long prompts)."""
        results: list[list[float]] = [[] for _ in requests]
        rows: dict[tuple, _ScoreRow] = {}
        for index, request in enumerate(requests):
            continuation = self.tokenizer(request.continuation, add_special_tokens=False)["input_ids"]
            if not continuation:
                continue
            ids = self._encode(request.prompt) + continuation[:-1]
            key = (tuple(ids), tuple(sorted(request.mixture.items())))
            rows.setdefault(key, _ScoreRow(ids, request.mixture, [])).asks.append((index, continuation))
        group, width = [], 0
        for row in rows.values():
            wider = max(width, len(row.ids))
            if group and (sum(max(1, len(r.mixture)) for r in group) + max(1, len(row.mixture))) * wider \
                    > SCORE_ROW_TOKENS:
                self._score(group, results)
                group, wider = [], len(row.ids)
            group.append(row)
            width = wider
        if group:
            self._score(group, results)
        return results

    def _score(self, rows: list[_ScoreRow], results: list[list[float]]) -> None:
        with self.lock:
            lanes = self._lanes([row.mixture for row in rows])
            lane_slots = self._lane_slots(lanes)
            input_ids, attention, positions = self._left_padded([rows[lane.request_index].ids for lane in lanes])
            kept = max(len(continuation) for row in rows for _, continuation in row.asks)
            try:
                logits = self._forward(input_ids, attention, positions, lane_slots, None,
                                       logits_to_keep=kept).logits.float()  # the last `kept` positions
            finally:
                self.context.release()
            for row_index, row in enumerate(rows):
                lane_rows = [number for number, lane in enumerate(lanes) if lane.request_index == row_index]
                weights = torch.tensor([lanes[number].weight for number in lane_rows], device=logits.device)
                for request_index, continuation in row.asks:
                    # Logits at position t predict token t+1: the continuation is read off the last len(c) positions.
                    span = logits[lane_rows, kept - len(continuation):]  # [k, len, vocab]
                    mixed = mix_next_token_logprobs(span.transpose(0, 1).contiguous(),
                                                    weights.expand(len(continuation), -1).contiguous(), check=False)
                    targets = torch.tensor(continuation, device=mixed.device)
                    results[request_index] = mixed.gather(1, targets[:, None])[:, 0].cpu().tolist()

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Mean of the base model's last hidden states over each text's tokens -> [n, hidden] float32."""
        with self.lock:
            input_ids, attention, positions = self._left_padded([self._encode(text) for text in texts])
            decoder = self.model.get_decoder()  # the transformer without its language-model head
            hidden = decoder(input_ids=input_ids, attention_mask=attention, position_ids=positions)
            states = hidden.last_hidden_state.float()
            mask = attention[:, :, None].float()
            return ((states * mask).sum(1) / mask.sum(1)).cpu()


_ENGINES: dict[str, MosaicEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(base_model_path: str, **options) -> MosaicEngine:
    """The process's engine for this base model (loaded once)."""
    key = str(Path(base_model_path).resolve())
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = MosaicEngine(key, **options)
        return engine
