"""Every refused upload answers 4xx with a reason a person can act on, and stores nothing:
no files (staging included), no rows, no ledger entries."""
import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from safetensors.torch import load_file, save_file

from tests.marketplace.catalog.support import (
    adapter_files,
    assert_nothing_stored,
    error_message,
    upload_expert,
    upload_version,
)

pytestmark = pytest.mark.django_db

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def edit_config(directory: Path, **changes) -> Path:
    config = json.loads((directory / CONFIG).read_text())
    config.update(changes)
    (directory / CONFIG).write_text(json.dumps(config))
    return directory


def edit_tensors(directory: Path, change) -> Path:
    tensors = load_file(str(directory / WEIGHTS))
    change(tensors)
    save_file(tensors, str(directory / WEIGHTS))
    return directory


def zip_with(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in members:
            archive.writestr(info, data)
    return SimpleUploadedFile("adapter.zip", buffer.getvalue())


def tar_with(members: list[tuple[tarfile.TarInfo, bytes]]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return SimpleUploadedFile("adapter.tar.gz", buffer.getvalue())


def good_members(directory: Path, folder: str = "adapter") -> list[tuple[str, bytes]]:
    return [(f"{folder}/{name}", (directory / name).read_bytes()) for name in (CONFIG, WEIGHTS)]


def refused(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.content
    message = error_message(response)
    for fragment in fragments:
        assert fragment in message, message
    assert_nothing_stored()


# --- pickles: never unpickled, refused by name and by content


def test_a_pickled_bin_adapter_is_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    pickled = io.BytesIO()
    torch.save(load_file(str(directory / WEIGHTS)), pickled)

    response = upload_expert(alice_api, files={
        "adapter_config": (directory / CONFIG).open("rb"),
        "adapter_model": SimpleUploadedFile("adapter_model.bin", pickled.getvalue()),
    })

    refused(response, 400, "adapter_model.bin", "pickle", "safetensors")


def test_a_pickle_renamed_to_safetensors_is_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    pickled = io.BytesIO()
    torch.save(load_file(str(directory / WEIGHTS)), pickled)
    (directory / WEIGHTS).write_bytes(pickled.getvalue())

    refused(upload_expert(alice_api, directory), 400, "pickle")


def test_an_archive_holding_a_pickle_is_refused(alice_api, base_model, adapter_dirs):
    archive = zip_with(good_members(adapter_dirs["qv"]) + [("adapter/pytorch_model.bin", b"\x80\x04junk")])

    refused(upload_expert(alice_api, files={"adapter_archive": archive}), 400, "pytorch_model.bin", "pickle")


# --- the adapter config


def test_a_non_lora_peft_adapter_is_refused(alice_api, base_model, tiny_base_dir, tmp_path):
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_base_dir))
    ia3 = get_peft_model(model, IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                          feedforward_modules=["down_proj"], task_type="CAUSAL_LM"))
    ia3.save_pretrained(str(tmp_path / "ia3"))

    refused(upload_expert(alice_api, tmp_path / "ia3"), 400, "Only LoRA adapters", "IA3")


def test_a_config_that_is_not_json_is_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    (directory / CONFIG).write_text("{not json")

    refused(upload_expert(alice_api, directory), 400, "adapter_config.json is not valid JSON")


def test_an_adapter_for_another_base_model_is_refused(alice_api, base_model, adapter_copy):
    directory = edit_config(adapter_copy("qv"), base_model_name_or_path="meta-llama/Llama-3.1-8B")

    refused(upload_expert(alice_api, directory), 400, "meta-llama/Llama-3.1-8B", "mosaic-tiny")


def test_a_target_module_the_base_model_lacks_is_refused(alice_api, base_model, adapter_copy):
    directory = edit_config(adapter_copy("qv"), target_modules=["q_proj", "qkv_proj"])

    refused(upload_expert(alice_api, directory), 400, "qkv_proj", "do not exist")


def test_weights_for_a_module_the_base_model_lacks_are_refused(alice_api, base_model, adapter_copy):
    def rename(tensors):
        for part in ("lora_A", "lora_B"):
            key = f"base_model.model.model.layers.0.self_attn.q_proj.{part}.weight"
            tensors[key.replace("layers.0", "layers.7")] = tensors.pop(key)

    refused(upload_expert(alice_api, edit_tensors(adapter_copy("qv"), rename)), 400,
            "no linear module", "model.layers.7.self_attn.q_proj")


