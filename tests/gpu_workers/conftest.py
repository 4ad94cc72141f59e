"""A tiny base model and real peft adapters on it, built once per test session (no download)."""
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpu_workers.adapter_pool import adapter_content_sha256
from tests.helpers import build_tiny_base, make_peft_adapter


@dataclass(frozen=True)
class AdapterOnDisk:
    id: str
    path: Path
    sha256: str  # the canonical content hash the marketplace sends


def weights_sha256(adapter_dir: Path) -> str:
    return hashlib.sha256((Path(adapter_dir) / "adapter_model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def gpu_world(tmp_path_factory):
    """A 2-layer, 64-wide Llama with a character tokenizer, and three adapters of different ranks and targets."""
    root = tmp_path_factory.mktemp("gpu_world")
    base = build_tiny_base(root / "base")
    specs = {
        "alpha": (["q_proj", "v_proj", "down_proj"], 4),
        "beta": (["q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"], 8),
        "gamma": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 16),
    }
    adapters = {}
    for seed, (expert_id, (targets, rank)) in enumerate(specs.items(), start=1):
        path = make_peft_adapter(base, root / expert_id, target_modules=targets, r=rank, seed=seed)
        adapters[expert_id] = AdapterOnDisk(expert_id, path, adapter_content_sha256(path))
    return base, adapters


@pytest.fixture(scope="session")
def world_engine(gpu_world):
    """Build a MosaicEngine on the tiny base with every adapter of gpu_world registered (options: the engine's)."""
    from composition.experts import load_expert
    from gpu_workers.engine import MosaicEngine

    base, adapters = gpu_world

    def build(**options):
        engine = MosaicEngine(base, lora_backend="torch", **options)
        for adapter in adapters.values():
            engine.register_expert(load_expert(adapter.id, adapter.path))
        return engine

    return build
