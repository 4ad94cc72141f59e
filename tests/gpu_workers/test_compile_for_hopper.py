"""With no GPU here, the kernels are still compiled for an H100 (sm_90) and their machine code is read:
no register spills, tensor-core matrix instructions, 16-byte global loads of the adapter weights."""
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


@pytest.fixture(scope="module")
def reports():
    if not PTXAS.exists():
        pytest.skip("Triton's NVIDIA toolchain (ptxas) is not installed")
    from gpu_workers.kernels.compile_check import run_check

    return run_check(90)


def test_every_kernel_variant_compiles_for_sm90_without_spills(reports):
    assert {(r["kernel"]) for r in reports} == {"lora_shrink", "lora_expand", "mixture"}
    for report in reports:
        assert report["local"] == 0 and report["stack"] == 0, report
        assert not any(op.startswith(("LDL", "STL")) for op in report["instructions"]), report


def test_half_precision_lora_kernels_use_tensor_cores(reports):
    for report in reports:
        if report["kernel"].startswith("lora") and not report["variant"].startswith("fp32"):
            assert any(op.startswith(("HMMA", "HGMMA")) for op in report["instructions"]), report


def test_adapter_weights_are_read_with_16_byte_loads(reports):
    for report in reports:
        wide = [op for op in report["instructions"] if op.endswith(".128")]
        assert wide, report
