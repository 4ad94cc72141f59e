"""Every composing method of the registry (Mosaic's first eleven and the field's methods MoCo has that Mosaic
lacked), on the toy world: each runs through ReferenceEngine, attributes non-negative weights summing to 1, is
deterministic under a seed and explains its configuration errors; the optimisers find known best weights."""
import pytest

from composition.engine import GenerationRequest, ScoreRequest
from composition.errors import CompositionError
from composition.strategies import build_strategy, strategy_level, validate_strategy_config
from composition.strategies.base import CompletionRequest, decode_step_by_step
from composition.strategies.collaboration import topological_graph
from composition.strategies.development import dev_score, dev_set_sha256

IDS = ["alpha", "beta", "gamma"]
DEV_PROMPTS = ["rev ab=", "rev cd="]
OPTIONS = {"metric": "exact_match", "max_tokens": 3, "stop": []}


def ask(prompt, **options):
    return CompletionRequest(prompt=prompt, max_tokens=options.pop("max_tokens", 4), **options)


def generate(engine, prompt, mixture, max_tokens=3):
    return engine.generate([GenerationRequest(prompt=prompt, mixture=mixture, max_tokens=max_tokens)])[0]


def stepwise(engine, prompt, mixture, max_tokens=4):
    """One model decoding token by token from the text so far, as token-level strategies do."""
    return decode_step_by_step(
        engine, GenerationRequest(prompt=prompt, max_tokens=max_tokens),
        lambda context, step: engine.next_token_logits([GenerationRequest(prompt=context, mixture=mixture)])[0],
    ).text


@pytest.fixture(scope="module")
def alpha_dev_set(engine):
    """A development set that alpha alone solves: its own greedy answers (checked: the others fail it)."""
    dev_set = [{"prompt": p, "answers": [generate(engine, p, {"alpha": 1.0}).text]} for p in DEV_PROMPTS]
    assert dev_score(engine, {"alpha": 1.0}, dev_set, OPTIONS) == 1.0
    assert dev_score(engine, {"beta": 1.0}, dev_set, OPTIONS) == 0.0
    assert dev_score(engine, {"gamma": 1.0}, dev_set, OPTIONS) == 0.0
    return dev_set


DEV = [{"prompt": "ab", "answers": ["x"]}, {"prompt": "cd", "answers": ["y"]}]

# one small configuration per method: what the toy-world runs below use
CONFIGS = {
    "graph_router": {"dev_set": DEV, "max_tokens": 3, "neighbours": 1},
    "mentor_collab": {"mentor": "beta", "decision_proportion": 1.0, "patch_tokens": 2},
    "nudging": {"nudger": "alpha", "gamma": 0.9},
    "co_llm": {"assistant": "gamma", "threshold": 0.9},
    "mixture_of_agents": {"layers": 2},
    "llm_blender": {"top_k": 2},
    "knowledge_cards": {"top_k": 2, "knowledge_tokens": 4},
    "multiagent_feedback": {"rounds": 1, "feedback_count": 1, "feedback_tokens": 3},
    "heterogeneous_swarm": {"edges": [["alpha", "beta"], ["gamma", "beta"]], "output": "beta"},
    "slm_mux": {"samples": 3},
    "structured": {"topology": "chain", "rounds": 1},
    "lorahub": {"dev_set": DEV, "max_tokens": 3, "budget": 6, "population": 3},
    "model_swarms": {"dev_set": DEV, "max_tokens": 3, "iterations": 1, "extra_particles": 1},
    "greedy_soup": {"dev_set": DEV, "max_tokens": 3},
    "expo": {"strong": "alpha", "weak": "beta", "alpha": 0.5},
}
NEW_METHODS = sorted(CONFIGS)
# Mosaic's methods from before: one small configuration each, for the same checks
CONFIGS_BEFORE = {
    "single": {"expert": "beta"},
    "embedding_router": {"top_k": 2},
    "trained_router": {"mode": "mixture", "epochs": 20},
    "cascade": {"threshold": -0.5, "fallback": "most_confident"},
    "switch": {"segment": "tokens", "segment_tokens": 2},
    "debate": {"rounds": 1},
    "aggregate": {"method": "judge"},
    "logit_mixture": {"source": "router"},
    "contrastive": {"expert": "alpha", "amateur": "beta"},
    "merge": {"method": "ties", "density": 0.5},
    "merge_search": {"dev_set": DEV, "max_tokens": 3, "samples": 2, "method": "linear"},
}
EVERY_METHOD = sorted(CONFIGS | CONFIGS_BEFORE)