def test_a_tensor_of_the_wrong_shape_is_refused(alice_api, base_model, adapter_copy):
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"

    def shrink(tensors):
        tensors[key] = torch.zeros(4, 32)

    refused(upload_expert(alice_api, edit_tensors(adapter_copy("qv"), shrink)), 400, key, "[4, 32]", "[4, 64]")


def test_a_rank_that_disagrees_with_the_tensors_is_refused(alice_api, base_model, adapter_copy):
    directory = edit_config(adapter_copy("qv"), r=8)

    refused(upload_expert(alice_api, directory), 400, "at rank 8", "[8, 64]")


def test_a_disallowed_dtype_is_refused(alice_api, base_model, adapter_copy):
    def to_float64(tensors):
        for key in tensors:
            tensors[key] = tensors[key].double()

    refused(upload_expert(alice_api, edit_tensors(adapter_copy("qv"), to_float64)), 400, "F64", "allowed dtypes")


def test_an_adapter_over_the_size_limit_is_refused(alice_api, base_model, adapter_dirs, settings):
    settings.EXPERT_MAX_UPLOAD_BYTES = 2000

    refused(upload_expert(alice_api, adapter_dirs["qv"]), 413, "too large", "2000")


def test_an_archive_that_expands_over_the_size_limit_is_refused(alice_api, base_model, adapter_dirs, settings):
    settings.EXPERT_MAX_UPLOAD_BYTES = 3000
    padding = zipfile.ZipInfo("adapter/adapter_config.json")
    padding.compress_type = zipfile.ZIP_DEFLATED
    config = (adapter_dirs["qv"] / CONFIG).read_bytes() + b" " * 200_000
    archive = zip_with([(padding, config), ("adapter/adapter_model.safetensors", b"x")])
    assert archive.size < 3000

    refused(upload_expert(alice_api, files={"adapter_archive": archive}), 413, "too large")


# --- archives may not escape their folder


def test_an_archive_member_with_dotdot_is_refused(alice_api, base_model, adapter_dirs):
    members = good_members(adapter_dirs["qv"])
    archive = zip_with([("adapter/../../adapter_config.json", members[0][1]), members[1]])

    refused(upload_expert(alice_api, files={"adapter_archive": archive}), 400, "'..'")


def test_an_archive_member_with_an_absolute_path_is_refused(alice_api, base_model, adapter_dirs):
    members = good_members(adapter_dirs["qv"])
    archive = zip_with([(zipfile.ZipInfo("/tmp/adapter/adapter_config.json"), members[0][1]), members[1]])

    refused(upload_expert(alice_api, files={"adapter_archive": archive}), 400, "absolute path")


def test_a_symlink_in_a_zip_is_refused(alice_api, base_model, adapter_dirs):
    link = zipfile.ZipInfo("adapter/adapter_config.json")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = zip_with([(link, b"/etc/passwd"), good_members(adapter_dirs["qv"])[1]])

    refused(upload_expert(alice_api, files={"adapter_archive": archive}), 400, "symbolic link")


@pytest.mark.parametrize("kind, member_type, words", [
    ("symlink", tarfile.SYMTYPE, "symbolic link"),
    ("hardlink", tarfile.LNKTYPE, "hard link"),
    ("device", tarfile.CHRTYPE, "device"),
])
def test_links_and_devices_in_a_tar_are_refused(alice_api, base_model, adapter_dirs, kind, member_type, words):
    special = tarfile.TarInfo("adapter/adapter_config.json")
    special.type = member_type
    special.linkname = "/etc/passwd"
    weights = tarfile.TarInfo("adapter/adapter_model.safetensors")
    archive = tar_with([(special, b""), (weights, (adapter_dirs["qv"] / WEIGHTS).read_bytes())])

    refused(upload_expert(alice_api, files={"adapter_archive": archive}), 400, words, "only regular files")


def test_a_corrupt_archive_is_refused(alice_api, base_model):
    archive = SimpleUploadedFile("adapter.zip", b"PK\x03\x04 this is not really a zip file")

    refused(upload_expert(alice_api, files={"adapter_archive": archive}), 400, "corrupt")


