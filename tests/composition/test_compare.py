"""composition.compare: every method side by side with the base, each expert and the monolith, and the
participation curve. The run itself goes on the toy world at a reduced size (a few items); its answers mean
nothing, so these tests check the table's arithmetic and the machinery, never a method's score."""
import json

import pytest

from composition import compare
from composition.training import Recipe, demo_recipe, monolith_recipe, toy_recipe


def row(name, correct, *, kind="method", tokens=None, seconds=None, learning_s=0.0):
    n = len(correct)
    return {"name": name, "method": name, "kind": kind, "level": "text", "correct": correct,
            "tokens": tokens or [2] * n, "seconds": seconds or [1.0] * n, "learning_s": learning_s}


def test_a_method_is_credited_with_the_items_that_no_single_expert_solves():
    experts = {"expert:add": [True, False, False, False], "expert:reverse": [False, True, False, False]}
    summary = compare.summarise(row("moa", [True, False, True, True]), experts)
    assert summary["solved_by_no_single_expert"] == 2
    assert summary["accuracy"] == 0.75 and summary["low"] < 0.75 < summary["high"]


def test_learning_time_is_amortised_over_the_items():
    summary = compare.summarise(row("lorahub", [True, True], seconds=[1.0, 3.0], learning_s=6.0), {})
    assert summary["seconds_per_answer"] == 5.0
    assert summary["tokens_per_answer"] == 2.0


def test_the_headline_names_the_methods_above_the_best_single_expert():
    experts = {"expert:add": [True, False, False, False]}
    rows = [compare.summarise(r, experts) for r in [
        row("expert:add", [True, False, False, False], kind="expert"),
        row("expert:reverse", [False, False, False, False], kind="expert"),
        row("router", [True, True, False, False]),
        row("vote", [True, False, False, False]),
        row("monolith", [True, True, True, False], kind="monolith"),
    ]]
    facts = compare.headline(rows)
    assert facts["best_single_expert"] == "expert:add"
    assert facts["beat_best_single"] == ["router"]
    assert facts["beat_best_single_beyond_interval"] == []  # four items: the intervals overlap
    assert facts["solved_only_by_collaboration"] == {"router": 1}
    assert facts["monolith"]["accuracy"] == 0.75


def test_the_best_methods_are_the_most_accurate_and_ties_go_to_the_cheaper():
    rows = [compare.summarise(r, {}) for r in [
        row("slow", [True, True], seconds=[9.0, 9.0]), row("fast", [True, True]), row("worse", [True, False]),
        row("worst", [False, False]), row("expert:add", [True, True], kind="expert"),
    ]]
    assert compare.best_methods(rows) == ["fast", "slow", "worse"]


def test_participation_draws_distinct_seeded_subsets_of_each_size_and_the_full_set_once():
    ids = ["a", "b", "c", "d", "e"]
    subsets = compare.participation_subsets(ids, (1, 2, 4), draws=3, seed=7)
    assert sorted(subsets) == [1, 2, 4, 5]
    assert subsets[5] == [ids]
    for size in (1, 2, 4):
        assert len(subsets[size]) == 3
        assert all(len(s) == size for s in subsets[size])
        assert len({tuple(s) for s in subsets[size]}) == 3
    assert subsets == compare.participation_subsets(ids, (1, 2, 4), draws=3, seed=7)
    assert subsets != compare.participation_subsets(ids, (1, 2, 4), draws=3, seed=8)


def test_participation_takes_every_subset_when_there_are_fewer_than_the_draws():
    subsets = compare.participation_subsets(["a", "b", "c"], (1, 2, 4), draws=5, seed=0)
    assert subsets == {1: [["a"], ["b"], ["c"]], 2: [["a", "b"], ["a", "c"], ["b", "c"]], 3: [["a", "b", "c"]]}


