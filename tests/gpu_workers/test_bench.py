"""The GPU benchmark script is ready to run: it refuses the CPU clearly and its smoke mode runs every section."""
import json

import pytest
import torch

from bench import gpu_bench


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_the_full_benchmark_refuses_to_run_without_a_gpu(tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu_bench.main(["--out", str(tmp_path)])
    assert not (tmp_path / "gpu.json").exists()


def test_smoke_mode_runs_every_section_and_writes_the_report(tmp_path):
    gpu_bench.main(["--smoke", "--out", str(tmp_path)])

    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["mode"].startswith("smoke")
    model = results["model"]
    for key in ("decode", "prefill"):
        assert model[f"mosaic_vs_peft_{key}_logits_rel_error"] < 1e-5  # same adapters, float32: same logits
        assert model[f"adapters_vs_base_{key}_logits_rel_change"] > 1e-2  # and the adapters do change them
    assert len(results["projections"]) == 3 * 2 * 2
    assert all(row["mosaic_rel_error"] < 1e-5 for row in results["projections"])
    assert results["mixture"]["mosaic_vs_reference_max_abs"] < 1e-4
    assert results["end_to_end"]["mosaic_completion_tokens"] > 0
    assert "## Goals" in (tmp_path / "gpu.md").read_text()