# --- broken safetensors


def test_a_truncated_safetensors_file_is_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    data = (directory / WEIGHTS).read_bytes()
    (directory / WEIGHTS).write_bytes(data[:-100])

    refused(upload_expert(alice_api, directory), 400, "truncated")


def test_a_safetensors_header_longer_than_the_file_is_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    data = (directory / WEIGHTS).read_bytes()
    (directory / WEIGHTS).write_bytes((10**9).to_bytes(8, "little") + data[8:])

    refused(upload_expert(alice_api, directory), 400, "header length", "truncated or corrupt")


def test_a_safetensors_header_that_is_not_json_is_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    data = bytearray((directory / WEIGHTS).read_bytes())
    data[8:20] = b"#garbage!!#{"
    (directory / WEIGHTS).write_bytes(bytes(data))

    refused(upload_expert(alice_api, directory), 400, "header is not valid JSON")


def test_offsets_outside_the_file_are_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    data = (directory / WEIGHTS).read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    first = sorted(k for k in header if k != "__metadata__")[0]
    header[first]["data_offsets"] = [0, 10**7]
    raw = json.dumps(header).encode()
    (directory / WEIGHTS).write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length:])

    refused(upload_expert(alice_api, directory), 400, first)


# --- the model card and the form


def test_front_matter_disagreeing_with_the_form_is_refused(alice_api, base_model, adapter_dirs):
    card = "---\nlicense: MIT\nbase_model: mosaic-tiny\n---\nA card.\n"

    response = upload_expert(alice_api, adapter_dirs["qv"], spdx_id="Apache-2.0", model_card=card)

    refused(response, 400, "license", "'MIT'", "'Apache-2.0'")


def test_front_matter_that_is_not_yaml_is_refused(alice_api, base_model, adapter_dirs):
    card = "---\nlicense: [unclosed\n---\n"

    refused(upload_expert(alice_api, adapter_dirs["qv"], model_card=card), 400, "not valid YAML")


def test_front_matter_cannot_construct_python_objects(alice_api, base_model, adapter_dirs):
    card = "---\nlicense: !!python/object/apply:os.system ['echo pwned']\n---\n"

    refused(upload_expert(alice_api, adapter_dirs["qv"], model_card=card), 400, "not valid YAML")


def test_an_unknown_base_model_is_refused(alice_api, base_model, adapter_dirs):
    refused(upload_expert(alice_api, adapter_dirs["qv"], base_model="gpt-17"), 400, "gpt-17", "mosaic-tiny")


def test_a_missing_weights_file_is_refused(alice_api, base_model, adapter_dirs):
    files = adapter_files(adapter_dirs["qv"])
    del files["adapter_model"]

    refused(upload_expert(alice_api, files=files), 400, "two files")


def test_a_bad_license_id_is_refused(alice_api, base_model, adapter_dirs):
    refused(upload_expert(alice_api, adapter_dirs["qv"], spdx_id="my license!"), 400, "SPDX")


def test_a_refused_new_version_leaves_the_expert_as_it_was(alice_api, base_model, adapter_dirs, adapter_copy):
    from tests.marketplace.catalog.support import stored_files
    from marketplace.models import ExpertVersion

    expert_id = upload_expert(alice_api, adapter_dirs["qv"]).json()["id"]
    files_before = stored_files()
    directory = edit_config(adapter_copy("qv2"), target_modules=["q_proj", "qkv_proj"])

    response = upload_version(alice_api, expert_id, directory)

    assert response.status_code == 400
    assert "qkv_proj" in error_message(response)
    assert stored_files() == files_before
    assert ExpertVersion.objects.count() == 1


class Booby:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("filename", ["adapter_model.safetensors", "adapter_model.bin"])
def test_a_booby_trapped_pickle_is_never_unpickled(alice_api, base_model, adapter_dirs, tmp_path, filename):
    import pickle

    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Booby(marker), protocol=4)
    pickle.loads(payload)  # the trap works when something does unpickle it
    assert marker.exists()
    marker.unlink()

    response = upload_expert(alice_api, files={
        "adapter_config": (adapter_dirs["qv"] / CONFIG).open("rb"),
        "adapter_model": SimpleUploadedFile(filename, payload),
    })

    refused(response, 400, "pickle")
    assert not marker.exists()
