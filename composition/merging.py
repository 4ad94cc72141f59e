"""Adapter merging on the weight updates ΔW = scaling · B @ A (never by averaging A and B).

Every method takes the experts' ΔW for one module, merge weights w (non-negative, summing to 1)
and a scale λ, and returns one dense ΔW:
  linear           Σ w_i ΔW_i                                   (λ is fixed to 1)
  task_arithmetic  λ · Σ w_i ΔW_i
  ties             λ · disjoint_mean(sign-elected w_i · trim(ΔW_i, density))
  dare_linear      λ · Σ w_i · drop_and_rescale(ΔW_i, density)
  dare_ties        λ · disjoint_mean(sign-elected w_i · drop_and_rescale(ΔW_i, density))
With uniform weights, λ = number of experts gives the papers' defaults (task arithmetic = sum of
task vectors; TIES = mean over agreeing signs). `merge_adapters` applies a method module by module
and factorises each merged ΔW back to LoRA factors by truncated SVD at the rank asked for
(exact when that rank is at least the rank of the merged ΔW).
"""
from __future__ import annotations

from typing import ClassVar

import torch

from composition.errors import CompositionError
from composition.experts import LoraAdapter, LoraModule


def weighted_sum(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    return sum(weight * delta.float() for weight, delta in zip(weights, deltas))


def trim_by_magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the round(density · n) entries of largest magnitude, zero the rest (TIES "trim")."""
    keep = int(round(density * delta.numel()))
    if keep >= delta.numel():
        return delta.clone()
    if keep <= 0:
        return torch.zeros_like(delta)
    flat = delta.flatten()
    kept = torch.zeros_like(flat)
    indices = torch.topk(flat.abs(), keep).indices
    kept[indices] = flat[indices]
    return kept.view_as(delta)


def drop_and_rescale(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: keep each entry with probability density (mask = uniform draw < density), rescale by 1/density."""
    if density >= 1.0:
        return delta.clone()
    mask = torch.rand(delta.shape, generator=generator) < density
    return delta * mask / density


def majority_sign_mask(stacked: torch.Tensor, method: str = "total") -> torch.Tensor:
    """TIES "elect": per entry, the sign of the total (or of the count of signs); True where a task agrees."""
    sign = stacked.sign()
    magnitude = stacked.sum(dim=0) if method == "total" else sign.sum(dim=0)
    elected = torch.where(magnitude >= 0, 1.0, -1.0)
    return sign == elected


def disjoint_mean(stacked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TIES "merge": mean over the tasks that agree with the elected sign (zeros do not count)."""
    total = (stacked * mask).sum(dim=0)
    count = mask.sum(dim=0).clamp(min=1)
    return total / count


class MergeMethod:
    name: ClassVar[str]
    uses_density: ClassVar[bool] = False
    uses_scale: ClassVar[bool] = True

    def __init__(self, *, density: float = 1.0, scale: float = 1.0, sign_method: str = "total"):
        self.density = density
        self.scale = scale
        self.sign_method = sign_method

    def merge(self, deltas: list[torch.Tensor], weights: list[float], *, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class Linear(MergeMethod):
    name = "linear"
    uses_scale = False

    def merge(self, deltas, weights, *, generator):
        return weighted_sum(deltas, weights)


class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"

    def merge(self, deltas, weights, *, generator):
        return self.scale * weighted_sum(deltas, weights)


class Ties(MergeMethod):
    name = "ties"
    uses_density = True

    def merge(self, deltas, weights, *, generator):
        stacked = torch.stack([w * trim_by_magnitude(d.float(), self.density) for w, d in zip(weights, deltas)])
        return self.scale * disjoint_mean(stacked, majority_sign_mask(stacked, self.sign_method))


class DareLinear(MergeMethod):
    name = "dare_linear"
    uses_density = True

    def merge(self, deltas, weights, *, generator):
        dropped = [drop_and_rescale(d.float(), self.density, generator) for d in deltas]
        return self.scale * weighted_sum(dropped, weights)


class DareTies(MergeMethod):
    name = "dare_ties"
    uses_density = True

    def merge(self, deltas, weights, *, generator):
        stacked = torch.stack(
            [w * drop_and_rescale(d.float(), self.density, generator) for w, d in zip(weights, deltas)]
        )
        return self.scale * disjoint_mean(stacked, majority_sign_mask(stacked, self.sign_method))


MERGE_METHODS: dict[str, type[MergeMethod]] = {
    method.name: method for method in (Linear, TaskArithmetic, Ties, DareLinear, DareTies)
}


def factorise(delta: torch.Tensor, rank: int) -> LoraModule:
    """Truncated SVD: ΔW ≈ B @ A with B = U_r·sqrt(S_r), A = sqrt(S_r)·V_rᵀ, scaling 1."""
    U, S, Vh = torch.linalg.svd(delta.float(), full_matrices=False)
    rank = max(1, min(rank, S.numel()))
    root = S[:rank].sqrt()
    return LoraModule(A=(root.unsqueeze(1) * Vh[:rank]).contiguous(), B=(U[:, :rank] * root).contiguous(), scaling=1.0)


def check_mergeable(adapters: dict[str, LoraAdapter]) -> None:
    """Same adapted modules with the same shapes (ranks may differ: ΔW is merged, not A and B)."""
    if not adapters:
        raise CompositionError("merging needs at least one expert (the expert list is empty)")
    items = list(adapters.items())
    first_id, first = items[0]
    for expert_id, adapter in items[1:]:
        if set(adapter.modules) != set(first.modules):
            missing = sorted(set(first.modules) ^ set(adapter.modules))
            raise CompositionError(
                f"experts {first_id!r} and {expert_id!r} adapt different target modules "
                f"({first.target_modules} vs {adapter.target_modules}; differing: {missing[:4]})"
            )
        for name, module in adapter.modules.items():
            reference = first.modules[name]
            if (module.B.shape[0], module.A.shape[1]) != (reference.B.shape[0], reference.A.shape[1]):
                raise CompositionError(
                    f"module {name}: {expert_id!r} has shape {(module.B.shape[0], module.A.shape[1])}, "
                    f"{first_id!r} has {(reference.B.shape[0], reference.A.shape[1])}"
                )


def merge_deltas(adapters: dict[str, LoraAdapter], weights: dict[str, float], *, method: str,
                 density: float = 1.0, scale: float | None = None, sign_method: str = "total",
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """Merged dense ΔW per module. Modules are processed in sorted name order and experts in the
    order of `adapters`, with one generator seeded by `seed` (so DARE's masks are reproducible)."""
    if method not in MERGE_METHODS:
        raise CompositionError(f"unknown merge method {method!r}; known: {', '.join(MERGE_METHODS)}")
    check_mergeable(adapters)
    expert_ids = list(adapters)
    merger = MERGE_METHODS[method](
        density=density, scale=float(len(expert_ids)) if scale is None else scale, sign_method=sign_method
    )
    generator = torch.Generator().manual_seed(seed)
    merged = {}
    for name in sorted(adapters[expert_ids[0]].modules):
        deltas = [adapters[expert_id].modules[name].delta() for expert_id in expert_ids]
        merged[name] = merger.merge(deltas, [weights.get(expert_id, 0.0) for expert_id in expert_ids],
                                    generator=generator)
    return merged


def merge_adapters(adapters: dict[str, LoraAdapter], weights: dict[str, float], *, method: str,
                   rank: int | None = None, **options) -> LoraAdapter:
    """Merge and factorise back to LoRA; rank defaults to the sum of the experts' ranks."""
    deltas = merge_deltas(adapters, weights, method=method, **options)
    if rank is None:
        rank = sum(max(adapter.ranks) for adapter in adapters.values())
    first = next(iter(adapters.values()))
    return LoraAdapter(modules={name: factorise(delta, rank) for name, delta in deltas.items()},
                       base_model=first.base_model)
