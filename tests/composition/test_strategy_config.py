import pytest

from composition.errors import CompositionError
from composition.strategies import STRATEGIES, build_strategy, strategy_level, validate_strategy_config

IDS = ["alpha", "beta", "gamma"]
DEV_SET = [{"prompt": "p", "answers": ["a"]}]
# Every strategy that composes experts ("base" is the base model alone: it takes none, see test_base_strategy.py).
COMPOSING = sorted(set(STRATEGIES) - {"base"})


def minimal_config(name):
    learners = {name: {"dev_set": DEV_SET} for name in
                ("merge_search", "graph_router", "lorahub", "model_swarms", "greedy_soup", "heterogeneous_swarm", "expo")}
    return {**learners, "single": {"expert": "alpha"}, "contrastive": {"expert": "alpha"},
            "mentor_collab": {"mentor": "alpha"}, "nudging": {"nudger": "alpha"},
            "co_llm": {"assistant": "alpha"}}.get(name, {})


@pytest.mark.parametrize("name", COMPOSING)
def test_every_strategy_accepts_its_minimal_config_and_returns_it_normalised(name):
    normalised = validate_strategy_config(name, minimal_config(name), IDS)
    assert isinstance(normalised, dict)
    assert validate_strategy_config(name, normalised, IDS) == normalised  # idempotent


@pytest.mark.parametrize("name", COMPOSING)
def test_every_strategy_rejects_unknown_keys(name):
    with pytest.raises(CompositionError, match=r"unknown config keys \['colour'\]"):
        validate_strategy_config(name, {**minimal_config(name), "colour": "blue"}, IDS)


@pytest.mark.parametrize("name", COMPOSING)
def test_every_strategy_rejects_an_empty_expert_list(name):
    with pytest.raises(CompositionError, match="at least one expert"):
        validate_strategy_config(name, minimal_config(name), [])


def test_an_unknown_strategy_is_named_with_the_known_ones():
    with pytest.raises(CompositionError, match="unknown strategy 'soup'; known strategies: single, embedding_router"):
        validate_strategy_config("soup", {}, IDS)
    with pytest.raises(CompositionError, match="unknown strategy"):
        strategy_level("soup")


def test_a_config_must_be_an_object():
    with pytest.raises(CompositionError, match="config must be a JSON object"):
        validate_strategy_config("merge", ["linear"], IDS)


def test_weights_must_sum_to_one():
    with pytest.raises(CompositionError, match=r"merge: 'weights' must sum to 1 \(the weights sum to 1.1\)"):
        validate_strategy_config("merge", {"weights": {"alpha": 0.6, "beta": 0.5}}, IDS)


def test_weights_must_be_non_negative_numbers_for_known_experts():
    with pytest.raises(CompositionError, match="non-negative"):
        validate_strategy_config("logit_mixture", {"weights": {"alpha": 1.5, "beta": -0.5}}, IDS)
    with pytest.raises(CompositionError, match="must be a number"):
        validate_strategy_config("logit_mixture", {"weights": {"alpha": "1"}}, IDS)
    with pytest.raises(CompositionError, match=r"unknown experts \['delta'\]"):
        validate_strategy_config("logit_mixture", {"weights": {"delta": 1.0}}, IDS)


def test_wrong_types_are_named():
    with pytest.raises(CompositionError, match="'top_k' must be an integer, got '2'"):
        validate_strategy_config("embedding_router", {"top_k": "2"}, IDS)
    with pytest.raises(CompositionError, match="'threshold' must be a number"):
        validate_strategy_config("cascade", {"threshold": None}, IDS)
    with pytest.raises(CompositionError, match="'rounds' must be <= 5"):
        validate_strategy_config("debate", {"rounds": 9}, IDS)
    with pytest.raises(CompositionError, match="'method' must be one of linear, task_arithmetic, ties"):
        validate_strategy_config("merge", {"method": "average"}, IDS)


