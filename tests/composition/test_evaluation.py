import json
import subprocess
import sys
from pathlib import Path

import pytest

from composition.errors import CompositionError
from composition.evaluation import (
    Dataset,
    Item,
    compare,
    exact_match,
    items_hash,
    load_dataset,
    multiple_choice,
    normalise_answer,
    score,
    solved_where_every_expert_fails,
    strict_match,
    summarise,
    token_f1,
    wilson_interval,
    write_dataset,
)


def test_exact_match_normalises_case_punctuation_articles_and_spaces():
    assert normalise_answer("  The  Eiffel-Tower! ") == "eiffeltower"
    assert exact_match("the Paris.", ["paris"]) == 1.0
    assert exact_match("Lyon", ["paris", "Marseille"]) == 0.0
    assert exact_match("an apple", ["Apple", "pear"]) == 1.0


def test_strict_match_keeps_case():
    assert strict_match(" ABC ", ["ABC"]) == 1.0
    assert strict_match("abc", ["ABC"]) == 0.0


def test_multiple_choice_accepts_the_letter_or_the_text_of_the_right_choice():
    choices = ["red", "green", "blue"]
    assert multiple_choice("B", ["green"], choices) == 1.0
    assert multiple_choice("(b)", ["B"], choices) == 1.0
    assert multiple_choice("Green.", ["green"], choices) == 1.0
    assert multiple_choice("A", ["green"], choices) == 0.0
    assert multiple_choice("purple", ["green"], choices) == 0.0
    with pytest.raises(CompositionError, match="needs items with choices"):
        multiple_choice("A", ["green"], None)


def test_token_f1_takes_the_best_answer():
    assert token_f1("the cat sat", ["cat sat down"]) == pytest.approx(0.8)  # p = 2/2, r = 2/3
    assert token_f1("dog", ["cat", "dog house"]) == pytest.approx(2 / 3)
    assert token_f1("", [""]) == 1.0
    assert token_f1("x", ["y"]) == 0.0


def test_wilson_interval_matches_the_textbook_values():
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 10)[0] == 0.0


def test_scores_of_fractions_use_a_seeded_bootstrap():
    values = [0.2, 0.5, 0.9, 0.4, 0.6, 0.1, 0.8]
    first, second = score(values, seed=3), score(values, seed=3)
    assert first == second
    assert first.low <= first.mean <= first.high
    assert first.mean == pytest.approx(sum(values) / len(values))


def test_summary_gives_per_task_and_overall_scores():
    items = [Item("a", ["x"], "t1"), Item("b", ["y"], "t1"), Item("c", ["z"], "t2")]
    summary = summarise([1.0, 0.0, 1.0], items)
    assert summary["overall"].mean == pytest.approx(2 / 3) and summary["overall"].n == 3
    assert summary["per_task"]["t1"].mean == 0.5 and summary["per_task"]["t2"].mean == 1.0


def test_the_dataset_hash_is_the_hash_of_the_canonical_file(tmp_path):
    messy = tmp_path / "messy.jsonl"
    messy.write_text('{"task": "t", "answers": ["b"],   "prompt": "a"}\n\n{"prompt":"c","answers":["d"],"task":"u","choices":["d","e"]}\n')
    tidy = tmp_path / "tidy.jsonl"
    dataset = load_dataset(messy)
    assert write_dataset(tidy, dataset.items) == dataset.sha256
    import hashlib

    assert hashlib.sha256(tidy.read_bytes()).hexdigest() == dataset.sha256
    assert load_dataset(tidy).sha256 == dataset.sha256
    assert dataset.items[1].choices == ["d", "e"] and dataset.tasks == ["t", "u"]


@pytest.mark.parametrize("line, message", [
    ("not json", "not JSON"),
    ('{"prompt": 1, "answers": ["a"]}', "'prompt' must be a string"),
    ('{"prompt": "p", "answers": []}', "'answers' must be a non-empty list"),
    ('{"prompt": "p", "answers": ["a"], "extra": 1}', "unknown fields"),
])
def test_bad_dataset_lines_are_named_with_their_line_number(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "answers": ["a"]}\n' + line + "\n")
    with pytest.raises(CompositionError, match=f"line 2.*{message}"):
        load_dataset(path)


def test_solved_where_every_expert_fails_counts_only_items_no_expert_solves():
    system = [1, 1, 1, 0]
    experts = {"a": [1, 0, 0, 0], "b": [0, 1, 0, 1]}
    assert solved_where_every_expert_fails(system, experts) == 1


def test_compare_scores_each_system_and_counts_what_only_the_composition_solves():
    items = [Item("1+1", ["2"], "add"), Item("2*3", ["6"], "mul"), Item("2+2*3", ["8"], "both")]
    dataset = Dataset(items=items, sha256=items_hash(items))
    answers = {"adder": ["2", "5", "12"], "multiplier": ["11", "6", "10"], "base": ["0", "0", "0"],
               "system": ["2", "6", "8"]}
    predictors = {name: (lambda predicted: lambda _: predicted)(predicted) for name, predicted in answers.items()}
    comparison = compare(predictors, dataset, metric="exact_match", expert_names=["adder", "multiplier"])
    assert comparison.scores["system"] == [1.0, 1.0, 1.0]
    assert comparison.summaries["adder"]["per_task"]["add"].mean == 1.0
    assert comparison.solved_beyond_experts == {"base": 0, "system": 1}
    assert comparison.dataset_sha256 == items_hash(items)
    assert json.dumps(comparison.summaries["system"]["overall"].as_dict())


def test_compare_refuses_a_system_that_does_not_answer_each_item_once():
    items = [Item("1+1", ["2"]), Item("2+2", ["4"])]
    with pytest.raises(CompositionError, match="'short' must answer each of the 2 items with one text; it gave 1"):
        compare({"short": lambda _: ["2"]}, Dataset(items=items, sha256=items_hash(items)), metric="exact_match",
                expert_names=[])


def test_evaluation_knows_no_strategy_engine_or_torch():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, composition.evaluation; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    ).stdout.split()
    assert not [name for name in loaded if name.startswith(("composition.strategies", "composition.engine", "torch"))]
    assert "composition.evaluation" in loaded
