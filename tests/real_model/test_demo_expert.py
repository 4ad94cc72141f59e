"""A demo expert on the real base model: trained here (or found in the recipe cache), it answers its skill's
held-out items right where the base model does not. Served through Mosaic's engine, greedy, with the base
model's own chat template.

The converted base model and the trained adapter stay in MOSAIC_MODEL_CACHE (default ~/.cache/mosaic/models),
so a second run trains nothing."""
import os
from pathlib import Path

import pytest

from composition.skills import SKILLS, is_correct

pytestmark = pytest.mark.real_model

SKILL = "sentiment"  # the cheapest demo expert to train
SAMPLE = 10


def model_cache() -> Path:
    """Where the converted base model and the trained adapter stay between runs (as tests/real_model's
    conftest reads it)."""
    return Path(os.environ.get("MOSAIC_MODEL_CACHE") or Path.home() / ".cache" / "mosaic" / "models")


@pytest.fixture(scope="module")
def base_dir() -> Path:
    from gpu_workers.model_import import ensure_default_base_model

    return ensure_default_base_model(model_cache())


@pytest.fixture(scope="module")
def engine(base_dir):
    from gpu_workers.engine import MosaicEngine

    return MosaicEngine(base_dir)


def replies(engine, mixture, items, max_tokens):
    from composition.engine import GenerationRequest
    from composition.training import chat_prompt

    requests = [GenerationRequest(prompt=chat_prompt(engine.tokenizer, item.prompt), mixture=mixture,
                                  max_tokens=max_tokens) for item in items]
    return [generation.text for generation in engine.generate(requests)]


def test_a_demo_expert_answers_its_heldout_items_where_the_base_model_does_not(base_dir, engine):
    from composition.experts import load_expert
    from composition.training import demo_recipe, demo_training_pairs, ensure_adapter

    adapter_dir, _ = ensure_adapter(model_cache() / "demo-experts", base_dir, demo_recipe(SKILL), demo_training_pairs(SKILL))
    engine.register_expert(load_expert(SKILL, adapter_dir))
    skill = SKILLS[SKILL]
    items = skill.heldout_items(SAMPLE)

    expert_right = sum(map(is_correct, items, replies(engine, {SKILL: 1.0}, items, skill.max_tokens)))
    base_right = sum(map(is_correct, items, replies(engine, {}, items, skill.max_tokens)))

    assert expert_right >= 0.8 * SAMPLE
    assert base_right <= 0.2 * SAMPLE
