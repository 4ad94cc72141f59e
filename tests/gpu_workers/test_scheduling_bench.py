"""The scheduling benchmark runs both contenders on the same requests and writes its report (smoke mode)."""
import json

from bench import scheduling


def test_smoke_mode_runs_window_and_continuous_batching_and_writes_the_report(tmp_path):
    scheduling.main(["--smoke", "--out", str(tmp_path)])

    results = json.loads((tmp_path / "scheduling.json").read_text())
    assert set(results["contenders"]) == {"window", "continuous"}
    for row in results["contenders"].values():
        assert row["failed"] == 0 and row["tokens"] > 0 and row["tokens_per_s"] > 0
    assert results["texts_equal"] == results["clients"]  # greedy: the same answers either way
    assert "TTFT p99" in (tmp_path / "scheduling.md").read_text()
