"""Adapter validation: is this directory a safe LoRA adapter for that base model?

Everything here reads files without executing them: the safetensors header is parsed by hand
(8-byte little-endian length, JSON header, offsets inside the file) and nothing is ever unpickled.

- `inspect_adapter(directory)`: checks that need no base model (config, header, dtypes, pairs).
- `check_against_base_model(report, base_model)`: names, target modules and shapes against the
  base model's Linear modules as registered (no weights loaded).
- `verify_adapter_weights(directory)`: reads every tensor (the task's deep check): readable,
  finite, and loadable by the composition library that serves it.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from composition.experts import (
    CONFIG_FILE,
    PEFT_PREFIX,
    PEFT_TENSOR_NAME,
    WEIGHTS_FILE,
    pattern_value,
    positive_number,
)
from marketplace.model_cards import is_local_path
from domain.errors import DomainError
from mosaic.parsers import JSONRefused, loads_limited

ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
MAX_RANK = 1024
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
MAX_HEADER_BYTES = 16 * 1024 * 1024

DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}


class AdapterRejected(DomainError):
    """An uploaded adapter that Mosaic will not accept, with the reason a contributor can act on."""

    code = "invalid_adapter"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class AdapterReport:
    """What an adapter is, once its files have passed the checks that need no base model."""

    config: dict
    rank: int
    lora_alpha: float
    target_modules: list[str]
    base_model_name_or_path: str
    # module path in the base model ("model.layers.0.self_attn.q_proj") -> {"lora_A": info, "lora_B": info}
    modules: dict[str, dict[str, TensorInfo]] = field(default_factory=dict)

    def rank_of(self, module_name: str) -> int:
        return pattern_value(self.config, "rank_pattern", module_name, self.rank)  # see check_lora_config


def looks_like_pickle(head: bytes) -> bool:
    """Pickle protocol 2+ starts with 0x80 <protocol>; torch.save archives are zip files holding a pickle."""
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def refuse_pickle_name(name: str) -> None:
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise AdapterRejected(
            f"{name!r} is a pickle-based file. Mosaic never unpickles uploads: save the adapter with "
            "safetensors (peft: model.save_pretrained(dir, safe_serialization=True)) "
            f"and upload {WEIGHTS_FILE}."
        )


def read_safetensors_header(path: str | Path) -> dict[str, TensorInfo]:
    """Parse and check a safetensors file's header without reading its tensors."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise AdapterRejected(f"{WEIGHTS_FILE} is truncated: it is shorter than a safetensors header.")
        if looks_like_pickle(head):
            raise AdapterRejected(
                f"{WEIGHTS_FILE} is a pickle/PyTorch file, not safetensors. Mosaic never unpickles uploads: "
                "save the adapter with safe_serialization=True."
            )
        (header_length,) = struct.unpack("<Q", head)
        if header_length == 0 or header_length > MAX_HEADER_BYTES or 8 + header_length > size:
            raise AdapterRejected(
                f"{WEIGHTS_FILE} is not a valid safetensors file: its header length ({header_length} bytes) "
                f"does not fit in the file ({size} bytes); the file is truncated or corrupt."
            )
        raw = handle.read(header_length)
    try:
        header = loads_limited(raw)
    except JSONRefused as error:
        raise AdapterRejected(f"{WEIGHTS_FILE} is corrupt: its header is not valid JSON ({error}).") from None
    if not isinstance(header, dict):
        raise AdapterRejected(f"{WEIGHTS_FILE} is corrupt: its header is not a JSON object.")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise AdapterRejected(f"{WEIGHTS_FILE} is corrupt: __metadata__ must map strings to strings.")
    data_length = size - 8 - header_length
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise AdapterRejected(f"{WEIGHTS_FILE} is corrupt: the entry for {name!r} is not an object.")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise AdapterRejected(f"{WEIGHTS_FILE} is corrupt: tensor {name!r} has unknown dtype {dtype!r}.")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise AdapterRejected(f"{WEIGHTS_FILE} is corrupt: tensor {name!r} has invalid shape {shape!r}.")
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise AdapterRejected(f"{WEIGHTS_FILE} is corrupt: tensor {name!r} has invalid data offsets.")
        if offsets[1] > data_length:
            raise AdapterRejected(
                f"{WEIGHTS_FILE} is truncated: tensor {name!r} ends at byte {offsets[1]} of the data section "
                f"but the file holds only {data_length} bytes of data."
            )
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise AdapterRejected(
                f"{WEIGHTS_FILE} is corrupt: tensor {name!r} occupies {offsets[1] - offsets[0]} bytes, "
                f"but a {dtype} tensor of shape {shape} needs {math.prod(shape) * DTYPE_BYTES[dtype]}."
            )
        spans.append((offsets[0], offsets[1]))
        tensors[name] = TensorInfo(name=name, dtype=dtype, shape=tuple(shape))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise AdapterRejected(f"{WEIGHTS_FILE} is corrupt: tensor data overlaps or leaves gaps.")
        position = end
    if position != data_length:
        raise AdapterRejected(
            f"{WEIGHTS_FILE} is corrupt: the header describes {position} bytes of tensor data "
            f"but the file holds {data_length}."
        )
    return tensors


