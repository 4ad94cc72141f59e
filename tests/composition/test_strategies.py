import pytest
import torch

from composition.engine import GenerationRequest, ScoreRequest
from composition.experts import Expert
from composition.merging import merge_deltas
from composition.strategies import STRATEGIES, build_strategy, strategy_level
from composition.strategies.base import CompletionRequest
from composition.strategies.logits import contrastive_scores

IDS = ["alpha", "beta", "gamma"]


def ask(prompt, **options):
    return CompletionRequest(prompt=prompt, max_tokens=options.pop("max_tokens", 8), **options)


def generate(engine, prompt, mixture, max_tokens=8, **options):
    return engine.generate([GenerationRequest(prompt=prompt, mixture=mixture, max_tokens=max_tokens, **options)])[0]


def assert_attribution(attribution, ids=IDS):
    assert set(attribution) == set(ids)
    assert all(weight >= 0 for weight in attribution.values())
    assert sum(attribution.values()) == pytest.approx(1.0)


def test_every_strategy_has_a_level_and_the_four_levels_are_covered():
    assert {strategy_level(name) for name in STRATEGIES} == {"api", "text", "logit", "weight"}


def test_single_answers_with_its_expert_alone(engine, experts):
    result = build_strategy("single", {"expert": "beta"}, experts).run(ask("hello"), engine)
    assert result.texts == [generate(engine, "hello", {"beta": 1.0}).text]
    assert result.attribution == {"alpha": 0.0, "beta": 1.0, "gamma": 0.0}
    assert result.prompt_tokens == 6 and result.completion_tokens > 0


def test_n_choices_use_consecutive_seeds(engine, experts):
    strategy = build_strategy("single", {"expert": "alpha"}, experts)
    result = strategy.run(ask("seeded", n=2, temperature=1.0, seed=4), engine)
    assert result.texts == [generate(engine, "seeded", {"alpha": 1.0}, temperature=1.0, seed=seed).text for seed in (4, 5)]
    assert len(result.finish_reasons) == 2


@pytest.mark.parametrize("expert_id, query", [("alpha", "rev hgfe="), ("beta", "MAKE IT BIG"), ("gamma", "1234567890")])
def test_embedding_router_sends_a_query_to_the_expert_whose_examples_match(engine, experts, expert_id, query):
    result = build_strategy("embedding_router", {}, experts).run(ask(query), engine)
    assert result.attribution[expert_id] == 1.0
    assert result.texts == [generate(engine, query, {expert_id: 1.0}).text]


def test_embedding_router_with_top_k_mixes_the_best_experts(engine, experts):
    result = build_strategy("embedding_router", {"top_k": 2, "temperature": 1.0}, experts).run(ask("rev abcd="), engine)
    assert_attribution(result.attribution)
    assert sum(1 for weight in result.attribution.values() if weight > 0) == 2
    assert result.attribution["alpha"] == max(result.attribution.values())


def test_trained_router_learns_labelled_queries(engine, experts):
    examples = [{"text": text, "expert": "alpha"} for text in ("aaaa", "aaab", "abaa", "baaa")]
    examples += [{"text": text, "expert": "gamma"} for text in ("9999", "9998", "8999", "9989")]
    examples += [{"text": text, "expert": "beta"} for text in ("ZZZZ", "ZZZY", "YZZZ", "ZZYZ")]
    strategy = build_strategy("trained_router", {"examples": examples, "epochs": 200}, experts)
    assert strategy.run(ask("aaba"), engine).attribution["alpha"] == 1.0
    assert strategy.run(ask("9899"), engine).attribution["gamma"] == 1.0
    assert strategy.fit(engine) == 1.0


@pytest.mark.parametrize("mode", ["top1", "mixture"])
def test_trained_router_leaves_queries_labelled_base_to_the_base_model(engine, experts, mode):
    examples = [{"text": text, "expert": "alpha"} for text in ("aaaa", "aaab", "abaa", "baaa")]
    examples += [{"text": text, "expert": "base"} for text in ("9999", "9998", "8999", "9989")]
    strategy = build_strategy("trained_router", {"examples": examples, "epochs": 200, "mode": mode}, experts)
    result = strategy.run(ask("9899"), engine)
    assert result.texts == [generate(engine, "9899", {}).text]
    assert max(strategy.probabilities("9899", engine), key=strategy.probabilities("9899", engine).get) == "base"
    assert result.attribution == pytest.approx({"alpha": 1 / 3, "beta": 1 / 3, "gamma": 1 / 3})
    assert strategy.run(ask("aaba"), engine).attribution["alpha"] == pytest.approx(1.0, abs=0.05)


def test_trained_router_in_mixture_mode_attributes_its_probabilities(engine, experts):
    strategy = build_strategy("trained_router", {"mode": "mixture"}, experts)  # trained on the experts' examples
    result = strategy.run(ask("UPPER CASE PLEASE"), engine)
    assert_attribution(result.attribution)
    assert result.attribution == pytest.approx(strategy.probabilities("UPPER CASE PLEASE", engine))
    assert max(result.attribution, key=result.attribution.get) == "beta"