def test_the_monolith_has_the_experts_summed_rank_and_steps_and_their_recipe_otherwise():
    recipes = [demo_recipe(skill) for skill in ("add", "reverse", "convert", "extract", "sentiment")]
    monolith = monolith_recipe(recipes)
    assert monolith.rank == sum(r.rank for r in recipes) == 40
    assert monolith.steps == sum(r.steps for r in recipes) == 400
    assert monolith.alpha / monolith.rank == recipes[0].alpha / recipes[0].rank
    assert (monolith.batch_size, monolith.learning_rate, monolith.layers, monolith.target_modules) == (
        recipes[0].batch_size, recipes[0].learning_rate, recipes[0].layers, recipes[0].target_modules)


def test_no_monolith_matches_experts_trained_differently_beyond_rank_and_steps():
    with pytest.raises(ValueError, match="differ beyond rank and steps"):
        monolith_recipe([Recipe(learning_rate=1e-3), Recipe(learning_rate=2e-3)])
    with pytest.raises(ValueError, match="at least one"):
        monolith_recipe([])


def test_every_composing_method_has_a_comparison_configuration_that_validates():
    from composition.strategies import validate_strategy_config

    ids = ["add", "reverse", "convert", "extract", "sentiment"]
    dev_set = [{"prompt": "p", "answers": ["a"]}]
    configs = compare.method_configs(ids, dev_set, 32, lambda message: message)
    assert set(configs) == set(compare.composing_methods())
    for subset in (ids, ids[:2], ids[:1]):
        for name, config in compare.method_configs(subset, dev_set, 32, lambda message: message).items():
            validate_strategy_config(name, config, subset)


def test_unknown_methods_are_refused_with_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        compare.main(["--world", "toy", "--methods", "telepathy"])
    assert "unknown methods telepathy; known: embedding_router" in capsys.readouterr().err


def test_a_missing_expert_cache_is_explained(tmp_path):
    base = tmp_path / "base"
    from composition.world import build_base_model

    build_base_model(base, layers=1, hidden=32)
    with pytest.raises(SystemExit, match="seed_demo trains and caches"):
        compare.load_world("real", base_dir=base, experts_dir=tmp_path / "empty", monolith_dir=None)


