"""marketplace.validation and the storage rules, below the API."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ledger import services as ledger_services
from marketplace.models import Expert
from marketplace.uploads import content_sha256
from marketplace.validation import AdapterRejected, inspect_adapter, read_safetensors_header
from tests.marketplace.catalog.support import assert_nothing_stored, stored_files, upload_expert


def test_the_header_parser_reads_names_dtypes_and_shapes_without_loading(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(5, dtype=torch.float16)}, str(path),
              metadata={"format": "pt"})

    tensors = read_safetensors_header(path)

    assert {name: (info.dtype, info.shape) for name, info in tensors.items()} == {
        "a": ("F32", (2, 3)), "b": ("F16", (5,))}


def test_the_header_parser_refuses_bytes_after_the_described_data(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(2, 3)}, str(path))
    path.write_bytes(path.read_bytes() + b"hidden payload")

    with pytest.raises(AdapterRejected, match="describes 24 bytes of tensor data but the file holds 38"):
        read_safetensors_header(path)


def test_the_header_parser_refuses_a_file_shorter_than_its_length_prefix(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"\x01\x02")

    with pytest.raises(AdapterRejected, match="truncated"):
        read_safetensors_header(path)


def test_inspect_reports_rank_alpha_and_modules(adapter_dirs):
    report = inspect_adapter(adapter_dirs["mlp"])

    assert (report.rank, report.lora_alpha) == (2, 4.0)
    assert report.target_modules == ["down_proj", "gate_proj", "up_proj"]
    assert sorted(report.modules)[:2] == ["model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj"]
    assert report.modules["model.layers.0.mlp.down_proj"]["lora_B"].shape == (64, 2)


def test_a_rank_pattern_sets_the_rank_of_matching_modules(adapter_copy):
    directory = adapter_copy("qv")
    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**config, "rank_pattern": {"v_proj": 2}}))

    report = inspect_adapter(directory)

    assert report.rank_of("model.layers.0.self_attn.v_proj") == 2
    assert report.rank_of("model.layers.0.self_attn.q_proj") == 4


def test_the_content_address_covers_both_files(adapter_copy):
    directory = adapter_copy("qv")
    before = content_sha256(directory)
    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 16}))

    assert content_sha256(directory) != before


@pytest.mark.django_db
def test_a_failure_after_the_files_were_moved_removes_them_and_every_row(alice_api, base_model, adapter_dirs,
                                                                         monkeypatch):
    real = ledger_services.record_event

    def failing(*, kind, payload, actor):
        if kind == "license.set":
            raise RuntimeError("ledger unavailable")
        return real(kind=kind, payload=payload, actor=actor)

    monkeypatch.setattr("marketplace.services.experts.record_event", failing)
    with pytest.raises(RuntimeError):
        upload_expert(alice_api, adapter_dirs["qv"])

    assert_nothing_stored()


@pytest.mark.django_db
def test_a_failed_upload_keeps_identical_files_that_another_expert_stored(alice_api, bob_api, base_model,
                                                                          adapter_dirs, monkeypatch):
    assert upload_expert(alice_api, adapter_dirs["qv"], slug="first").status_code == 201
    files = stored_files()
    monkeypatch.setattr("marketplace.services.experts.record_event",
                        lambda **kwargs: (_ for _ in ()).throw(RuntimeError("ledger unavailable")))

    with pytest.raises(RuntimeError):
        upload_expert(bob_api, adapter_dirs["qv"], slug="copy")

    assert stored_files() == files
    assert list(Expert.objects.values_list("slug", flat=True)) == ["first"]
    assert Path(Expert.objects.get().current_version.storage_path).is_dir()


def test_gpu_workers_check_adapters_against_the_same_content_address(adapter_dirs):
    from gpu_workers.adapter_pool import adapter_content_sha256

    for directory in adapter_dirs.values():
        assert adapter_content_sha256(directory) == content_sha256(directory)