def read_adapter_config(path: str | Path) -> dict:
    try:
        config = loads_limited(Path(path).read_bytes())
    except JSONRefused as error:
        raise AdapterRejected(f"{CONFIG_FILE} is not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise AdapterRejected(f"{CONFIG_FILE} must be a JSON object.")
    return config


def check_lora_config(config: dict) -> tuple[int, float, list[str]]:
    """The adapter must be plain LoRA: returns (r, lora_alpha, target_modules)."""
    peft_type = str(config.get("peft_type", ""))
    if peft_type.upper() != "LORA":
        raise AdapterRejected(
            f"Only LoRA adapters are accepted, but {CONFIG_FILE} says peft_type {peft_type or 'nothing'!r}."
        )
    rank = config.get("r")
    if not _is_rank(rank):
        raise AdapterRejected(
            f"{CONFIG_FILE}: r must be a whole number between 1 and {MAX_RANK}, not {_shown(rank)}."
        )
    alpha = positive_number(config.get("lora_alpha", rank))
    if alpha is None:
        raise AdapterRejected(
            f"{CONFIG_FILE}: lora_alpha must be a positive number, not {_shown(config['lora_alpha'])}."
        )
    for pattern_field, is_valid, meaning in (
        ("rank_pattern", _is_rank, f"whole numbers between 1 and {MAX_RANK}"),
        ("alpha_pattern", positive_number, "positive numbers"),
    ):
        pattern = config.get(pattern_field) or {}
        if not isinstance(pattern, dict) or not all(is_valid(value) for value in pattern.values()):
            raise AdapterRejected(
                f"{CONFIG_FILE}: {pattern_field} must map module names to {meaning}, not {_shown(pattern)}."
            )
    targets = config.get("target_modules")
    if not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        raise AdapterRejected(f"{CONFIG_FILE}: target_modules must be a non-empty list of module names.")
    for flag, meaning in (("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out layouts")):
        if config.get(flag):
            raise AdapterRejected(f"{CONFIG_FILE}: {meaning} adapters are not supported; use plain LoRA.")
    if config.get("modules_to_save"):
        raise AdapterRejected(
            f"{CONFIG_FILE}: modules_to_save ships full copies of base model weights; "
            "only LoRA weights are accepted."
        )
    if config.get("bias", "none") != "none":
        raise AdapterRejected(f"{CONFIG_FILE}: bias must be 'none'; trained biases are not LoRA weights.")
    return rank, alpha, sorted(set(targets))


def _is_rank(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_RANK


def _shown(value, limit: int = 60) -> str:
    """A value for an error message, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def inspect_adapter(directory: str | Path) -> AdapterReport:
    """Every check that needs no base model. Raises AdapterRejected with the first problem found."""
    directory = Path(directory)
    config = read_adapter_config(directory / CONFIG_FILE)
    rank, alpha, targets = check_lora_config(config)
    tensors = read_safetensors_header(directory / WEIGHTS_FILE)
    if not tensors:
        raise AdapterRejected(f"{WEIGHTS_FILE} holds no tensors.")
    allowed_dtypes = [str(d).upper() for d in settings.EXPERT_ALLOWED_DTYPES]
    modules: dict[str, dict[str, TensorInfo]] = {}
    for name, info in sorted(tensors.items()):
        if info.dtype not in allowed_dtypes:
            raise AdapterRejected(
                f"Tensor {name!r} has dtype {info.dtype}; allowed dtypes are {', '.join(allowed_dtypes)}."
            )
        match = PEFT_TENSOR_NAME.match(name)
        if not match or not name.startswith(PEFT_PREFIX):
            raise AdapterRejected(
                f"Unexpected tensor {name!r}: an adapter may hold only LoRA weights named like "
                f"'{PEFT_PREFIX}model.layers.0.self_attn.q_proj.lora_A.weight'."
            )
        if len(info.shape) != 2:
            raise AdapterRejected(f"Tensor {name!r} has shape {list(info.shape)}; LoRA weights are matrices.")
        module = match["module"][len(PEFT_PREFIX):]
        modules.setdefault(module, {})[match["part"]] = info
    for module, parts in modules.items():
        missing = {"lora_A", "lora_B"} - set(parts)
        if missing:
            raise AdapterRejected(f"Module {module!r} has no {missing.pop()} weight; LoRA needs A and B.")
    base_name = config.get("base_model_name_or_path") or ""
    if not isinstance(base_name, str) or not base_name.isprintable():
        raise AdapterRejected(
            f"{CONFIG_FILE}: base_model_name_or_path must be a printable string (a model name or path), "
            f"not {_shown(base_name)}."
        )
    return AdapterReport(
        config=config, rank=rank, lora_alpha=alpha, target_modules=targets,
        base_model_name_or_path=base_name, modules=modules,
    )


def names_base_model(name_or_path: str, base_model) -> bool:
    """Does a config's base_model_name_or_path name this registered base model (by name or its directory)?"""
    if not name_or_path:
        return False
    if name_or_path == base_model.name or Path(name_or_path).name == base_model.name:
        return True
    try:
        return Path(name_or_path).resolve() == Path(base_model.local_path).resolve()
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return False


def check_against_base_model(report: AdapterReport, base_model) -> str:
    """Names, target modules and shapes against the registered base model's Linear modules. An adapter that
    names its base model by a local directory (what peft's save_pretrained writes) is taken for this base
    model when its shapes match; the returned note says so (empty otherwise)."""
    note = ""
    if not names_base_model(report.base_model_name_or_path, base_model):
        if is_local_path(report.base_model_name_or_path):
            note = (f"The adapter names its base model by the local directory {report.base_model_name_or_path!r}; "
                    f"it was mapped to the registered base model {base_model.name!r}, whose module shapes it matches.")
        else:
                raise AdapterRejected(
                f"This adapter was made for base model {report.base_model_name_or_path or '(none named)'!r}, "
                f"not {base_model.name!r}: set base_model_name_or_path in {CONFIG_FILE} to {base_model.name!r}."
            )
    shapes = {name: tuple(shape) for name, shape in base_model.module_shapes.items()}
    short_names = {name.rsplit(".", 1)[-1] for name in shapes}
    unknown = [target for target in report.target_modules if target.rsplit(".", 1)[-1] not in short_names]
    if unknown:
        raise AdapterRejected(
            f"target_modules {unknown} do not exist in base model {base_model.name!r}; "
            f"its linear modules are {sorted(short_names)}."
        )
    for module, parts in sorted(report.modules.items()):
        if module not in shapes:
            raise AdapterRejected(f"Base model {base_model.name!r} has no linear module {module!r}.")
        if not any(module == t or module.endswith("." + t) for t in report.target_modules):
            raise AdapterRejected(f"Module {module!r} has LoRA weights but is not in target_modules.")
        out_features, in_features = shapes[module]
        rank = report.rank_of(module)
        expected = {"lora_A": (rank, in_features), "lora_B": (out_features, rank)}
        for part, info in sorted(parts.items()):
            if info.shape != expected[part]:
                raise AdapterRejected(
                    f"Tensor {info.name!r} has shape {list(info.shape)}, but at rank {rank} the base model's "
                    f"{module} [{out_features}, {in_features}] needs {list(expected[part])}."
                )
    return note


def verify_adapter_weights(directory: str | Path) -> None:
    """Read every tensor: readable, finite, and loadable by the composition library that serves experts."""
    import torch
    from safetensors.torch import load_file

    from composition.errors import CompositionError
    from composition.experts import read_adapter

    directory = Path(directory)
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except Exception as error:  # safetensors raises several error types on unreadable files
        raise AdapterRejected(f"{WEIGHTS_FILE} cannot be read: {error}") from None
    for name, tensor in sorted(tensors.items()):
        if not torch.isfinite(tensor.float()).all():
            raise AdapterRejected(f"Tensor {name!r} contains NaN or infinite values.")
    try:
        read_adapter(directory)
    except CompositionError as error:
        raise AdapterRejected(f"The serving engine cannot load this adapter: {error}") from None

