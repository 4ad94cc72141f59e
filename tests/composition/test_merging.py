import pytest
import torch

from composition.errors import CompositionError
from composition.experts import LoraAdapter, LoraModule
from composition.merging import (
    MERGE_METHODS,
    disjoint_mean,
    drop_and_rescale,
    factorise,
    majority_sign_mask,
    merge_adapters,
    merge_deltas,
    trim_by_magnitude,
)


def adapter(seed, *, rank=2, shape=(6, 5), names=("m.q_proj", "m.v_proj")):
    generator = torch.Generator().manual_seed(seed)
    return LoraAdapter(modules={
        name: LoraModule(A=torch.randn(rank, shape[1], generator=generator),
                         B=torch.randn(shape[0], rank, generator=generator), scaling=0.5)
        for name in names
    })


@pytest.fixture
def adapters():
    return {"a": adapter(1), "b": adapter(2, rank=3), "c": adapter(3)}


WEIGHTS = {"a": 0.5, "b": 0.3, "c": 0.2}


def test_linear_merge_is_the_weighted_sum_of_the_weight_updates(adapters):
    merged = merge_deltas(adapters, WEIGHTS, method="linear")
    for name in ("m.q_proj", "m.v_proj"):
        expected = sum(WEIGHTS[k] * adapters[k].modules[name].scaling * adapters[k].modules[name].B
                       @ adapters[k].modules[name].A for k in adapters)
        assert torch.allclose(merged[name], expected, atol=1e-6)


def test_merging_weight_updates_differs_from_averaging_a_and_b(adapters):
    same_rank = {"a": adapters["a"], "c": adapters["c"]}
    merged = merge_deltas(same_rank, {"a": 0.5, "c": 0.5}, method="linear")["m.q_proj"]
    a, c = same_rank["a"].modules["m.q_proj"], same_rank["c"].modules["m.q_proj"]
    averaged_factors = 0.5 * ((a.B + c.B) / 2) @ ((a.A + c.A) / 2)
    assert not torch.allclose(merged, averaged_factors, atol=1e-3)


def test_task_arithmetic_scales_the_weighted_sum_and_defaults_to_the_number_of_experts(adapters):
    linear = merge_deltas(adapters, WEIGHTS, method="linear")["m.q_proj"]
    assert torch.allclose(merge_deltas(adapters, WEIGHTS, method="task_arithmetic", scale=0.7)["m.q_proj"],
                          0.7 * linear, atol=1e-6)
    assert torch.allclose(merge_deltas(adapters, WEIGHTS, method="task_arithmetic")["m.q_proj"], 3 * linear, atol=1e-5)


def test_ties_trims_elects_signs_and_averages_the_agreeing_values():
    first = torch.tensor([[4.0, -1.0, 0.5, 2.0]])
    second = torch.tensor([[-3.0, 2.0, 1.0, -0.1]])
    third = torch.tensor([[1.0, 3.0, -2.0, 0.2]])
    trimmed = [trim_by_magnitude(t, 0.5) for t in (first, second, third)]
    assert torch.equal(trimmed[0], torch.tensor([[4.0, 0.0, 0.0, 2.0]]))
    assert torch.equal(trimmed[1], torch.tensor([[-3.0, 2.0, 0.0, 0.0]]))
    assert torch.equal(trimmed[2], torch.tensor([[0.0, 3.0, -2.0, 0.0]]))
    stacked = torch.stack(trimmed)
    # elected signs (total): col0 4-3=+1 -> +, col1 5 -> +, col2 -2 -> -, col3 2 -> +
    mask = majority_sign_mask(stacked)
    assert torch.equal(disjoint_mean(stacked, mask), torch.tensor([[4.0, 2.5, -2.0, 2.0]]))

    adapters = {}
    for key, tensor in zip("xyz", (first, second, third)):
        # ΔW = scaling · B @ A with B = [[1]] and A the row, scaling 1
        adapters[key] = LoraAdapter(modules={"m.q_proj": LoraModule(A=tensor, B=torch.ones(1, 1), scaling=1.0)})
    equal = {"x": 1 / 3, "y": 1 / 3, "z": 1 / 3}
    merged = merge_deltas(adapters, equal, method="ties", density=0.5)["m.q_proj"]
    assert torch.allclose(merged, torch.tensor([[4.0, 2.5, -2.0, 2.0]]), atol=1e-6)  # λ = 3 undoes w = 1/3


def test_ties_elects_by_sign_count_when_asked():
    stacked = torch.tensor([[[5.0]], [[-1.0]], [[-1.0]]])
    assert torch.equal(majority_sign_mask(stacked, "total").flatten(), torch.tensor([True, False, False]))
    assert torch.equal(majority_sign_mask(stacked, "frequency").flatten(), torch.tensor([False, True, True]))