def test_cascade_escalates_to_the_last_expert_when_the_threshold_is_never_met(engine, experts):
    strategy = build_strategy("cascade", {"order": ["gamma", "alpha", "beta"], "threshold": 0.0}, experts)
    result = strategy.run(ask("cascade"), engine)
    assert result.attribution["beta"] == 1.0
    assert result.texts == [generate(engine, "cascade", {"beta": 1.0}).text]


def test_cascade_stops_at_the_first_expert_that_is_confident_enough(engine, experts):
    strategy = build_strategy("cascade", {"order": ["gamma", "alpha", "beta"], "threshold": -1000.0}, experts)
    assert strategy.run(ask("cascade"), engine).attribution["gamma"] == 1.0


def test_cascade_can_fall_back_to_the_most_confident_answer(engine, experts):
    confidences = {e: generate(engine, "cascade", {e: 1.0}).mean_logprob for e in IDS}
    strategy = build_strategy("cascade", {"threshold": 0.0, "fallback": "most_confident"}, experts)
    assert strategy.run(ask("cascade"), engine).attribution[max(confidences, key=confidences.get)] == 1.0


def test_cascade_can_leave_a_question_no_expert_is_sure_of_to_the_base_model(engine, experts):
    strategy = build_strategy("cascade", {"threshold": 0.0, "fallback": "base"}, experts)
    result = strategy.run(ask("cascade"), engine)
    assert result.texts == [generate(engine, "cascade", {}).text]
    assert result.attribution == pytest.approx({expert_id: 1 / len(IDS) for expert_id in IDS})


class CountingEngine:
    """Passes every call to `engine` and counts the tokens each generate call may produce."""

    def __init__(self, engine):
        self.engine, self.max_tokens = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, requests):
        self.max_tokens.extend(request.max_tokens for request in requests)
        return self.engine.generate(requests)


def test_cascade_judges_each_expert_on_its_first_probe_tokens_and_lets_the_confident_one_finish(engine, experts):
    strategy = build_strategy("cascade", {"order": ["gamma", "alpha", "beta"], "threshold": 0.0,
                                          "probe_tokens": 3}, experts)
    counting = CountingEngine(engine)

    result = strategy.run(ask("cascade", max_tokens=12), counting)

    assert counting.max_tokens[:3] == [3, 3, 3]  # no expert writes on to max_tokens before it is judged
    assert result.texts == [generate(engine, "cascade", {"beta": 1.0}, max_tokens=12).text]  # the last one finished


def test_switch_hands_segments_to_the_nearest_expert_and_attributes_token_shares(engine, experts):
    strategy = build_strategy("switch", {"segment": "tokens", "segment_tokens": 3}, experts)
    result = strategy.run(ask("rev hgfe=", max_tokens=9), engine)
    assert_attribution(result.attribution)
    assert result.completion_tokens == 9
    assert result.attribution["alpha"] >= 3 / 9 - 1e-9  # the first segment goes to alpha


def test_debate_returns_the_summarisers_answer_to_the_final_answers(engine, experts):
    config = {"debaters": ["alpha", "gamma"], "summariser": "beta", "rounds": 1,
              "refine_template": "{prompt}|{others}|{own}:", "summary_template": "{prompt}#{answers}:"}
    result = build_strategy("debate", config, experts).run(ask("debate", max_tokens=4), engine)
    first = {e: generate(engine, "debate", {e: 1.0}, max_tokens=4).text for e in ("alpha", "gamma")}
    second = {
        "alpha": generate(engine, f"debate|- {first['gamma']}|{first['alpha']}:", {"alpha": 1.0}, max_tokens=4),
        "gamma": generate(engine, f"debate|- {first['alpha']}|{first['gamma']}:", {"gamma": 1.0}, max_tokens=4),
    }
    summary = generate(engine, f"debate#- {second['alpha'].text}\n- {second['gamma'].text}:", {"beta": 1.0}, max_tokens=4)
    assert result.texts == [summary.text]
    assert_attribution(result.attribution)
    assert all(result.attribution[e] > 0 for e in IDS)


def test_vote_picks_the_answer_most_experts_give_and_credits_them(engine, experts):
    twin = Expert(id="alpha_twin", adapter=experts[0].adapter, metadata={})
    team = [experts[0], twin, experts[2]]
    result = build_strategy("aggregate", {"method": "vote"}, team).run(ask("vote"), engine)
    assert result.texts == [generate(engine, "vote", {"alpha": 1.0}).text]
    assert result.attribution == {"alpha": 0.5, "alpha_twin": 0.5, "gamma": 0.0}


