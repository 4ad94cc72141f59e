"""The adapter pool: experts stacked in slots per module, loaded from safetensors against their sha256,
evicted least recently used under a byte budget, reloaded on demand."""
import json
import shutil

import pytest
import torch

from composition.experts import load_expert
from gpu_workers.adapter_pool import (
    AdapterError,
    AdapterPool,
    PoolFull,
    adapter_content_sha256,
    adapter_digests,
)
from tests.gpu_workers.conftest import weights_sha256
from tests.helpers import build_tiny_base, make_peft_adapter

SHAPES = {
    "model.layers.0.self_attn.q_proj": (64, 64),
    "model.layers.0.self_attn.k_proj": (64, 64),
    "model.layers.0.self_attn.v_proj": (64, 64),
    "model.layers.0.self_attn.o_proj": (64, 64),
    "model.layers.0.mlp.gate_proj": (64, 128),
    "model.layers.0.mlp.up_proj": (64, 128),
    "model.layers.0.mlp.down_proj": (128, 64),
    "model.layers.1.self_attn.q_proj": (64, 64),
    "model.layers.1.self_attn.k_proj": (64, 64),
    "model.layers.1.self_attn.v_proj": (64, 64),
    "model.layers.1.self_attn.o_proj": (64, 64),
    "model.layers.1.mlp.gate_proj": (64, 128),
    "model.layers.1.mlp.up_proj": (64, 128),
    "model.layers.1.mlp.down_proj": (128, 64),
}


def pool_for(*, experts: int, rank: int, **options) -> AdapterPool:
    """A pool whose budget holds exactly `experts` experts at `rank`."""
    probe = AdapterPool(SHAPES, initial_rank=rank)
    return AdapterPool(SHAPES, budget_bytes=experts * probe.slot_bytes(rank), initial_rank=rank, **options)


def register_all(pool, adapters):
    for adapter in adapters.values():
        pool.register_path(adapter.id, str(adapter.path), adapter.sha256)


def test_an_expert_is_loaded_into_one_slot_of_every_module_it_adapts(gpu_world):
    _, adapters = gpu_world
    pool = pool_for(experts=3, rank=16)
    register_all(pool, adapters)

    slot = pool.acquire(["alpha"])["alpha"]

    expert = load_expert("alpha", adapters["alpha"].path)
    for name, module in expert.adapter.modules.items():
        assert torch.equal(pool.a[name][slot, :4], module.A)
        assert torch.equal(pool.b[name][slot, :, :4], module.B)
        assert pool.a[name][slot, 4:].abs().sum() == 0
        assert pool.ranks[name][slot] == 4
        assert pool.scalings[name][slot] == pytest.approx(module.scaling)
    untouched = "model.layers.0.self_attn.k_proj"  # alpha adapts q, v and down only
    assert pool.ranks[untouched][slot] == 0 and pool.a[untouched][slot].abs().sum() == 0


def test_least_recently_used_expert_is_evicted_under_the_budget_and_reloaded_on_demand(gpu_world):
    _, adapters = gpu_world
    pool = pool_for(experts=2, rank=16)
    register_all(pool, adapters)
    pool.acquire(["alpha"])
    pool.acquire(["beta"])
    pool.acquire(["alpha"])  # beta is now the least recently used

    pool.acquire(["gamma"])

    assert sorted(pool.resident) == ["alpha", "gamma"]
    assert (pool.stats.hits, pool.stats.misses, pool.stats.evictions) == (1, 3, 1)
    slot = pool.acquire(["beta"])["beta"]
    assert pool.resident == ["gamma", "beta"]
    beta = load_expert("beta", adapters["beta"].path)
    name = "model.layers.1.mlp.up_proj"
    assert torch.equal(pool.b[name][slot, :, :8], beta.adapter.modules[name].B)
    assert pool.stats.evictions == 2 and pool.stats.loads == 4


def test_a_batch_needing_more_experts_than_fit_is_refused(gpu_world):
    _, adapters = gpu_world
    pool = pool_for(experts=2, rank=16)
    register_all(pool, adapters)
    with pytest.raises(PoolFull, match="3 experts are needed together"):
        pool.acquire(["alpha", "beta", "gamma"])


