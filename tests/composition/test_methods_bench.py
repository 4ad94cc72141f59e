"""bench.methods' table: counts, intervals and the items a method solves that no single expert does."""
from bench.methods import render_markdown, summarise


def row(name, correct, tokens=None, seconds=None, learning_s=0.0):
    n = len(correct)
    return {"name": name, "level": "text", "correct": correct, "tokens": tokens or [2] * n,
            "seconds": seconds or [1.0] * n, "learning_s": learning_s}


def test_a_method_is_credited_with_the_items_that_no_single_expert_solves():
    experts = {"add": [True, False, False, False], "reverse": [False, True, False, False]}
    summary = summarise(row("moa", [True, False, True, True]), experts)
    assert summary["solved_by_no_single_expert"] == 2
    assert summary["accuracy"] == 0.75 and summary["low"] < 0.75 < summary["high"]


def test_learning_time_is_amortised_over_the_items():
    summary = summarise(row("lorahub", [True, True], seconds=[1.0, 3.0], learning_s=6.0), {})
    assert summary["seconds_per_answer"] == 5.0
    assert summary["tokens_per_answer"] == 2.0


def test_the_table_lists_every_row_and_what_did_not_run():
    report = {"base_model": "tiny", "command": "python -m bench.methods", "seconds": 1, "machine": "x", "n": 2,
              "items_per_skill": 1, "skills": ["add", "reverse"], "heldout_sha256": "a" * 64, "dev_sha256": "b" * 64,
              "dev_items_per_skill": 1, "rows": [summarise(row("nudging", [True, False]), {})],
              "not_run": ["mixture_of_agents"], "failed": [], "budget_s": 10}
    text = render_markdown(report)
    assert "| nudging | text | 0.50 [" in text
    assert "Not run within the time budget (10 s): mixture_of_agents." in text
