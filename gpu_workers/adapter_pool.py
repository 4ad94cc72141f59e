"""Experts' LoRA weights beside the base model, stacked per target module in slots.

For each adapted module the pool holds A [n_slots, r_max, in], B [n_slots, out, r_max], a scaling and a rank
per slot (rank 0: the expert does not adapt that module, and the kernel reads nothing for it). An expert
occupies the same slot in every module, so one slot index per token row serves the whole model.

Experts come from an adapter directory (checked against the sha256 the message carries, read with
safetensors) or from an already loaded composition Expert. Slots are recycled least recently used first;
the stacks are sized so that they fit the byte budget. An evicted expert is reloaded from its source on demand.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from composition.errors import CompositionError
from composition.experts import CONFIG_FILE, WEIGHTS_FILE, Expert, adapter_content_sha256, load_expert


class AdapterError(ValueError):
    """An adapter cannot be served: wrong hash, unreadable, or shapes that do not fit the base model."""


class PoolFull(AdapterError):
    """One batch needs more experts than the pool has slots."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_digests(directory: str | Path) -> set[str]:
    """The hashes an adapter directory is known by: its canonical content hash (adapter_content_sha256), and
    the plain sha256 of adapter_model.safetensors."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise AdapterError(f"adapter directory {directory} must hold {CONFIG_FILE} and {WEIGHTS_FILE}")
    return {adapter_content_sha256(directory), _file_sha256(directory / WEIGHTS_FILE)}


@dataclass(frozen=True)
class AdapterSource:
    path: str
    sha256: str


@dataclass
class PoolStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    loads: int = 0


class AdapterPool:
    """The stacks of every resident expert's LoRA weights, one slot per expert, for serving only. They are
    written under torch.inference_mode() wherever the caller is: stacks reallocated inside an engine call
    (inference tensors) and written later outside one would refuse every in-place write from then on."""

    def __init__(
        self,
        module_shapes: dict[str, tuple[int, int]],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        budget_bytes: int = 256 << 20,
        max_slots: int = 64,
        initial_rank: int = 8,
    ):
        """module_shapes: {module name: (in_features, out_features)} of every linear layer adapters may target."""
        if not module_shapes:
            raise ValueError("the pool needs at least one adaptable module")
        self.module_shapes = dict(module_shapes)
        self.device = torch.device(device)
        self.dtype = dtype
        self.budget_bytes = int(budget_bytes)
        self.max_slots = int(max_slots)
        self.r_max = 0
        self.capacity = 0
        self.a: dict[str, torch.Tensor] = {}
        self.b: dict[str, torch.Tensor] = {}
        self.scalings: dict[str, torch.Tensor] = {}
        self.ranks: dict[str, torch.Tensor] = {}
        self._resident: OrderedDict[str, int] = OrderedDict()  # expert id -> slot, least recently used first
        self._free: list[int] = []
        self._sources: dict[str, AdapterSource | Expert] = {}
        self.stats = PoolStats()
        self.version = 0  # bumped whenever a slot's contents change (callers may keep gathered copies)
        self._allocate(max(1, initial_rank))

    # -- sizing -------------------------------------------------------------------------------------------
    def slot_bytes(self, r_max: int) -> int:
        element = torch.tensor([], dtype=self.dtype).element_size()
        return sum(r_max * (fan_in + fan_out) * element for fan_in, fan_out in self.module_shapes.values())

    @torch.inference_mode()
    def _allocate(self, r_max: int) -> None:
        """(Re)build the stacks for rank r_max, keeping the most recently used experts that still fit."""
        capacity = min(self.max_slots, self.budget_bytes // self.slot_bytes(r_max))
        if capacity < 1:
            raise AdapterError(
                f"the adapter budget of {self.budget_bytes} bytes cannot hold one expert of rank {r_max}"
            )
        keep = list(self._resident)[-capacity:]
        old = (self.a, self.b, self.scalings, self.ranks, dict(self._resident))
        self.stats.evictions += len(self._resident) - len(keep)
        self.a = {n: torch.zeros(capacity, r_max, i, dtype=self.dtype, device=self.device)
                  for n, (i, o) in self.module_shapes.items()}
        # B is stored rank-major ([slot, r, out] in memory) and exposed as the [slot, out, r] view the kernels
        # take: the expand kernel then reads rows of `out` contiguously (16-byte loads) whatever the rank.
        self.b = {n: torch.zeros(capacity, r_max, o, dtype=self.dtype, device=self.device).transpose(1, 2)
                  for n, (i, o) in self.module_shapes.items()}
        self.scalings = {n: torch.zeros(capacity, dtype=torch.float32, device=self.device) for n in self.module_shapes}
        self.ranks = {n: torch.zeros(capacity, dtype=torch.int32, device=self.device) for n in self.module_shapes}
        old_a, old_b, old_scalings, old_ranks, old_slots = old
        self._resident = OrderedDict()
        for new_slot, expert_id in enumerate(keep):
            slot = old_slots[expert_id]
            r = min(self.r_max, r_max)
            for name in self.module_shapes:
                self.a[name][new_slot, :r] = old_a[name][slot, :r]
                self.b[name][new_slot, :, :r] = old_b[name][slot, :, :r]
                self.scalings[name][new_slot] = old_scalings[name][slot]
                self.ranks[name][new_slot] = old_ranks[name][slot]
            self._resident[expert_id] = new_slot
        self._free = list(range(capacity - 1, len(keep) - 1, -1))
        self.r_max, self.capacity = r_max, capacity
        self.version += 1

    # -- registry -----------------------------------------------------------------------------------------
    def register(self, expert: Expert) -> bool:
        """Make an already loaded expert servable (its weights are copied into a slot on first use). True when
        the id's adapter changed (it was unknown, or known with other weights)."""
        self._check_shapes(expert)
        if self._sources.get(expert.id) is expert:
            return False
        self.forget(expert.id)
        self._sources[expert.id] = expert
        return True

    def register_path(self, expert_id: str, adapter_path: str, sha256: str) -> bool:
        """Make an adapter directory servable; its content must hash to sha256 (checked on every load). True
        when the id's adapter changed."""
        source = AdapterSource(path=str(adapter_path), sha256=str(sha256).lower())
        if self._sources.get(expert_id) == source:
            return False
        self.forget(expert_id)
        self._sources[expert_id] = source
        return True

    def forget(self, expert_id: str) -> None:
        self._sources.pop(expert_id, None)
        slot = self._resident.pop(expert_id, None)
        if slot is not None:
            self._clear(slot)
            self._free.append(slot)

    @property
    def known(self) -> set[str]:
        """Experts the pool can serve (resident or not)."""
        return set(self._sources)

    def is_resident(self, expert_id: str) -> bool:
        return expert_id in self._resident

    @property
    def resident(self) -> list[str]:
        """Resident experts, least recently used first."""
        return list(self._resident)

    # -- serving ------------------------------------------------------------------------------------------
    def acquire(self, expert_ids: list[str]) -> dict[str, int]:
        """The slot of each expert, loading missing ones (evicting the least recently used experts that this
        call does not need). Raises PoolFull when the experts cannot be resident together."""
        wanted = list(dict.fromkeys(expert_ids))
        unknown = [expert_id for expert_id in wanted if expert_id not in self._sources]
        if unknown:
            raise AdapterError(f"unknown expert(s): {', '.join(unknown)}")
        loaded = {}
        for expert_id in wanted:
            if expert_id in self._resident:
                self.stats.hits += 1
                self._resident.move_to_end(expert_id)
            else:
                self.stats.misses += 1
                loaded[expert_id] = self._read(expert_id)
        needed_rank = max([self.r_max] + [m.rank for e in loaded.values() for m in e.adapter.modules.values()])
        if needed_rank > self.r_max:
            self._allocate(needed_rank)
        if len(wanted) > self.capacity:
            raise PoolFull(
                f"{len(wanted)} experts are needed together but the adapter pool holds {self.capacity} "
                f"(budget {self.budget_bytes} bytes at rank {self.r_max})"
            )
        for expert_id, expert in loaded.items():
            slot = self._take_slot(protect=set(wanted))
            self._write(slot, expert)
            self._resident[expert_id] = slot
            self.stats.loads += 1
        for expert_id in wanted:
            self._resident.move_to_end(expert_id)
        return {expert_id: self._resident[expert_id] for expert_id in wanted}

    def _take_slot(self, *, protect: set[str]) -> int:
        if self._free:
            return self._free.pop()
        for victim in self._resident:
            if victim not in protect:
                slot = self._resident.pop(victim)
                self.stats.evictions += 1
                self._clear(slot)
                return slot
        raise PoolFull("no adapter slot can be freed")  # unreachable: acquire checks capacity first

    def _read(self, expert_id: str) -> Expert:
        source = self._sources[expert_id]
        if isinstance(source, Expert):
            return source
        path = Path(source.path)
        if source.sha256 not in adapter_digests(path):
            raise AdapterError(f"expert {expert_id}: adapter content at {path} does not match its sha256")
        try:
            expert = load_expert(expert_id, path)
        except CompositionError as error:
            raise AdapterError(f"expert {expert_id}: {error}") from error
        self._check_shapes(expert)
        return expert

    def _check_shapes(self, expert: Expert) -> None:
        for name, module in expert.adapter.modules.items():
            if name not in self.module_shapes:
                raise AdapterError(f"expert {expert.id} adapts {name}, which the base model has no adaptable layer for")
            fan_in, fan_out = self.module_shapes[name]
            if tuple(module.A.shape[1:]) != (fan_in,) or module.B.shape[0] != fan_out:
                raise AdapterError(
                    f"expert {expert.id}: {name} has A {tuple(module.A.shape)}, B {tuple(module.B.shape)}; "
                    f"the base layer is {fan_in} -> {fan_out}"
                )

    @torch.inference_mode()
    def _write(self, slot: int, expert: Expert) -> None:
        self._clear(slot)
        self.version += 1
        for name, module in expert.adapter.modules.items():
            rank = module.rank
            self.a[name][slot, :rank] = module.A.to(device=self.device, dtype=self.dtype)
            self.b[name][slot, :, :rank] = module.B.to(device=self.device, dtype=self.dtype)
            self.scalings[name][slot] = float(module.scaling)
            self.ranks[name][slot] = rank

    @torch.inference_mode()
    def _clear(self, slot: int) -> None:
        self.version += 1
        for name in self.module_shapes:
            self.a[name][slot].zero_()
            self.b[name][slot].zero_()
            self.scalings[name][slot] = 0.0
            self.ranks[name][slot] = 0