def test_a_reduced_comparison_on_the_toy_world_writes_the_table_and_the_participation_curve(tmp_path):
    out = tmp_path / "results"
    code = compare.main(["--world", "toy", "--items", "1", "--methods", "embedding_router,aggregate,greedy_soup",
                         "--participation-draws", "1", "--experts-dir", str(tmp_path / "toy"),
                         "--out-dir", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "methods.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["base model", "expert:add", "expert:reverse", "expert:convert", "expert:extract",
                     "expert:sentiment", "monolith", "embedding_router", "aggregate", "greedy_soup"]
    assert report["n"] == 5 and report["failed"] == [] and report["not_run"] == []
    assert report["monolith"]["rank"] == 5 * toy_recipe().rank and report["monolith"]["steps"] == 5 * toy_recipe().steps
    for method_row in (r for r in report["rows"] if r["kind"] == "method"):
        assert method_row["attribution_sums"] == [1.0] * 5
        assert 0 <= method_row["low"] <= method_row["accuracy"] <= method_row["high"] <= 1
    table = (out / "methods.md").read_text()
    assert "| greedy_soup | weight |" in table and "## Headline" in table

    curve = json.loads((out / "participation.json").read_text())
    assert curve["sizes"] == [1, 2, 4, 5] and len(curve["methods"]) == 3
    assert {(p["method"], p["size"]) for p in curve["points"]} == {
        (m, s) for m in curve["methods"] for s in (1, 2, 4, 5)}
    assert (out / "participation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| method | 1 expert | 2 experts | 4 experts | 5 experts |" in (out / "participation.md").read_text()


def test_a_later_run_keeps_the_rows_an_earlier_one_measured_on_the_same_sets_and_runs_the_rest(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--world", "toy", "--items", "1", "--participation-draws", "0", "--experts-dir", str(tmp_path / "toy"),
              "--quiet"]
    compare.main([*common, "--methods", "aggregate", "--no-monolith", "--out-dir", str(first)])
    compare.main([*common, "--methods", "aggregate,merge", "--reuse", str(first / "methods.json"),
                  "--out-dir", str(second)])
    before = {r["name"]: r for r in json.loads((first / "methods.json").read_text())["rows"]}
    after = {r["name"]: r for r in json.loads((second / "methods.json").read_text())["rows"]}
    assert after["aggregate"]["reused"] and after["aggregate"]["correct"] == before["aggregate"]["correct"]
    assert after["expert:add"]["reused"]
    assert not after["merge"].get("reused") and not after["monolith"].get("reused")  # new rows are measured
    assert "† measured by an earlier run" in (second / "methods.md").read_text()
    with pytest.raises(SystemExit, match="another world, held-out set or development set"):
        compare.main([*common, "--items", "2", "--methods", "aggregate", "--reuse", str(first / "methods.json"),
                      "--out-dir", str(tmp_path / "third")])


def test_the_participation_plot_takes_draws_whose_mean_rounds_outside_them(tmp_path):
    points = [{"method": "vote", "size": 1, "experts": [e], "accuracy": 0.2} for e in "abc"]  # mean 0.2000...04
    report = {"methods": ["vote"], "sizes": [1], "points": points, "world": "toy", "n": 5}
    compare.plot_participation(report, tmp_path / "curve.png", {"monolith": 0.4})
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_batched_engine_answering_items_at_once_agrees_item_by_item_with_the_reference_engine(tmp_path):
    """Every method, greedy: the same answers (their correctness and length) whichever engine decodes them."""
    from composition.skills import SKILLS, mixed_heldout_items

    worlds = {kind: compare.load_world("toy", base_dir=tmp_path, experts_dir=tmp_path / "toy", monolith_dir=None,
                                       engine=kind) for kind in ("reference", "batched")}
    assert worlds["reference"].workers == 1 and worlds["batched"].workers > 1
    items = mixed_heldout_items(1)
    rows = {}
    for kind, world in worlds.items():
        skills = [e.id for e in world.experts]
        max_tokens = max(SKILLS[s].max_tokens for s in skills)
        dev_set = [{"prompt": world.render(item.prompt), "answers": [item.answer]}
                   for skill in skills for item in SKILLS[skill].train_items(1, seed=3)]
        configs = compare.method_configs(skills, dev_set, max_tokens, world.render)
        rows[kind] = {name: compare.evaluate(name, configs.get(name, {}), world.experts, world.engine, items,
                                             world.render, max_tokens, progress=False, workers=world.workers)
                      for name in compare.composing_methods()}
    differing = [name for name in rows["reference"]
                 if (rows["reference"][name]["correct"], rows["reference"][name]["tokens"])
                 != (rows["batched"][name]["correct"], rows["batched"][name]["tokens"])]
    assert differing == []


def test_calls_that_arrive_while_one_runs_are_run_together_next_and_each_caller_gets_its_own_rows():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    runs, first_started = [], threading.Event()

    def doubled(items):
        runs.append(list(items))
        first_started.set()
        time.sleep(0.2)
        return [2 * item for item in items]

    together = compare.CallsTogether(doubled)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(together, [1])
        first_started.wait()
        later = [pool.submit(together, [10 * n, 10 * n + 1]) for n in (1, 2, 3)]
        assert first.result() == [2]
        assert [f.result() for f in later] == [[20, 22], [40, 42], [60, 62]]
    assert runs[0] == [1] and sorted(runs[1]) == [10, 11, 20, 21, 30, 31]


def test_a_failing_run_fails_every_call_joined_into_it():
    def refuse(items):
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        compare.CallsTogether(refuse)([1])
