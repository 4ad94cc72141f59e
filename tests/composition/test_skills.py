import json

import pytest

from composition.skills import (
    GENERAL,
    SKILLS,
    Item,
    heldout_sha256,
    is_correct,
    is_heldout_prompt,
    mixed_heldout_items,
)


def test_there_are_at_least_five_skills_each_with_a_plain_english_example():
    assert len(SKILLS) >= 5
    for name, skill in SKILLS.items():
        assert skill.name == name
        assert skill.example_prompt.strip() and skill.description.strip()


@pytest.mark.parametrize("name", sorted(SKILLS))
def test_items_are_seeded(name):
    skill = SKILLS[name]
    assert skill.train_items(30, seed=3) == skill.train_items(30, seed=3)
    assert skill.heldout_items(30, seed=3) == skill.heldout_items(30, seed=3)
    assert skill.heldout_items(30, seed=3) != skill.heldout_items(30, seed=4)


@pytest.mark.parametrize("name", sorted(SKILLS))
def test_no_heldout_prompt_is_ever_a_training_prompt(name):
    skill = SKILLS[name]
    heldout = {item.prompt for seed in range(3) for item in skill.heldout_items(40, seed=seed)}
    trained = {item.prompt for seed in range(3) for item in skill.train_items(300, seed=seed)}
    assert heldout and trained and not heldout & trained
    assert all(is_heldout_prompt(prompt) for prompt in heldout)
    assert not any(is_heldout_prompt(prompt) for prompt in trained)


@pytest.mark.parametrize("name", sorted(SKILLS))
def test_a_set_holds_distinct_prompts_of_its_skill(name):
    items = SKILLS[name].heldout_items(40)
    assert len({item.prompt for item in items}) == 40
    assert {item.skill for item in items} == {name}


def test_answers_are_right():
    for item in SKILLS["add"].train_items(50):
        a, b = item.prompt.removeprefix("What is ").removesuffix("?").split(" + ")
        assert int(item.answer) == int(a) + int(b)
    for item in SKILLS["reverse"].train_items(50):
        words = item.prompt.split(": ", 1)[1].split(", ")
        assert item.answer.split(", ") == words[::-1]
    for item in SKILLS["extract"].train_items(50):
        fields = json.loads(item.answer)
        assert set(fields) == {"name", "age", "city"}
        assert fields["name"] in item.prompt and str(fields["age"]) in item.prompt and fields["city"] in item.prompt
    assert {item.answer for item in SKILLS["sentiment"].train_items(60)} == {"positive", "negative"}


def test_a_skill_reply_must_be_the_answer_exactly_after_trimming():
    item = Item("add", "What is 47 + 38?", "85")
    assert is_correct(item, " 85\n")
    assert not is_correct(item, "The answer is 85.")
    assert not is_correct(item, "850")


def test_a_general_reply_must_contain_the_answer_in_any_case():
    item = GENERAL[0]
    assert is_correct(item, f"I believe it is {item.answer.upper()}.")
    assert not is_correct(item, "I do not know.")


def test_heldout_hash_is_stable_and_changes_with_content():
    items = mixed_heldout_items(4)
    assert heldout_sha256(items) == heldout_sha256(mixed_heldout_items(4))
    assert heldout_sha256(items) != heldout_sha256(items[:-1])
    changed = items[:-1] + [Item(items[-1].skill, items[-1].prompt, items[-1].answer + " ")]
    assert heldout_sha256(items) != heldout_sha256(changed)
    assert len(heldout_sha256(items)) == 64


def test_the_mixed_set_covers_every_skill_equally():
    items = mixed_heldout_items(3)
    assert len(items) == 3 * len(SKILLS)
    assert {skill: sum(item.skill == skill for item in items) for skill in SKILLS} == {s: 3 for s in SKILLS}


def test_router_examples_label_training_prompts_by_expert_and_general_questions_as_base():
    from composition.skills import GENERAL_ROUTER_EXAMPLES, router_examples

    examples = router_examples({"add": "7", "sentiment": "9"}, render=lambda text: f"<chat>{text}</chat>")
    plain = [e for e in examples if not e["text"].startswith("<chat>")]
    assert {e["expert"] for e in plain} == {"7", "9", "base"}
    assert len(examples) == 2 * len(plain)
    assert all(not is_heldout_prompt(e["text"]) for e in plain if e["expert"] != "base")
    assert {e["text"] for e in plain if e["expert"] == "base"} == set(GENERAL_ROUTER_EXAMPLES)
    assert not {e["text"] for e in plain} & {item.prompt for item in GENERAL}
