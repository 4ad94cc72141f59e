import json

import pytest

from composition import small_world


@pytest.mark.slow
def test_the_reduced_small_world_trains_composes_and_reports_from_its_own_run(tmp_path):
    out = tmp_path / "results" / "small_world_reduced"
    report = small_world.run("reduced", tmp_path / "cache", out)

    data = json.loads(out.with_suffix(".json").read_text())
    table = out.with_suffix(".md").read_text()
    skills = sorted(small_world.SKILLS)
    assert len(skills) >= 6 and data["skills"] == skills
    assert set(report["training_seconds"]) == {"base_s"} | {f"expert_{skill}_s" for skill in skills}
    expected_rows = ["base", *[f"expert:{skill}" for skill in skills], "embedding_router", "trained_router",
                     "logit_mixture", "merge_ties", "aggregate_vote"]
    for row in expected_rows:
        assert f"| {row} |" in table
        assert set(data["systems"][row]["per_task"]) == set(skills)
    for name, system in data["systems"].items():
        if system["attribution"] is not None:
            assert sum(system["attribution"].values()) == pytest.approx(1.0, abs=1e-3)
            assert min(system["attribution"].values()) >= 0

    best, expert = data["best_system"], data["best_single_expert"]
    assert data["composition_beats_best_single_expert"] == (
        data["systems"][best]["overall"]["mean"] > data["systems"][expert]["overall"]["mean"])
    shapley = data["shapley"]
    assert shapley["method"] == "exact_shapley" and shapley["evaluations"] == 2 ** len(skills)
    total = sum(float(value) for value in shapley["values"].values())
    assert total == pytest.approx(float(shapley["grand_value"]) - float(shapley["empty_value"]), abs=1e-5)

    again = small_world.run("reduced", tmp_path / "cache", out)  # everything trained is reused
    assert again["training_seconds"] == {}
    assert again["systems"]["trained_router"]["overall"] == report["systems"]["trained_router"]["overall"]