def test_expert_references_must_name_the_systems_experts():
    with pytest.raises(CompositionError, match="'summariser' names unknown expert 'delta'"):
        validate_strategy_config("debate", {"summariser": "delta"}, IDS)
    with pytest.raises(CompositionError, match="'order' names an expert twice"):
        validate_strategy_config("cascade", {"order": ["alpha", "alpha"]}, IDS)
    with pytest.raises(CompositionError, match="'experts' must name at least one expert"):
        validate_strategy_config("aggregate", {"experts": []}, IDS)
    with pytest.raises(CompositionError, match="examples\\[0\\] names unknown expert 'delta'"):
        validate_strategy_config("trained_router", {"examples": [{"text": "x", "expert": "delta"}]}, IDS)


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(CompositionError, match="'density' is only used by ties"):
        validate_strategy_config("merge", {"method": "linear", "density": 0.5}, IDS)
    with pytest.raises(CompositionError, match="'scale' is not used by the linear method"):
        validate_strategy_config("merge", {"method": "linear", "scale": 2}, IDS)
    with pytest.raises(CompositionError, match="'judge' is only used with method 'judge'"):
        validate_strategy_config("aggregate", {"judge": "alpha"}, IDS)
    with pytest.raises(CompositionError, match="'amateur' must differ from 'expert'"):
        validate_strategy_config("contrastive", {"expert": "alpha", "amateur": "alpha"}, IDS)


def test_templates_may_only_use_their_fields():
    with pytest.raises(CompositionError, match="'summary_template' may only use the fields"):
        validate_strategy_config("debate", {"summary_template": "{prompt} {secret}"}, IDS)


def test_merge_search_needs_a_dev_set_and_a_grid_step_that_divides_one():
    with pytest.raises(CompositionError, match="'dev_set' must be a non-empty list"):
        validate_strategy_config("merge_search", {}, IDS)
    with pytest.raises(CompositionError, match="'grid_step' must divide 1"):
        validate_strategy_config("merge_search", {"dev_set": DEV_SET, "search": "grid", "grid_step": 0.3}, IDS)


def test_defaults_are_filled_in():
    assert validate_strategy_config("merge", {}, ["a", "b"]) == {
        "weights": {"a": 0.5, "b": 0.5}, "method": "task_arithmetic", "density": None, "scale": None,
        "sign_method": "total", "rank": None, "seed": 0,
    }


def test_building_with_experts_on_different_base_models_fails(make_expert):
    one = make_expert("one", seed=1, base_model="llama-a")
    two = make_expert("two", seed=2, base_model="llama-b")
    with pytest.raises(CompositionError, match="different base models"):
        build_strategy("logit_mixture", {}, [one, two])


def test_merging_experts_with_different_target_modules_fails(make_expert):
    one = make_expert("one", seed=1, targets=("q_proj", "v_proj"))
    two = make_expert("two", seed=2, targets=("q_proj", "k_proj"))
    with pytest.raises(CompositionError, match="adapt different target modules"):
        build_strategy("merge", {}, [one, two])
    build_strategy("logit_mixture", {}, [one, two])  # mixing outputs does not need matching modules


def test_merging_experts_with_different_ranks_works_on_their_weight_updates(make_expert):
    one = make_expert("one", seed=1, rank=2)
    two = make_expert("two", seed=2, rank=6)
    strategy = build_strategy("merge", {"method": "linear"}, [one, two])
    assert strategy.merged.adapter.ranks <= {8}


def test_every_strategy_has_a_spec_and_its_runtime_subclasses_it():
    from composition.strategy_specs import SPECS

    assert set(SPECS) == set(STRATEGIES)
    for name, runtime in STRATEGIES.items():
        assert issubclass(runtime, SPECS[name]) and runtime.level == SPECS[name].level


def test_the_specs_merge_options_are_the_merge_methods_own():
    from composition.merging import MERGE_METHODS
    from composition.strategy_specs import MERGE_METHOD_OPTIONS

    assert {name: (m.uses_density, m.uses_scale) for name, m in MERGE_METHODS.items()} == {
        name: (o.uses_density, o.uses_scale) for name, o in MERGE_METHOD_OPTIONS.items()}