def assert_attribution(attribution):
    assert set(attribution) == set(IDS)
    assert all(weight >= 0 for weight in attribution.values())
    assert sum(attribution.values()) == pytest.approx(1.0)


def test_these_checks_cover_every_composing_method_of_the_registry():
    from composition.strategies import STRATEGIES

    assert set(EVERY_METHOD) == set(STRATEGIES) - {"base"}  # the base model alone takes no experts to attribute


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_each_method_answers_on_the_toy_world_with_an_attribution_summing_to_one(engine, experts, name):
    result = build_strategy(name, (CONFIGS | CONFIGS_BEFORE)[name], experts).run(ask("rev hgfe=", temperature=0.8, seed=3), engine)
    assert len(result.texts) == 1 and result.finish_reasons[0] in ("stop", "length")
    assert_attribution(result.attribution)
    assert result.prompt_tokens == len(engine.tokenizer("rev hgfe=")["input_ids"])
    assert 0 < result.completion_tokens <= 4  # billed: the returned answer's tokens only


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_each_method_is_deterministic_under_a_seed(engine, experts, name):
    request = ask("seeded", temperature=1.0, seed=11, max_tokens=3)
    first = build_strategy(name, (CONFIGS | CONFIGS_BEFORE)[name], experts).run(request, engine)
    second = build_strategy(name, (CONFIGS | CONFIGS_BEFORE)[name], experts).run(request, engine)
    assert first.texts == second.texts
    assert first.attribution == pytest.approx(second.attribution)


def test_the_new_methods_cover_every_level():
    assert {strategy_level(name) for name in NEW_METHODS} == {"api", "text", "weight"}


