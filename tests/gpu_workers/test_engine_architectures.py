"""MosaicEngine serves any decoder that transformers and peft support, not only Llama: the projections it adapts
come from the model's own linear layers (or a configured list), and embeddings from the model's decoder."""
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM

from composition.engine import GenerationRequest, ReferenceEngine
from composition.experts import load_expert
from composition.world import build_char_tokenizer
from gpu_workers.adapter_pool import AdapterError
from gpu_workers.engine import MosaicEngine, adaptable_linears
from tests.helpers import make_peft_adapter


def build_small(directory: Path, architecture: str) -> Path:
    tokenizer = build_char_tokenizer(directory)
    common = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    if architecture == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = Phi3ForCausalLM(Phi3Config(**common))
    model.eval().save_pretrained(str(directory), safe_serialization=True)
    return directory


# Qwen2 has biased q/k/v projections; Phi-3 fuses them into qkv_proj and gate/up into gate_up_proj.
TARGETS = {
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def world(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    base = build_small(root / "base", request.param)
    adapters = {
        "first": make_peft_adapter(base, root / "first", target_modules=TARGETS[request.param], r=4, seed=1),
        "second": make_peft_adapter(base, root / "second", target_modules=TARGETS[request.param][:2], r=8, seed=2),
    }
    experts = [load_expert(expert_id, path) for expert_id, path in adapters.items()]
    return request.param, base, experts


BATCH = [
    GenerationRequest(prompt="hello there", mixture={"first": 1.0}, max_tokens=8),
    GenerationRequest(prompt="abc", mixture={}, max_tokens=6),
    GenerationRequest(prompt="a longer prompt", mixture={"second": 1.0}, max_tokens=8),
    GenerationRequest(prompt="xyz", mixture={"first": 0.5, "second": 0.5}, max_tokens=5),
]


def test_the_engine_matches_peft_on_another_architecture(world):
    _, base, experts = world
    engine = MosaicEngine(base, lora_backend="torch")
    reference = ReferenceEngine(str(base), experts)
    for expert in experts:
        engine.register_expert(expert)

    ours, theirs = engine.generate(BATCH), reference.generate(BATCH)

    assert [g.text for g in ours] == [g.text for g in theirs]
    for mine, oracle in zip(ours, theirs):
        assert mine.token_logprobs == pytest.approx(oracle.token_logprobs, abs=1e-4)
    base_alone = engine.generate([GenerationRequest(prompt="hello there", max_tokens=8)])[0]
    assert ours[0].token_logprobs != pytest.approx(base_alone.token_logprobs, abs=1e-3)  # the adapter counts
    assert torch.allclose(engine.embed(["hello", "abc def"]), reference.embed(["hello", "abc def"]), atol=1e-4)


def test_adaptable_projections_are_the_models_linear_layers_but_its_output_embeddings(world):
    architecture, base, _ = world
    model = AutoModelForCausalLM.from_pretrained(str(base))

    names = adaptable_linears(model)

    assert {name.rsplit(".", 1)[-1] for name in names} == set(TARGETS[architecture])
    assert "lm_head" not in names
    assert set(adaptable_linears(model, ["o_proj"])) == {f"model.layers.{i}.self_attn.o_proj" for i in range(2)}


def test_an_adapter_for_a_projection_outside_the_configured_list_is_refused(world):
    architecture, base, experts = world
    engine = MosaicEngine(base, lora_backend="torch", target_modules=["o_proj"])
    with pytest.raises(AdapterError, match="no adaptable layer"):
        engine.register_expert(experts[0])


def test_the_scheduler_joins_requests_mid_answer_on_another_architecture(world):
    """Continuous batching merges KV caches of this architecture too: each request, joining while another
    decodes, gets what the reference engine gives it alone."""
    from gpu_workers.batching import Scheduler

    _, base, experts = world
    engine = MosaicEngine(base, lora_backend="torch")
    reference = ReferenceEngine(str(base), experts)
    for expert in experts:
        engine.register_expert(expert)
    scheduler = Scheduler(engine)
    tickets = []

    def join_later(_index, text):  # each other request joins after the first one's next token
        if len(tickets) < len(BATCH):
            tickets.append(scheduler.submit([BATCH[len(tickets)]]))

    first = scheduler.submit([GenerationRequest(prompt="go", mixture={"second": 1.0}, max_tokens=12)], join_later)
    assert first.done.wait(60)
    for ticket in tickets:
        assert ticket.done.wait(60) and ticket.error is None
    assert [t.results[0].text for t in tickets] == [g.text for g in reference.generate(BATCH[:len(tickets)])]
    assert len(tickets) >= 2 and scheduler.stats.largest_batch >= 2
