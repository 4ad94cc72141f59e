"""The CPU serving benchmark runs every contender on one batch and checks Mosaic against peft (smoke mode)."""
import json

from bench import cpu_serving


def test_smoke_mode_times_every_contender_and_writes_the_report(tmp_path):
    cpu_serving.main(["--smoke", "--sizes", "3", "--out", str(tmp_path)])

    results = json.loads((tmp_path / "cpu_serving.json").read_text())
    (size,) = results["sizes"]
    assert set(size["contenders"]) == {"base", "peft", "mosaic", "mosaic_no_adapters"}
    assert all(row["tokens"] > 0 and row["tokens_per_s"] > 0 for row in size["contenders"].values())
    assert all(len(row["cpu_seconds"]) == results["rounds"] and row["tokens_per_cpu_s"] > 0
               for row in size["contenders"].values())
    assert size["contenders"]["base"]["cpu_ratio_to_base"] == 1.0
    assert size["greedy_texts_equal_to_peft"] == size["requests"] == 3
    assert size["mosaic_no_adapters_equal_to_base"] == 3
    assert results["machine"]["torch_threads"] >= 1 and len(results["machine"]["load_average_before"]) == 3
    assert "ratio to base" in (tmp_path / "cpu_serving.md").read_text()
    assert "ratio to base by CPU time" in (tmp_path / "cpu_serving.md").read_text()