CONFIGURATION_ERRORS = [
    ("single", {}, "'expert' is required when the system has several experts"),
    ("embedding_router", {"top_k": 4}, "'top_k' must be <= 3"),
    ("trained_router", {"examples": [{"text": "x", "expert": "delta"}]}, "names unknown expert 'delta'"),
    ("cascade", {"threshold": 0.5}, "'threshold' must be <= 0"),
    ("switch", {"segment": "paragraph"}, "'segment' must be one of line, sentence, tokens"),
    ("debate", {"rounds": 6}, "'rounds' must be <= 5"),
    ("aggregate", {"method": "vote", "judge": "alpha"}, "'judge' is only used with method 'judge'"),
    ("logit_mixture", {"source": "router", "weights": {"alpha": 1.0}}, "'weights' is only used with source 'fixed'"),
    ("contrastive", {"expert": "alpha", "amateur": "alpha"}, "'amateur' must differ from 'expert'"),
    ("merge", {"method": "linear", "scale": 2}, "'scale' is not used by the linear method"),
    ("merge_search", {}, "'dev_set' must be a non-empty list"),
    ("graph_router", {}, "'dev_set' must be a non-empty list"),
    ("graph_router", {"dev_set": [{"prompt": "p"}]}, r"dev_set\[0\] must be an object with a prompt"),
    ("mentor_collab", {}, "'mentor' is required when the system has several experts"),
    ("mentor_collab", {"mentor": "alpha", "generator": "alpha"}, "'mentor' must differ from 'generator'"),
    ("mentor_collab", {"mentor": "delta"}, "names unknown expert 'delta'"),
    ("nudging", {"nudger": "alpha", "gamma": 2}, "'gamma' must be <= 1"),
    ("co_llm", {"assistant": "alpha", "gate": "learned"}, "'dev_set' must be a non-empty list"),
    ("co_llm", {"assistant": "alpha", "dev_set": DEV}, "gate 'confidence' takes none"),
    ("mixture_of_agents", {"layers": 9}, "'layers' must be <= 4"),
    ("mixture_of_agents", {"aggregate_template": "{prompt} {nope}"}, "may only use the fields"),
    ("llm_blender", {"top_k": 4}, "'top_k' must be <= 3"),
    ("llm_blender", {"ranker": "delta"}, "names unknown expert 'delta'"),
    ("knowledge_cards", {"cards": []}, "must name at least one expert"),
    ("multiagent_feedback", {"feedback_count": 3}, "'feedback_count' must be <= 2"),
    ("heterogeneous_swarm", {}, "'dev_set' must be a non-empty list"),
    ("heterogeneous_swarm", {"edges": [["alpha", "beta"], ["beta", "alpha"]], "output": "alpha"}, "contain a cycle"),
    ("heterogeneous_swarm", {"edges": [["alpha", "alpha"]], "output": "alpha"}, "pairs of two different experts"),
    ("heterogeneous_swarm", {"edges": [["alpha", "beta"]]}, "'output' is required with 'edges'"),
    ("slm_mux", {"samples": 0}, "'samples' must be >= 1"),
    ("structured", {"topology": "ring"}, "'topology' must be one of chain, star, complete, custom"),
    ("structured", {"topology": "custom"}, "'edges' must be a list of"),
    ("structured", {"edges": [["alpha", "beta"]]}, "only used with topology 'custom'"),
    ("lorahub", {"dev_set": DEV, "budget": 1}, "'budget' must be >= 2"),
    ("lorahub", {"dev_set": DEV, "utility": "vibes"}, "'utility' must be one of loss, metric"),
    ("model_swarms", {"dev_set": DEV, "inertia": -1}, "'inertia' must be >= 0"),
    ("greedy_soup", {}, "'dev_set' must be a non-empty list"),
    ("expo", {}, "without a 'dev_set', name 'strong'"),
    ("expo", {"strong": "alpha", "weak": "alpha"}, "'weak' must differ from 'strong'"),
    ("expo", {"weak": "alpha", "dev_set": DEV}, "'weak' needs 'strong'"),
    ("expo", {"strong": "alpha", "alpha_candidates": [0.1, -1], "dev_set": DEV}, "'alpha_candidates' must be"),
]


def test_every_composing_method_has_an_explained_configuration_error_below():
    assert {name for name, _, _ in CONFIGURATION_ERRORS} == set(EVERY_METHOD)


@pytest.mark.parametrize("name, config, message", CONFIGURATION_ERRORS)
def test_configuration_errors_are_explained(name, config, message):
    with pytest.raises(CompositionError, match=message):
        validate_strategy_config(name, config, IDS)


# --- API level ---------------------------------------------------------------------------------------------


def test_graph_router_sends_a_query_to_the_expert_that_solved_its_nearest_development_queries(
        engine, experts, alpha_dev_set):
    strategy = build_strategy("graph_router", {"dev_set": alpha_dev_set, "max_tokens": 3, "neighbours": 1}, experts)
    result = strategy.run(ask("rev ab="), engine)
    assert result.attribution["alpha"] == 1.0
    assert strategy.learned()["edges"]["alpha"] == [1.0, 1.0]
    assert strategy.learned()["dev_set_sha256"] == dev_set_sha256(alpha_dev_set)


def test_nudging_with_gamma_zero_is_the_base_model_alone(engine, experts):
    result = build_strategy("nudging", {"nudger": "alpha", "gamma": 0.0}, experts).run(ask("nudge"), engine)
    assert result.texts == [stepwise(engine, "nudge", {})]
    assert result.attribution["alpha"] == 1.0  # the only expert consulted