def test_a_larger_rank_regrows_the_stacks_and_keeps_resident_experts(gpu_world):
    _, adapters = gpu_world
    pool = AdapterPool(SHAPES, initial_rank=4)
    register_all(pool, adapters)
    pool.acquire(["alpha"])  # rank 4

    slots = pool.acquire(["gamma"])  # rank 16

    assert pool.r_max == 16
    alpha = load_expert("alpha", adapters["alpha"].path)
    name = "model.layers.0.self_attn.q_proj"
    assert torch.equal(pool.a[name][pool.acquire(["alpha"])["alpha"], :4], alpha.adapter.modules[name].A)
    assert pool.ranks[name][slots["gamma"]] == 16
    assert pool.stats.loads == 2


def test_stacks_regrown_inside_an_engine_call_still_take_experts_loaded_outside_one(gpu_world):
    _, adapters = gpu_world
    pool = AdapterPool(SHAPES, initial_rank=4)
    register_all(pool, adapters)
    with torch.inference_mode():  # as MosaicEngine.generate runs
        pool.acquire(["gamma"])  # rank 16: the stacks are rebuilt here

    slots = pool.acquire(["alpha"])  # a strategy preparing outside inference mode (a merge, say)

    name = "model.layers.0.self_attn.q_proj"
    alpha = load_expert("alpha", adapters["alpha"].path)
    assert torch.equal(pool.a[name][slots["alpha"], :4], alpha.adapter.modules[name].A)


def test_content_that_does_not_match_its_sha256_is_refused(gpu_world, tmp_path):
    _, adapters = gpu_world
    pool = pool_for(experts=2, rank=16)
    pool.register_path("alpha", str(adapters["alpha"].path), "0" * 64)
    with pytest.raises(AdapterError, match="does not match its sha256"):
        pool.acquire(["alpha"])


def test_the_canonical_content_hash_is_the_one_the_marketplace_records(gpu_world):
    from marketplace.uploads import content_sha256

    _, adapters = gpu_world
    assert adapter_content_sha256(adapters["beta"].path) == content_sha256(adapters["beta"].path)


def test_the_hash_of_the_weights_file_alone_is_accepted_too(gpu_world):
    _, adapters = gpu_world
    pool = pool_for(experts=2, rank=16)
    pool.register_path("beta", str(adapters["beta"].path), weights_sha256(adapters["beta"].path))
    pool.acquire(["beta"])
    assert pool.is_resident("beta")
    assert adapter_digests(adapters["beta"].path) == {adapters["beta"].sha256, weights_sha256(adapters["beta"].path)}


def test_a_pickled_adapter_is_never_loaded(gpu_world, tmp_path):
    _, adapters = gpu_world
    directory = tmp_path / "pickled"
    directory.mkdir()
    shutil.copy(adapters["alpha"].path / "adapter_config.json", directory)
    torch.save({"x": torch.zeros(1)}, directory / "adapter_model.bin")
    pool = pool_for(experts=2, rank=16)
    pool.register_path("pickled", str(directory), "0" * 64)
    with pytest.raises(AdapterError, match="adapter_model.safetensors"):
        pool.acquire(["pickled"])


def test_an_adapter_for_another_base_shape_is_refused(tmp_path):
    wide_base = build_tiny_base(tmp_path / "wide", hidden=96, layers=2)
    path = make_peft_adapter(wide_base, tmp_path / "wide_adapter", target_modules=["q_proj"], r=2, seed=3)
    pool = pool_for(experts=2, rank=16)
    sha = sorted(adapter_digests(path))[0]
    pool.register_path("wide", str(path), sha)
    with pytest.raises(AdapterError, match="the base layer is 64 -> 64"):
        pool.acquire(["wide"])


def test_an_unknown_expert_is_refused():
    pool = pool_for(experts=1, rank=4)
    with pytest.raises(AdapterError, match="unknown expert"):
        pool.acquire(["ghost"])


def test_a_budget_too_small_for_one_expert_is_refused():
    with pytest.raises(AdapterError, match="cannot hold one expert"):
        AdapterPool(SHAPES, budget_bytes=1000, initial_rank=8)


def test_a_config_that_is_not_lora_is_refused(gpu_world, tmp_path):
    _, adapters = gpu_world
    directory = tmp_path / "ia3"
    shutil.copytree(adapters["alpha"].path, directory)
    config = json.loads((directory / "adapter_config.json").read_text())
    config["peft_type"] = "IA3"
    (directory / "adapter_config.json").write_text(json.dumps(config))
    pool = pool_for(experts=1, rank=16)
    pool.register_path("ia3", str(directory), sorted(adapter_digests(directory))[0])
    with pytest.raises(AdapterError, match="LoRA"):
        pool.acquire(["ia3"])
