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
(exact when that rank is at least the rank of the merged ΔW). The linear methods never form ΔW:
Σ w_i ΔW_i is the product of the experts' stacked factors, and its truncated SVD comes from those.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from composition.errors import CompositionError
from composition.experts import LoraAdapter, LoraModule


def weighted_sum(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    return sum(weight * delta.float() for weight, delta in zip(weights, deltas))


def trim_by_magnitude(delta: torch.Tensor, density: float, threshold: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the round(density · n) entries of largest magnitude, zero the rest (TIES "trim"). Entries as large
    as the smallest one kept are kept too (a selection by threshold, several times faster than a top-k);
    `threshold`, when given, is magnitude_threshold(delta, density) worked out before."""
    keep = int(round(density * delta.numel()))
    if keep >= delta.numel():
        return delta.clone()
    if keep <= 0:
        return torch.zeros_like(delta)
    if threshold is None:
        threshold = magnitude_threshold(delta, density)
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def magnitude_threshold(delta: torch.Tensor, density: float) -> torch.Tensor | None:
    """The magnitude of the smallest of the round(density · n) largest entries; None when that keeps every
    entry or none (a trim with nothing to select)."""
    keep = int(round(density * delta.numel()))
    if not 0 < keep < delta.numel():
        return None
    return torch.kthvalue(delta.abs().flatten(), delta.numel() - keep + 1).values


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
    linear: ClassVar[bool] = False  # the result is Σ c_i ΔW_i with c_i = factor · w_i (see linear_factor)

    def __init__(self, *, density: float = 1.0, scale: float = 1.0, sign_method: str = "total"):
        self.density = density
        self.scale = scale
        self.sign_method = sign_method

    def linear_factor(self) -> float:
        """For a linear method, the c_i / w_i of its Σ c_i ΔW_i."""
        raise NotImplementedError

    def merge(self, deltas: list[torch.Tensor], weights: list[float], *, generator: torch.Generator,
              module: str) -> torch.Tensor:
        """The merged ΔW of `module` from each expert's ΔW, in the experts' order (an instance merges one set
        of experts, and may keep what does not depend on the weights between calls)."""
        raise NotImplementedError


class Linear(MergeMethod):
    name = "linear"
    uses_scale = False
    linear = True

    def linear_factor(self) -> float:
        return 1.0

    def merge(self, deltas, weights, *, generator, module):
        return weighted_sum(deltas, weights)


class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    linear = True

    def linear_factor(self) -> float:
        return self.scale

    def merge(self, deltas, weights, *, generator, module):
        return self.scale * weighted_sum(deltas, weights)


class Ties(MergeMethod):
    name = "ties"
    uses_density = True

    def __init__(self, **options):
        super().__init__(**options)
        self.thresholds: dict[tuple[str, int], torch.Tensor | None] = {}  # (module, expert index): its trim threshold

    def merge(self, deltas, weights, *, generator, module):
        stacked = torch.stack([w * self.trim(d.float(), (module, index))
                               for index, (w, d) in enumerate(zip(weights, deltas))])
        return self.scale * disjoint_mean(stacked, majority_sign_mask(stacked, self.sign_method))

    def trim(self, delta: torch.Tensor, key: tuple[str, int]) -> torch.Tensor:
        if key not in self.thresholds:
            self.thresholds[key] = magnitude_threshold(delta, self.density)
        return trim_by_magnitude(delta, self.density, self.thresholds[key])


class DareLinear(MergeMethod):
    name = "dare_linear"
    uses_density = True

    def merge(self, deltas, weights, *, generator, module):
        dropped = [drop_and_rescale(d.float(), self.density, generator) for d in deltas]
        return self.scale * weighted_sum(dropped, weights)


class DareTies(MergeMethod):
    name = "dare_ties"
    uses_density = True

    def merge(self, deltas, weights, *, generator, module):
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
    return _truncated(U, S, Vh, max(1, min(rank, S.numel())))


def factorise_product(B: torch.Tensor, A: torch.Tensor, rank: int) -> LoraModule:
    """`factorise(B @ A, rank)` for B [out, R], A [R, in], without forming B @ A: with B = Q_b R_b and
    Aᵀ = Q_a R_a, B @ A = Q_b (R_b R_aᵀ) Q_aᵀ, so the SVD of the small R × R core gives the product's."""
    Qb, Rb = torch.linalg.qr(B.double())
    Qa, Ra = torch.linalg.qr(A.double().T)
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T)
    kept = max(1, min(rank, B.shape[0], A.shape[1]))  # the shape factorise(B @ A) gives
    module = _truncated(Qb @ U, S, Vh @ Qa.T, min(kept, S.numel()))
    missing = kept - module.rank  # the product's rank is at most R: the rest are zero singular values
    if missing > 0:
        module = LoraModule(A=torch.cat([module.A, module.A.new_zeros(missing, A.shape[1])]),
                            B=torch.cat([module.B, module.B.new_zeros(B.shape[0], missing)], dim=1), scaling=1.0)
    return module


def _truncated(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int) -> LoraModule:
    root = S[:rank].sqrt()
    return LoraModule(A=(root.unsqueeze(1) * Vh[:rank]).float().contiguous(),
                      B=(U[:, :rank] * root).float().contiguous(), scaling=1.0)


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


class AdapterMerger:
    """Merges one set of adapters with one method and its options, under any number of weight vectors (a merge
    search tries many): what does not depend on the weights, such as TIES's trim thresholds, is worked out once.
    Modules are merged in sorted name order and experts in the order of `adapters`; each merge draws DARE's
    masks from a generator seeded by `seed`, so it is reproducible. `rank` (default: the sum of the experts'
    ranks) is the rank each merged ΔW is factorised back to."""

    def __init__(self, adapters: dict[str, LoraAdapter], *, method: str, density: float = 1.0,
                 scale: float | None = None, sign_method: str = "total", seed: int = 0, rank: int | None = None):
        if method not in MERGE_METHODS:
            raise CompositionError(f"unknown merge method {method!r}; known: {', '.join(MERGE_METHODS)}")
        check_mergeable(adapters)
        self.adapters = adapters
        self.method = MERGE_METHODS[method](
            density=density, scale=float(len(adapters)) if scale is None else scale, sign_method=sign_method
        )
        self.seed = seed
        self.rank = rank if rank is not None else sum(max(adapter.ranks) for adapter in adapters.values())
        self.module_names = sorted(next(iter(adapters.values())).modules)

    def deltas(self, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """The merged dense ΔW of each module."""
        generator = torch.Generator().manual_seed(self.seed)
        ordered = [weights.get(expert_id, 0.0) for expert_id in self.adapters]
        return {name: self.method.merge([adapter.modules[name].delta() for adapter in self.adapters.values()],
                                        ordered, generator=generator, module=name)
                for name in self.module_names}

    def adapter(self, weights: dict[str, float]) -> LoraAdapter:
        """The merge as a LoRA adapter at `rank`."""
        if self.method.linear:
            modules = {name: self.linear_factorised(weights, name) for name in self.module_names}
        else:
            modules = {name: factorise(delta, self.rank) for name, delta in self.deltas(weights).items()}
        return LoraAdapter(modules=modules, base_model=next(iter(self.adapters.values())).base_model)

    def linear_factorised(self, weights: dict[str, float], name: str) -> LoraModule:
        """Σ c_i ΔW_i of one module (c_i = linear_factor · w_i), from the stacked factors [c_i s_i B_i] and [A_i]."""
        factor = self.method.linear_factor()
        terms = [(factor * weights.get(expert_id, 0.0), adapter.modules[name])
                 for expert_id, adapter in self.adapters.items()]
        terms = [(c, module) for c, module in terms if c != 0.0] or terms[:1]
        B = torch.cat([c * module.scaling * module.B.float() for c, module in terms], dim=1)
        A = torch.cat([module.A.float() for _, module in terms], dim=0)
        return factorise_product(B, A, self.rank)


def merge_deltas(adapters: dict[str, LoraAdapter], weights: dict[str, float], *, method: str,
                 **options) -> dict[str, torch.Tensor]:
    """Merged dense ΔW per module (options: density, scale, sign_method, seed; see AdapterMerger)."""
    return AdapterMerger(adapters, method=method, **options).deltas(weights)


def merge_adapters(adapters: dict[str, LoraAdapter], weights: dict[str, float], *, method: str,
                   rank: int | None = None, **options) -> LoraAdapter:
    """Merge and factorise back to LoRA; rank defaults to the sum of the experts' ranks."""
    return AdapterMerger(adapters, method=method, rank=rank, **options).adapter(weights)
