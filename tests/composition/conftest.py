import pytest
import torch

from composition.engine import ReferenceEngine
from composition.experts import Expert, LoraAdapter, LoraModule
from composition.world import build_base_model

TARGETS = ("q_proj", "v_proj", "o_proj", "up_proj")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """An untrained 2-layer, 64-wide Llama with the character tokenizer (seeded)."""
    return str(build_base_model(tmp_path_factory.mktemp("tiny_base"), layers=2, hidden=64, seed=0))


@pytest.fixture(scope="session")
def module_shapes(tiny_base):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    return {name: (module.out_features, module.in_features) for name, module in model.named_modules()
            if name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}


def random_adapter(module_shapes, *, seed, rank=4, targets=TARGETS, scale=0.4, base_model="tiny"):
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for name, (out_features, in_features) in sorted(module_shapes.items()):
        if name.rsplit(".", 1)[-1] in targets:
            modules[name] = LoraModule(
                A=torch.randn(rank, in_features, generator=generator) * scale,
                B=torch.randn(out_features, rank, generator=generator) * scale,
                scaling=2.0,
            )
    return LoraAdapter(modules=modules, base_model=base_model)


@pytest.fixture(scope="session")
def make_expert(module_shapes):
    def make(expert_id, *, seed, description="", examples=(), priorities=(), rank=4, targets=TARGETS,
             base_model="tiny"):
        adapter = random_adapter(module_shapes, seed=seed, rank=rank, targets=targets, base_model=base_model)
        metadata = {"description": description, "examples": list(examples), "priorities": list(priorities),
                    "base_model": base_model}
        return Expert(id=expert_id, adapter=adapter, metadata=metadata)

    return make


@pytest.fixture(scope="session")
def experts(make_expert):
    """Three random-but-nonzero experts with distinct descriptions and examples."""
    return [
        make_expert("alpha", seed=1, description="reverse letters", examples=["rev abcd=", "rev hgfe="]),
        make_expert("beta", seed=2, description="upper case", examples=["UPPER CASE PLEASE", "MAKE IT BIG"]),
        make_expert("gamma", seed=3, description="digits", examples=["1234567890", "0987 6543"]),
    ]


@pytest.fixture(scope="session")
def engine(tiny_base, experts):
    return ReferenceEngine(tiny_base, experts)