def test_nudging_with_gamma_one_is_the_nudger_alone(engine, experts):
    result = build_strategy("nudging", {"nudger": "beta", "base": "alpha", "gamma": 1.0}, experts).run(ask("nudge"), engine)
    assert result.texts == [stepwise(engine, "nudge", {"beta": 1.0})]
    assert result.attribution["beta"] == 1.0


def test_co_llm_with_a_threshold_gate_credits_the_tokens_each_model_wrote(engine, experts):
    always = build_strategy("co_llm", {"base": "alpha", "assistant": "gamma", "threshold": 1.0}, experts)
    assert always.run(ask("defer"), engine).texts == [stepwise(engine, "defer", {"gamma": 1.0})]
    never = build_strategy("co_llm", {"base": "alpha", "assistant": "gamma", "threshold": 0.0}, experts)
    result = never.run(ask("defer"), engine)
    assert result.texts == [stepwise(engine, "defer", {"alpha": 1.0})]
    assert result.attribution["alpha"] == 1.0


def test_co_llm_learns_its_gate_from_weak_labels_on_the_development_set(engine, experts, alpha_dev_set):
    config = {"base": "beta", "assistant": "alpha", "gate": "learned", "dev_set": alpha_dev_set, "epochs": 100}
    strategy = build_strategy("co_llm", config, experts)
    result = strategy.run(ask("rev ab="), engine)
    assert_attribution(result.attribution)
    assert strategy.fit_gate(engine) >= 0.5
    assert len(strategy.gate_labels) == sum(len(item["answers"][0]) for item in alpha_dev_set)  # one per character
    assert any(strategy.gate_labels)  # alpha, not beta, writes the reference tokens


def test_mentor_collab_never_consulting_the_mentor_is_the_generator_alone(engine, experts):
    config = {"generator": "alpha", "mentor": "beta", "decision_proportion": 0.0}
    result = build_strategy("mentor_collab", config, experts).run(ask("mentor"), engine)
    assert result.texts == [stepwise(engine, "mentor", {"alpha": 1.0})]
    assert result.attribution["alpha"] == 1.0


# --- text level --------------------------------------------------------------------------------------------


def test_mixture_of_agents_with_one_layer_aggregates_the_proposers_first_answers(engine, experts):
    config = {"layers": 1, "aggregator": "gamma", "aggregate_template": "{prompt}|{answers}:"}
    result = build_strategy("mixture_of_agents", config, experts).run(ask("moa", max_tokens=3), engine)
    first = [generate(engine, "moa", {e: 1.0}).text for e in IDS]
    final = generate(engine, "moa|" + "\n".join(f"- {t}" for t in first) + ":", {"gamma": 1.0})
    assert result.texts == [final.text]


def test_llm_blender_with_top_k_one_returns_the_candidate_that_wins_most_pairwise_comparisons(engine, experts):
    strategy = build_strategy("llm_blender", {"top_k": 1}, experts)
    result = strategy.run(ask("blend", max_tokens=3), engine)
    candidates = {e: generate(engine, "blend", {e: 1.0}) for e in IDS}
    template = strategy.config["rank_template"]

    def log_p(first, second, option):  # the base model reads the two candidates and names one
        question = template.format(prompt="blend", a=candidates[first].text, b=candidates[second].text)
        return sum(engine.score([ScoreRequest(question, option, {})])[0])

    wins = {e: 0 for e in IDS}
    for i, a in enumerate(IDS):
        for b in IDS[i + 1:]:
            margin = (log_p(a, b, "A") - log_p(a, b, "B")) + (log_p(b, a, "B") - log_p(b, a, "A"))
            wins[a if margin >= 0 else b] += 1
    winner = max(IDS, key=lambda e: (wins[e], candidates[e].mean_logprob))
    assert result.texts == [candidates[winner].text]
    assert result.attribution[winner] == 1.0


def test_knowledge_cards_credit_only_the_cards_the_relevance_selector_keeps(engine, experts):
    result = build_strategy("knowledge_cards", {"top_k": 1, "knowledge_tokens": 4}, experts).run(ask("card"), engine)
    assert sorted(result.attribution.values()) == [0.0, 0.0, 1.0]


