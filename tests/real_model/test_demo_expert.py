"""A demo expert on the real base model: trained here (or found in the recipe cache), it answers its skill's
held-out items right where the base model does not. Served through Mosaic's engine, greedy, with the base
model's own chat template.

The converted base model and the trained adapter stay in MOSAIC_MODEL_CACHE (default ~/.cache/mosaic/models),
so a second run trains nothing."""
import pytest

from composition.skills import SKILLS, is_correct
from tests.real_model.conftest import model_cache

pytestmark = pytest.mark.real_model

SKILL = "sentiment"  # the cheapest demo expert to train
SAMPLE = 10


@pytest.fixture(scope="module")
def engine(real_model_dir):
    from gpu_workers.engine import MosaicEngine

    return MosaicEngine(real_model_dir)


def replies(engine, mixture, items, max_tokens):
    from composition.engine import GenerationRequest
    from composition.training import chat_prompt

    requests = [GenerationRequest(prompt=chat_prompt(engine.tokenizer, item.prompt), mixture=mixture,
                                  max_tokens=max_tokens) for item in items]
    return [generation.text for generation in engine.generate(requests)]


def test_a_demo_expert_answers_its_heldout_items_where_the_base_model_does_not(real_model_dir, engine):
    from composition.experts import load_expert
    from composition.training import demo_recipe, demo_training_pairs, ensure_adapter

    adapter_dir, _ = ensure_adapter(model_cache() / "demo-experts", real_model_dir, demo_recipe(SKILL),
                                    demo_training_pairs(SKILL))
    engine.register_expert(load_expert(SKILL, adapter_dir))
    skill = SKILLS[SKILL]
    items = skill.heldout_items(SAMPLE)

    expert_right = sum(map(is_correct, items, replies(engine, {SKILL: 1.0}, items, skill.max_tokens)))
    base_right = sum(map(is_correct, items, replies(engine, {}, items, skill.max_tokens)))

    assert expert_right >= 0.8 * SAMPLE
    assert base_right <= 0.2 * SAMPLE