def test_dare_drops_with_a_seeded_mask_and_rescales_what_it_keeps(adapters):
    density = 0.4
    merged = merge_deltas(adapters, WEIGHTS, method="dare_linear", density=density, scale=1.0, seed=5)
    generator = torch.Generator().manual_seed(5)
    expected = {}
    for name in sorted(adapters["a"].modules):
        total = 0
        for key in adapters:  # experts in order, modules in sorted order, one generator
            delta = adapters[key].modules[name].delta()
            keep = torch.rand(delta.shape, generator=generator) < density
            total = total + WEIGHTS[key] * delta * keep / density
        expected[name] = total
    for name in expected:
        assert torch.allclose(merged[name], expected[name], atol=1e-6)
    again = merge_deltas(adapters, WEIGHTS, method="dare_linear", density=density, scale=1.0, seed=5)
    other = merge_deltas(adapters, WEIGHTS, method="dare_linear", density=density, scale=1.0, seed=6)
    assert torch.equal(again["m.q_proj"], merged["m.q_proj"])
    assert not torch.equal(other["m.q_proj"], merged["m.q_proj"])


def test_dare_keeps_the_expected_fraction_and_the_expected_value():
    delta = torch.ones(200, 200)
    dropped = drop_and_rescale(delta, 0.3, torch.Generator().manual_seed(0))
    assert (dropped != 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.05)


def test_dare_ties_combines_drop_and_rescale_with_sign_election(adapters):
    merged = merge_deltas(adapters, WEIGHTS, method="dare_ties", density=0.5, scale=1.0, seed=2)
    generator = torch.Generator().manual_seed(2)
    name = "m.q_proj"  # sorted first
    stacked = torch.stack([WEIGHTS[k] * drop_and_rescale(adapters[k].modules[name].delta(), 0.5, generator)
                           for k in adapters])
    assert torch.allclose(merged[name], disjoint_mean(stacked, majority_sign_mask(stacked)), atol=1e-6)


def test_factorising_back_is_exact_at_full_rank_and_truncates_below_it(adapters):
    delta = merge_deltas(adapters, WEIGHTS, method="linear")["m.q_proj"]
    exact = factorise(delta, rank=7)  # rank(Σ) <= 2 + 3 + 2
    assert torch.allclose(exact.delta(), delta, atol=1e-5)
    truncated = factorise(delta, rank=1)
    assert truncated.rank == 1
    singular = torch.linalg.svdvals(delta)
    assert torch.linalg.matrix_norm(delta - truncated.delta()).item() == pytest.approx(
        singular[1:].pow(2).sum().sqrt().item(), rel=1e-4)


def test_merge_adapters_defaults_to_the_sum_of_ranks(adapters):
    merged = merge_adapters(adapters, WEIGHTS, method="task_arithmetic", scale=1.0)
    assert merged.ranks == {5}  # min(2+3+2, 5 input features)
    linear = merge_deltas(adapters, WEIGHTS, method="linear")
    assert torch.allclose(merged.modules["m.v_proj"].delta(), linear["m.v_proj"], atol=1e-5)


def test_adapters_on_different_modules_cannot_be_merged():
    one, other = adapter(1), adapter(2, names=("m.q_proj", "m.k_proj"))
    with pytest.raises(CompositionError, match="adapt different target modules"):
        merge_deltas({"one": one, "other": other}, {"one": 0.5, "other": 0.5}, method="linear")


def test_adapters_with_different_module_shapes_cannot_be_merged():
    one, other = adapter(1), adapter(2, shape=(6, 4))
    with pytest.raises(CompositionError, match="has shape"):
        merge_deltas({"one": one, "other": other}, {"one": 0.5, "other": 0.5}, method="linear")


def test_an_unknown_merge_method_is_named(adapters):
    with pytest.raises(CompositionError, match="unknown merge method 'average'"):
        merge_deltas(adapters, WEIGHTS, method="average")
    assert set(MERGE_METHODS) == {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"}


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_a_linear_merge_factorised_from_the_experts_factors_equals_the_dense_truncated_svd(adapters, rank):
    weights = {"a": 0.9, "b": -0.4, "c": 0.0}  # any real coefficients, as the weight-level learners use
    merged = merge_adapters(adapters, weights, method="task_arithmetic", scale=2.0, rank=rank)
    deltas = merge_deltas(adapters, weights, method="task_arithmetic", scale=2.0)
    for name, module in merged.modules.items():
        dense = factorise(deltas[name], rank)
        assert module.rank == dense.rank
        assert torch.allclose(module.delta(), dense.delta(), atol=1e-5)