def test_heterogeneous_swarm_credits_only_the_output_node_and_its_ancestors(engine, experts):
    config = {"edges": [["alpha", "beta"]], "output": "beta"}
    result = build_strategy("heterogeneous_swarm", config, experts).run(ask("swarm"), engine)
    assert result.attribution["gamma"] == 0.0
    assert result.attribution["alpha"] > 0 and result.attribution["beta"] > 0


def test_heterogeneous_swarm_learns_the_graph_that_scores_best_on_the_development_set(engine, experts, alpha_dev_set):
    config = {"dev_set": alpha_dev_set, "max_tokens": 3, "particles": 3, "iterations": 1}
    strategy = build_strategy("heterogeneous_swarm", config, experts)
    strategy.run(ask("rev ab="), engine)
    assert len(strategy.evaluations) == 6
    assert strategy.best_score == max(score for _, score in strategy.evaluations)
    assert strategy.learned()["output"] in IDS


def test_topological_decoding_orders_sources_first_and_keeps_forward_edges_only():
    import numpy as np

    matrix = np.array([[0.0, 0.9, 0.8], [0.1, 0.0, 0.7], [0.2, 0.3, 0.0]])
    order, edges = topological_graph(matrix)
    assert order == [0, 1, 2]
    assert edges == [(0, 1), (0, 2), (1, 2)]


def test_slm_mux_breaks_a_tie_in_confidence_by_the_development_score(engine, experts):
    gamma_dev_set = [{"prompt": p, "answers": [generate(engine, p, {"gamma": 1.0}).text]} for p in DEV_PROMPTS]
    config = {"samples": 1, "dev_set": gamma_dev_set, "max_tokens": 3}  # one sample each: every expert is sure
    result = build_strategy("slm_mux", config, experts).run(ask("mux", seed=5), engine)
    expected = engine.generate([GenerationRequest(prompt="mux", mixture={"gamma": 1.0}, max_tokens=4,
                                                  temperature=0.7, seed=5)])[0]
    assert result.texts == [expected.text]
    assert result.attribution["gamma"] == 1.0


def test_slm_mux_without_a_development_set_breaks_ties_by_the_systems_order(engine, experts):
    result = build_strategy("slm_mux", {"samples": 1}, experts).run(ask("mux", seed=5), engine)
    assert result.attribution["alpha"] == 1.0


def test_structured_chain_credits_only_the_agents_whose_answers_reached_the_final_one(engine, experts):
    result = build_strategy("structured", {"topology": "chain", "rounds": 1}, experts).run(ask("chain"), engine)
    assert result.attribution["alpha"] == 0.0  # one round: gamma read beta only
    assert result.attribution["beta"] > 0 and result.attribution["gamma"] > 0


# --- weight level: the optimisers find known best weights ---------------------------------------------------


def test_lorahub_moves_towards_the_expert_that_solves_the_development_set(engine, experts, alpha_dev_set):
    # On random toy experts the greedy answers' loss is nearly flat, so the metric is the utility here; within
    # this budget CMA-ES reaches half the set, from a uniform start that solves none of it.
    config = {"dev_set": alpha_dev_set, "max_tokens": 3, "budget": 24, "population": 6, "l1": 0.0, "seed": 0,
              "utility": "metric"}
    strategy = build_strategy("lorahub", config, experts)
    result = strategy.run(ask("rev ab=", max_tokens=3), engine)
    uniform = strategy.evaluations[0][0]
    assert uniform == pytest.approx({e: 1 / 3 for e in IDS})
    assert dev_score(engine, strategy.candidate(engine, uniform), alpha_dev_set, OPTIONS) == 0.0
    assert dev_score(engine, {strategy.combined.id: 1.0}, alpha_dev_set, OPTIONS) >= 0.5
    assert max(result.attribution, key=result.attribution.get) == "alpha"
    assert len(strategy.evaluations) == 24
    assert strategy.learned()["dev_set_sha256"] == dev_set_sha256(alpha_dev_set)


