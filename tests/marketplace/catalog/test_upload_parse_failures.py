"""Whatever is inside an uploaded adapter's files, a parse failure is a 400 that names the file and field,
never a 500, and nothing is stored."""
import json
import struct
from pathlib import Path

import pytest

from tests.marketplace.catalog.support import assert_nothing_stored, error_message, upload_expert

pytestmark = pytest.mark.django_db

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
DEEP = "[" * 5000 + "]" * 5000


def edit_config_text(directory: Path, edit) -> Path:
    (directory / CONFIG).write_text(edit((directory / CONFIG).read_text()))
    return directory


def with_config(directory: Path, **changes) -> Path:
    return edit_config_text(directory, lambda text: json.dumps({**json.loads(text), **changes}))


def refused_naming(response, *fragments: str) -> None:
    assert response.status_code == 400, response.content
    message = error_message(response)
    for fragment in fragments:
        assert fragment in message, message
    assert_nothing_stored()


def test_a_deeply_nested_adapter_config_is_refused(alice_api, base_model, adapter_copy):
    directory = edit_config_text(adapter_copy("qv"), lambda text: text[:-1] + f', "extra": {DEEP}}}')

    refused_naming(upload_expert(alice_api, directory), CONFIG, "nested")


def test_a_deeply_nested_safetensors_header_is_refused(alice_api, base_model, adapter_copy):
    directory = adapter_copy("qv")
    header = f'{{"__metadata__": {DEEP}}}'.encode()
    (directory / WEIGHTS).write_bytes(struct.pack("<Q", len(header)) + header)

    refused_naming(upload_expert(alice_api, directory), WEIGHTS, "nested")


def test_an_integer_of_more_than_4300_digits_is_refused(alice_api, base_model, adapter_copy):
    huge = "7" * 5000
    directory = edit_config_text(adapter_copy("qv"), lambda text: text[:-1] + f', "r_big": {huge}}}')

    refused_naming(upload_expert(alice_api, directory), CONFIG, "4300")


@pytest.mark.parametrize("pattern", ["abc", {"q_proj": "x"}, {"q_proj": 0}, [4]])
def test_a_rank_pattern_that_is_not_a_map_to_ranks_is_refused(alice_api, base_model, adapter_copy, pattern):
    directory = with_config(adapter_copy("qv"), rank_pattern=pattern)

    refused_naming(upload_expert(alice_api, directory), CONFIG, "rank_pattern")


@pytest.mark.parametrize("pattern", ["abc", {"v_proj": "x"}, {"v_proj": -1}])
def test_an_alpha_pattern_that_is_not_a_map_to_numbers_is_refused(alice_api, base_model, adapter_copy,
                                                                    pattern):
    directory = with_config(adapter_copy("qv"), alpha_pattern=pattern)

    refused_naming(upload_expert(alice_api, directory), CONFIG, "alpha_pattern")


@pytest.mark.parametrize("alpha", [10**400, "16", True], ids=["huge", "string", "boolean"])
def test_a_lora_alpha_that_is_no_usable_number_is_refused(alice_api, base_model, adapter_copy, alpha):
    directory = with_config(adapter_copy("qv"), lora_alpha=alpha)

    refused_naming(upload_expert(alice_api, directory), CONFIG, "lora_alpha")


def test_a_nul_byte_in_base_model_name_or_path_is_refused(alice_api, base_model, adapter_copy):
    directory = with_config(adapter_copy("qv"), base_model_name_or_path="mosaic-tiny\x00/../etc")

    refused_naming(upload_expert(alice_api, directory), CONFIG, "base_model_name_or_path")
