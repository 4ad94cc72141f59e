"""Experts: an id, a LoRA adapter (A, B and scaling per target module) and metadata.

Module names are paths inside the base model, e.g. "model.layers.0.self_attn.q_proj".
A module's weight update is ΔW = scaling · B @ A with A [r, in], B [out, r].
Adapters are read from and written to the standard peft directory layout
(adapter_config.json + adapter_model.safetensors); weights are read with safetensors, never pickle.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from composition.errors import CompositionError

if TYPE_CHECKING:  # torch loads where tensors are read or written, not where an adapter's files are hashed
    import torch

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
# A LoRA weight as peft saves it: <module>.lora_A|lora_B[.default].weight (the module name includes PEFT_PREFIX).
PEFT_TENSOR_NAME = re.compile(r"^(?P<module>[A-Za-z0-9_.]+)\.(?P<part>lora_A|lora_B)(?:\.default)?\.weight$")


@dataclass
class LoraModule:
    A: torch.Tensor  # [r, in]
    B: torch.Tensor  # [out, r]
    scaling: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        """ΔW [out, in] = scaling · B @ A."""
        return self.scaling * (self.B.float() @ self.A.float())


@dataclass
class LoraAdapter:
    modules: dict[str, LoraModule]
    base_model: str = ""

    @property
    def target_modules(self) -> list[str]:
        """Short names of the adapted projections (q_proj, v_proj, ...), sorted."""
        return sorted({name.rsplit(".", 1)[-1] for name in self.modules})

    @property
    def ranks(self) -> set[int]:
        return {module.rank for module in self.modules.values()}

    def deltas(self) -> dict[str, torch.Tensor]:
        return {name: module.delta() for name, module in self.modules.items()}

    def save(self, directory: str | Path) -> Path:
        """Write a peft-compatible adapter directory. Each module keeps its own rank; scaling is
        folded into B so lora_alpha == r and peft reproduces ΔW exactly."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ranks = {name: module.rank for name, module in self.modules.items()}
        rank = max(ranks.values())
        tensors = {}
        for name, module in self.modules.items():
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.A.float().contiguous()
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = (module.B.float() * module.scaling).contiguous()
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.base_model,
            "r": rank,
            "lora_alpha": rank,
            "rank_pattern": {name: r for name, r in ranks.items() if r != rank},
            "alpha_pattern": {name: r for name, r in ranks.items() if r != rank},
            "target_modules": self.target_modules,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "use_dora": False,
            "inference_mode": True,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        from safetensors.torch import save_file

        save_file(tensors, str(directory / WEIGHTS_FILE))
        return directory


@dataclass
class Expert:
    id: str
    adapter: LoraAdapter
    metadata: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        return str(self.metadata.get("description", ""))

    @property
    def examples(self) -> list[str]:
        return [str(example) for example in self.metadata.get("examples", [])]

    @property
    def priorities(self) -> list[str]:
        return [str(tag) for tag in self.metadata.get("priorities", [])]

    @property
    def base_model(self) -> str:
        return str(self.metadata.get("base_model") or self.adapter.base_model)


def positive_number(value) -> float | None:
    """A JSON number that is positive and finite as a float, else None (booleans, strings, 1e999, 10**400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if 0 < number < math.inf else None


def pattern_value(config: dict, field: str, module_name: str, default):
    """peft's rank_pattern / alpha_pattern (`field` of adapter_config.json): the value of the first key that
    names this module (its whole name, or its name ends with "." + key), else `default`."""
    pattern = config.get(field) or {}
    if not isinstance(pattern, dict):
        raise CompositionError(f"{CONFIG_FILE}: {field} must be an object mapping module names to numbers")
    for key, value in pattern.items():
        if module_name == key or module_name.endswith("." + key):
            return value
    return default


def adapter_content_sha256(adapter_dir: str | Path) -> str:
    """An adapter's content address: sha256 over adapter_config.json and adapter_model.safetensors, in name
    order, each as name NUL size NUL content. The marketplace stores versions under it; workers check what
    they load against it."""
    adapter_dir = Path(adapter_dir)
    digest = hashlib.sha256()
    for name in sorted((CONFIG_FILE, WEIGHTS_FILE)):
        path = adapter_dir / name
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def read_adapter(adapter_dir: str | Path) -> LoraAdapter:
    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / CONFIG_FILE, adapter_dir / WEIGHTS_FILE
    if not config_path.is_file():
        raise CompositionError(f"{adapter_dir} has no {CONFIG_FILE}")
    if not weights_path.is_file():
        raise CompositionError(f"{adapter_dir} has no {WEIGHTS_FILE} (only safetensors adapters are accepted)")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, too-long integers
        raise CompositionError(f"{CONFIG_FILE} is not valid JSON: {error}") from error
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise CompositionError(f"{CONFIG_FILE} must describe a LoRA adapter (peft_type LORA)")
    if config.get("use_dora"):
        raise CompositionError("DoRA adapters are not supported")
    if config.get("fan_in_fan_out"):
        raise CompositionError("fan_in_fan_out adapters are not supported")
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights_path))
    except Exception as error:  # safetensors raises several types on corrupt files
        raise CompositionError(f"{WEIGHTS_FILE} cannot be read: {error}") from error

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in name:
                module_name = name.split(marker)[0]
                pairs.setdefault(module_name, {})[part] = tensor
                break
        else:
            raise CompositionError(f"unexpected tensor {key!r} in {WEIGHTS_FILE}: only LoRA A/B weights are allowed")
    if not pairs:
        raise CompositionError(f"{WEIGHTS_FILE} holds no LoRA weights")

    default_alpha = config.get("lora_alpha", config.get("r", 8))
    modules = {}
    for module_name, pair in sorted(pairs.items()):
        if set(pair) != {"lora_A", "lora_B"}:
            raise CompositionError(f"module {module_name} lacks lora_A or lora_B")
        A, B = pair["lora_A"].float(), pair["lora_B"].float()
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise CompositionError(
                f"module {module_name}: lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)} do not form B @ A"
            )
        rank = A.shape[0]
        alpha = positive_number(pattern_value(config, "alpha_pattern", module_name, default_alpha))
        if alpha is None:
            raise CompositionError(f"{CONFIG_FILE}: the lora_alpha of {module_name} is not a positive number")
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        modules[module_name] = LoraModule(A=A, B=B, scaling=scaling)
    return LoraAdapter(modules=modules, base_model=str(config.get("base_model_name_or_path") or ""))


def load_expert(expert_id: str, adapter_dir: str | Path, metadata: dict | None = None) -> Expert:
    return Expert(id=expert_id, adapter=read_adapter(adapter_dir), metadata=dict(metadata or {}))


def check_same_base(experts: list[Expert]) -> None:
    """All experts must adapt the same base model (when they say which)."""
    bases = {expert.id: expert.base_model for expert in experts if expert.base_model}
    if len(set(bases.values())) > 1:
        listing = ", ".join(f"{expert_id} on {base}" for expert_id, base in sorted(bases.items()))
        raise CompositionError(f"experts are on different base models: {listing}")
