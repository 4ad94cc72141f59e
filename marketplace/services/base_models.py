"""Base models: read the facts of a local model directory and register it (writes).

A base model is any decoder that transformers provides as a *ForCausalLM class (Llama, Qwen2, Mistral, Phi-3,
Gemma...): its facts come from config.json, generation_config.json, the tokenizer's chat template and the
safetensors headers, never from module names. A GGUF file is converted once into a directory first."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction

from gpu_workers import model_import
from ledger.services import record_event
from marketplace.model_cards import parse_model_card
from marketplace.models import BaseModel
from marketplace.services.experts import SPDX_ID
from domain.errors import Conflict, DomainError
from marketplace.ledger_refs import SYSTEM_ACTOR, user_ref

BASE_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # also a directory and a queue name
LINEAR_SUFFIX = ".weight"
HASH_CHUNK = 1024 * 1024


def directory_sha256(directory: Path) -> str:
    """sha256 over every file in the directory, in sorted relative-path order: path NUL size NUL content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def linear_module_shapes(directory: Path) -> dict[str, list[int]]:
    """{module name: [out_features, in_features]} for every 2-D "*.weight" tensor except embeddings,
    read from the safetensors headers only (no weights are loaded)."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise DomainError(
            f"{directory} holds no .safetensors weights (save the model with safe_serialization=True)."
        )
    shapes: dict[str, list[int]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="np") as handle:
                for key in handle.keys():
                    shape = handle.get_slice(key).get_shape()
                    if key.endswith(LINEAR_SUFFIX) and len(shape) == 2 and "embed" not in key:
                        shapes[key[: -len(LINEAR_SUFFIX)]] = [int(shape[0]), int(shape[1])]
        except Exception as error:  # safetensors raises several error types on corrupt files
            raise DomainError(f"{path.name} cannot be read as safetensors: {error}") from None
    return dict(sorted(shapes.items()))


def _read_json(path: Path) -> dict:
    """A JSON object from path, {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DomainError(f"{path} is not valid JSON.", param="path") from None
    if not isinstance(data, dict):
        raise DomainError(f"{path} must hold a JSON object.", param="path")
    return data


def causal_lm_architecture(config: dict) -> str:
    """The config's model class, which must be a causal LM that transformers provides (read from transformers'
    lazy name list: torch is not imported)."""
    import transformers

    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures and isinstance(architectures[0], str) else None
    if architecture is None:
        raise DomainError("config.json names no architectures (e.g. [\"LlamaForCausalLM\"]).", param="path")
    if not architecture.endswith("ForCausalLM") or architecture not in dir(transformers):
        raise DomainError(
            f"{architecture} is not a causal language model that transformers provides "
            "(a base model must be a decoder such as LlamaForCausalLM or Qwen2ForCausalLM).", param="path"
        )
    return architecture


def read_chat_template(directory: Path) -> str:
    """The tokenizer's chat template: chat_template.jinja (transformers 5) or tokenizer_config.json; "" if none."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = _read_json(directory / "tokenizer_config.json").get("chat_template") or ""
    if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default") or ""
    return template if isinstance(template, str) else ""


def read_end_token_ids(config: dict, generation_config: dict) -> list[int]:
    """Every eos id the model declares (an instruct model ends its turn with one of them, e.g. <|im_end|>)."""
    ids: set[int] = set()
    for source in (config, generation_config):
        value = source.get("eos_token_id")
        for token_id in value if isinstance(value, list) else [value]:
            if isinstance(token_id, int) and not isinstance(token_id, bool):
                ids.add(token_id)
    return sorted(ids)


def read_base_model_facts(path: str | Path) -> dict:
    """The facts of a base model directory (config.json + safetensors), read without loading weights."""
    directory = Path(path).resolve()
    if not directory.is_dir():
        raise DomainError(f"{directory} is not a directory.", param="path")
    if not (directory / "config.json").is_file():
        raise DomainError(f"{directory} has no config.json.", param="path")
    config = _read_json(directory / "config.json")
    try:
        facts = {
            "architecture": causal_lm_architecture(config),
            "hidden_size": int(config["hidden_size"]),
            "num_layers": int(config["num_hidden_layers"]),
            "vocab_size": int(config["vocab_size"]),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise DomainError(f"config.json lacks a usable {error} entry.", param="path") from None
    context_length = config.get("max_position_embeddings")
    facts["context_length"] = context_length if isinstance(context_length, int) and context_length > 0 else None
    facts["chat_template"] = read_chat_template(directory)
    facts["end_token_ids"] = read_end_token_ids(config, _read_json(directory / "generation_config.json"))
    facts["module_shapes"] = linear_module_shapes(directory)
    facts["content_hash"] = directory_sha256(directory)
    facts["local_path"] = str(directory)
    return facts


def clean_license(license: str | None) -> str:
    """An SPDX id, or "" when the license is not stated."""
    license = (license or "").strip()
    if license and not SPDX_ID.match(license):
        raise DomainError(f"{license!r} is not an SPDX license id (for example Apache-2.0).", param="license")
    return license


def license_from_model_card(directory: Path) -> str:
    """The license in the directory's README.md front matter (Hugging Face model cards carry one), or ""."""
    card = directory / "README.md"
    return parse_model_card(card.read_text(errors="replace")).get("license", "") if card.is_file() else ""


def _refuse_taken_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise DomainError("A base model needs a name.", param="name")
    if not BASE_MODEL_NAME.match(name):
        raise DomainError(f"{name!r} is not a base model name: use letters, digits, '.', '_' and '-'.", param="name")
    if BaseModel.objects.filter(name=name).exists():
        raise Conflict(f"A base model named {name!r} is already registered.", param="name")
    return name


def base_model_register(*, name: str, path: str | Path, license: str = "", registered_by=None) -> BaseModel:
    """Register a model directory. The license is the given SPDX id, else the one its model card states."""
    name = _refuse_taken_name(name)
    facts = read_base_model_facts(path)
    license = clean_license(license or license_from_model_card(Path(facts["local_path"])))
    with transaction.atomic():
        base_model = BaseModel.objects.create(name=name, license=license, registered_by=registered_by, **facts)
        record_event(
            kind="base_model.registered",
            payload={"base_model": base_model.ledger_ref, "name": name,
                     "architecture": facts["architecture"], "content_hash": facts["content_hash"],
                     "license": license, "context_length": facts["context_length"]},
            actor=user_ref(registered_by) if registered_by else SYSTEM_ACTOR,
        )
    return base_model


def base_model_register_gguf(*, name: str, gguf_path: str | Path, license: str = "",
                             registered_by=None) -> BaseModel:
    """Convert a GGUF file into BASE_MODEL_DIR/<name> and register that directory. The license is the given
    SPDX id, else the GGUF's general.license. A refused file leaves nothing behind."""
    name = _refuse_taken_name(name)
    try:
        license = clean_license(license or model_import.read_gguf_license(gguf_path))
        out_dir = Path(settings.BASE_MODEL_DIR) / name
        with model_import.conversion_lock(out_dir):
            if out_dir.exists():
                raise Conflict(f"{out_dir} already exists; register it with --path, or remove it.", param="name")
            model_import.convert_gguf(gguf_path, out_dir)
    except model_import.ModelImportError as error:
        raise DomainError(str(error), param="gguf") from None
    try:
        return base_model_register(name=name, path=out_dir, license=license, registered_by=registered_by)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def base_model_register_default(*, registered_by=None) -> BaseModel:
    """The bundled default base model (SmolLM2-135M-Instruct, Apache-2.0), converted into BASE_MODEL_DIR once
    and registered once: later calls return the registered model."""
    existing = BaseModel.objects.filter(name=model_import.DEFAULT_BASE_MODEL_NAME).first()
    if existing is not None:
        return existing
    try:
        directory = model_import.ensure_default_base_model(settings.BASE_MODEL_DIR)
    except model_import.ModelImportError as error:
        raise DomainError(str(error)) from None
    return base_model_register(name=model_import.DEFAULT_BASE_MODEL_NAME, path=directory,
                               license=model_import.DEFAULT_BASE_MODEL_LICENSE, registered_by=registered_by)