def test_judge_picks_the_candidate_it_scores_highest(engine, experts):
    result = build_strategy("aggregate", {"method": "judge", "judge": "gamma"}, experts).run(ask("judge"), engine)
    candidates = {e: generate(engine, "judge", {e: 1.0}).text for e in IDS}
    scores = engine.score([ScoreRequest("judge", candidates[e], {"gamma": 1.0}) for e in IDS])
    means = {e: sum(s) / len(s) if s else float("-inf") for e, s in zip(IDS, scores)}
    winner = max(means, key=means.get)
    assert result.texts == [candidates[winner]]
    assert result.attribution[winner] > 0
    assert_attribution(result.attribution)


def test_fixed_logit_mixture_decodes_the_weighted_mixture(engine, experts):
    weights = {"alpha": 0.2, "beta": 0.5, "gamma": 0.3}
    result = build_strategy("logit_mixture", {"weights": weights}, experts).run(ask("mix"), engine)
    assert result.texts == [generate(engine, "mix", weights).text]
    assert result.attribution == pytest.approx(weights)


def test_routed_logit_mixture_averages_the_per_token_weights(engine, experts):
    strategy = build_strategy("logit_mixture", {"source": "router", "router_temperature": 0.01}, experts)
    result = strategy.run(ask("rev abcd=", max_tokens=5), engine)
    assert_attribution(result.attribution)
    first = strategy.router.routing_weights("rev abcd=", engine, top_k=3, temperature=0.01)
    assert max(first, key=first.get) == "alpha"


def test_contrastive_decoding_with_no_penalty_is_the_experts_greedy_answer(engine, experts):
    result = build_strategy("contrastive", {"expert": "alpha", "lambda": 0.0}, experts).run(ask("contrast"), engine)
    assert result.texts == [generate(engine, "contrast", {"alpha": 1.0}).text]
    assert result.attribution["alpha"] == 1.0


def test_contrastive_decoding_picks_the_best_plausible_contrast(engine, experts):
    config = {"expert": "alpha", "amateur": "beta", "lambda": 1.0, "alpha": 0.1}
    result = build_strategy("contrastive", config, experts).run(ask("contrast", max_tokens=1), engine)
    expert_lp, amateur_lp = engine.next_token_logits([GenerationRequest("contrast", {"alpha": 1.0}),
                                                      GenerationRequest("contrast", {"beta": 1.0})])
    scores = contrastive_scores(expert_lp, amateur_lp, strength=1.0, alpha=0.1)
    plausible = expert_lp.exp() >= 0.1 * expert_lp.exp().max()
    assert torch.equal(torch.isfinite(scores), plausible)
    expected = engine.tokenizer.decode([int(scores.argmax())], skip_special_tokens=True)
    assert result.texts == [expected]
    assert result.attribution == pytest.approx({"alpha": 0.5, "beta": 0.5, "gamma": 0.0})


def test_merge_answers_with_the_merged_weight_updates(engine, experts):
    weights = {"alpha": 0.5, "beta": 0.25, "gamma": 0.25}
    strategy = build_strategy("merge", {"method": "linear", "weights": weights}, experts)
    expected = merge_deltas({e.id: e.adapter for e in experts}, weights, method="linear")
    for name, delta in expected.items():
        assert torch.allclose(strategy.merged.adapter.modules[name].delta(), delta, atol=1e-4)
    result = strategy.run(ask("merge"), engine)
    assert result.texts == [generate(engine, "merge", {strategy.merged.id: 1.0}).text]
    assert result.attribution == pytest.approx(weights)


def test_merge_search_is_deterministic_and_attributes_the_winning_weights(engine, experts):
    dev_set = [{"prompt": "ab", "answers": ["x"]}, {"prompt": "cd", "answers": ["y"]}]
    config = {"method": "linear", "dev_set": dev_set, "samples": 3, "search_seed": 2, "max_tokens": 3, "rank": 4}
    first = build_strategy("merge_search", config, experts)
    second = build_strategy("merge_search", config, experts)
    result = first.run(ask("search"), engine)
    second.run(ask("search"), engine)
    assert len(first.search_results) == 4  # the uniform weights and 3 draws
    assert first.search_results == second.search_results
    best = max(first.search_results, key=lambda pair: pair[1])
    assert result.attribution == pytest.approx(best[0])
    assert_attribution(result.attribution)


def test_aggregate_compares_the_answers_its_pattern_extracts(experts):
    strategy = build_strategy("aggregate", {"extract": r"answer: (\w+)"}, experts)
    assert strategy.extract("so the answer: Paris, surely") == "paris"
    assert strategy.extract("no idea") == ""


def test_a_request_for_no_choices_is_refused(engine, experts):
    from composition.errors import CompositionError

    with pytest.raises(CompositionError, match="n must be at least 1"):
        build_strategy("single", {"expert": "alpha"}, experts).run(ask("x", n=0), engine)
    with pytest.raises(CompositionError, match="top_p"):
        build_strategy("single", {"expert": "alpha"}, experts).run(ask("x", top_p=0.0), engine)
