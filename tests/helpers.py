"""Test helpers shared across areas: real peft adapters on a locally built base model.

    base_dir = build_tiny_base(tmp_path / "base")          # or use the session fixture `tiny_base`
    adapter_dir = make_peft_adapter(base_dir, tmp_path / "a", target_modules=["q_proj", "v_proj"], r=4, seed=1)

The adapter directory is exactly what peft's save_pretrained writes
(adapter_config.json + adapter_model.safetensors), with lora_B made non-zero so the expert changes outputs.
"""
from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import torch

TINY_BASE = {"layers": 2, "hidden": 64}


def build_tiny_base(directory: str | Path, *, layers: int = TINY_BASE["layers"], hidden: int = TINY_BASE["hidden"],
                    seed: int = 0) -> Path:
    """A small untrained Llama + character tokenizer saved with safetensors (no download)."""
    from composition.world import build_base_model

    return Path(build_base_model(directory, layers=layers, hidden=hidden, seed=seed, train_steps=0))


def make_peft_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    target_modules: list[str] | tuple[str, ...] = ("q_proj", "v_proj"),
    r: int = 4,
    seed: int = 0,
    *,
    lora_alpha: int | None = None,
    base_model_name_or_path: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Build a LoRA adapter with peft.get_peft_model on the base in `base_dir` and save_pretrained it.

    lora_B is filled with small seeded random values (peft initialises it to zero) so the adapter
    actually changes the model. `base_model_name_or_path` overrides what the config names as base
    (peft writes the base directory by default). `dtype` converts the saved tensors (e.g. torch.float16)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha if lora_alpha is not None else 2 * r,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    if dtype is not None:
        peft_model = peft_model.to(dtype)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    if base_model_name_or_path is not None:
        config_path = out_dir / "adapter_config.json"
        data = json.loads(config_path.read_text())
        data["base_model_name_or_path"] = base_model_name_or_path
        config_path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return out_dir


def zip_directory(directory: str | Path, *, folder: str = "") -> bytes:
    """The files of `directory` as a .zip archive (optionally inside `folder/`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(Path(directory).iterdir()):
            archive.write(path, arcname=f"{folder}/{path.name}" if folder else path.name)
    return buffer.getvalue()


def tar_directory(directory: str | Path, *, folder: str = "") -> bytes:
    """The files of `directory` as a .tar.gz archive (optionally inside `folder/`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(Path(directory).iterdir()):
            archive.add(path, arcname=f"{folder}/{path.name}" if folder else path.name)
    return buffer.getvalue()
