"""bench.real_world on the toy world: the comparison table of the base, each expert alone and each system."""
import json

from bench.real_world import run
from tests.marketplace import evaluation_suite
from tests.marketplace.test_evaluations import ask, world  # noqa: F401  (the toy world and its suite)


def test_the_table_compares_base_experts_and_systems_on_the_mixed_set_with_intervals(world, tmp_path):  # noqa: F811
    served, french, poetry, items, coalitions = world
    mixed = [item for item in items if item.skill != "general"]

    def solved(experts, strategy):
        return [evaluation_suite.is_correct(item, ask(served, experts, item.prompt, strategy=strategy))
                for item in mixed]

    alone = {"french": solved([french], "single"), "poetry": solved([poetry], "single")}
    duo = coalitions[frozenset({"f", "p"})][:len(mixed)]

    table = run(slugs=["duo"], items_per_skill=4, seed=1, concurrency=1, out=tmp_path / "real_world")

    rows = {row["name"]: row for row in table["rows"]}
    assert [(row["name"], row["kind"]) for row in table["rows"]] == [
        ("base model", "base"), ("french", "expert"), ("poetry", "expert"), ("duo", "system")]
    assert rows["french"]["per_skill"]["french"]["accuracy"] == 1.0  # its items' answers are its own
    assert rows["poetry"]["per_skill"]["poetry"]["accuracy"] == 1.0
    assert rows["base model"]["mixed"]["accuracy"] == sum(coalitions[frozenset()][:len(mixed)]) / len(mixed)
    assert rows["duo"]["mixed"]["accuracy"] == sum(duo) / len(mixed)
    assert rows["duo"]["general"]["n"] == 2
    assert rows["duo"]["solved_beyond_every_expert"] == sum(
        1 for i, ok in enumerate(duo) if ok and not alone["french"][i] and not alone["poetry"][i])
    for row in table["rows"]:
        assert row["mixed"]["low"] <= row["mixed"]["accuracy"] <= row["mixed"]["high"]
    markdown = (tmp_path / "real_world.md").read_text()
    assert "| duo | system |" in markdown and "beyond experts" in markdown
    assert json.loads((tmp_path / "real_world.json").read_text())["rows"] == table["rows"]