def test_model_swarms_keeps_the_particle_of_the_expert_that_solves_the_development_set(
        engine, experts, alpha_dev_set):
    config = {"dev_set": alpha_dev_set, "max_tokens": 3, "iterations": 2, "extra_particles": 1}
    strategy = build_strategy("model_swarms", config, experts)
    result = strategy.run(ask("rev ab=", max_tokens=3), engine)
    assert result.attribution == pytest.approx({"alpha": 1.0, "beta": 0.0, "gamma": 0.0})
    assert len(strategy.evaluations) == 4 + 2 * 4


def test_greedy_soup_keeps_only_the_expert_that_solves_the_development_set(engine, experts, alpha_dev_set):
    strategy = build_strategy("greedy_soup", {"dev_set": alpha_dev_set, "max_tokens": 3}, experts)
    result = strategy.run(ask("rev ab=", max_tokens=3), engine)
    assert result.attribution == pytest.approx({"alpha": 1.0, "beta": 0.0, "gamma": 0.0})
    assert result.texts == [generate(engine, "rev ab=", {"alpha": 1.0}).text]


def test_merge_search_finds_the_weights_of_the_expert_that_solves_the_development_set(engine, experts, alpha_dev_set):
    # A linear merge with all weight on alpha is alpha's own update; the grid holds that corner.
    config = {"dev_set": alpha_dev_set, "max_tokens": 3, "search": "grid", "grid_step": 0.5, "method": "linear",
              "rank": 4}
    strategy = build_strategy("merge_search", config, experts)
    result = strategy.run(ask("rev ab=", max_tokens=3), engine)
    assert result.attribution == pytest.approx({"alpha": 1.0, "beta": 0.0, "gamma": 0.0})
    assert dev_score(engine, {strategy.merged.id: 1.0}, alpha_dev_set, OPTIONS) == 1.0


def test_expo_extrapolates_from_the_worst_to_the_best_expert_on_the_development_set(engine, experts, alpha_dev_set):
    strategy = build_strategy("expo", {"dev_set": alpha_dev_set, "max_tokens": 3, "alpha": 0.5}, experts)
    result = strategy.run(ask("rev ab=", max_tokens=3), engine)
    strong, weak = strategy.pair
    assert strong == "alpha" and weak in ("beta", "gamma")
    assert strategy.coefficients[strong] == 1.5 and strategy.coefficients[weak] == -0.5
    assert result.attribution[strong] == pytest.approx(0.75) and result.attribution[weak] == pytest.approx(0.25)


class CallRecorder:
    """The engine, recording the size of each generate call."""

    def __init__(self, engine):
        self.engine, self.tokenizer, self.calls = engine, engine.tokenizer, []

    def generate(self, requests):
        self.calls.append(len(requests))
        return self.engine.generate(requests)

    def __getattr__(self, name):
        return getattr(self.engine, name)


@pytest.mark.parametrize("name, config, calls", [
    ("greedy_soup", {"dev_set": DEV, "max_tokens": 3}, [len(IDS) * len(DEV), len(DEV), len(DEV)]),
    ("graph_router", {"dev_set": DEV, "max_tokens": 3}, [len(IDS) * len(DEV)]),
    ("slm_mux", {"dev_set": DEV, "max_tokens": 3, "samples": 1}, [len(IDS) * len(DEV)]),
    ("heterogeneous_swarm", {"dev_set": DEV, "max_tokens": 3, "particles": 1, "iterations": 0}, None),
])
def test_learning_on_the_development_set_asks_the_engine_for_the_whole_set_at_once(engine, experts, name, config,
                                                                                     calls):
    recorder = CallRecorder(engine)
    build_strategy(name, config, experts).prepare(recorder)
    assert recorder.calls == (calls or [len(DEV)] * len(recorder.calls)) and recorder.calls
