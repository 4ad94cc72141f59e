"""Base models: read architecture facts from a local directory and register it (writes)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from django.db import transaction

from ledger.services import record_event
from marketplace.models import BaseModel
from mosaic.errors import Conflict, DomainError

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
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    shape = handle.get_slice(key).get_shape()
                    if key.endswith(LINEAR_SUFFIX) and len(shape) == 2 and "embed" not in key:
                        shapes[key[: -len(LINEAR_SUFFIX)]] = [int(shape[0]), int(shape[1])]
        except Exception as error:  # safetensors raises several error types on corrupt files
            raise DomainError(f"{path.name} cannot be read as safetensors: {error}") from None
    return dict(sorted(shapes.items()))


def read_base_model_facts(path: str | Path) -> dict:
    """Architecture facts of a base model directory (config.json + safetensors), without loading weights."""
    directory = Path(path).resolve()
    if not directory.is_dir():
        raise DomainError(f"{directory} is not a directory.", param="path")
    try:
        config = json.loads((directory / "config.json").read_text())
    except FileNotFoundError:
        raise DomainError(f"{directory} has no config.json.", param="path") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DomainError(f"{directory}/config.json is not valid JSON.", param="path") from None
    try:
        facts = {
            "architecture": (config.get("architectures") or [config.get("model_type", "unknown")])[0],
            "hidden_size": int(config["hidden_size"]),
            "num_layers": int(config["num_hidden_layers"]),
            "vocab_size": int(config["vocab_size"]),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise DomainError(f"config.json lacks a usable {error} entry.", param="path") from None
    facts["module_shapes"] = linear_module_shapes(directory)
    facts["content_hash"] = directory_sha256(directory)
    facts["local_path"] = str(directory)
    return facts


def base_model_register(*, name: str, path: str | Path, registered_by=None) -> BaseModel:
    name = (name or "").strip()
    if not name:
        raise DomainError("A base model needs a name.", param="name")
    if BaseModel.objects.filter(name=name).exists():
        raise Conflict(f"A base model named {name!r} is already registered.", param="name")
    facts = read_base_model_facts(path)
    with transaction.atomic():
        base_model = BaseModel.objects.create(name=name, registered_by=registered_by, **facts)
        record_event(
            kind="base_model.registered",
            payload={"base_model": f"base_model:{base_model.pk}", "name": name,
                     "architecture": facts["architecture"], "content_hash": facts["content_hash"]},
            actor=f"user:{registered_by.pk}" if registered_by else "system",
        )
    return base_model
