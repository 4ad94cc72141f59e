"""Receiving adapter files: staging, archive safety, size limits, content addressing, storage.

An upload is written into a private staging directory first; only once every synchronous
check has passed is it moved (one atomic rename) to EXPERT_STORAGE_DIR/<sha256>/.
Leaving the `staged_adapter` block by an exception removes everything it wrote.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from django.conf import settings

from composition.experts import adapter_content_sha256 as content_sha256
from marketplace.validation import (
    ADAPTER_FILES,
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterRejected,
    looks_like_pickle,
    refuse_pickle_name,
)

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
IGNORED_MEMBERS = ("README.md",)  # peft's save_pretrained writes a model card stub next to the adapter
MAX_ARCHIVE_MEMBERS = 64
CHUNK = 1024 * 1024


@dataclass
class StagedAdapter:
    directory: Path
    sha256: str = ""
    size_bytes: int = 0


def storage_root() -> Path:
    return Path(settings.EXPERT_STORAGE_DIR)


def storage_path_for(sha256: str) -> Path:
    return storage_root() / sha256


@contextmanager
def staged_adapter(*, config_file=None, weights_file=None, archive=None) -> Iterator[StagedAdapter]:
    """Write an upload (two files, or one archive) into a fresh staging directory and hash it.

    The files are Django UploadedFile objects (anything with .name and .chunks() or .read()).
    The staging directory is removed when the block ends, whatever happens; `store` moves it away first."""
    staging = storage_root() / ".staging" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    staged = StagedAdapter(directory=staging)
    try:
        if archive is not None:
            if config_file is not None or weights_file is not None:
                raise AdapterRejected("Upload either the two adapter files or one archive, not both.")
            _extract_archive(archive, staged)
        else:
            _receive_files(config_file, weights_file, staged)
        staged.sha256 = content_sha256(staging)
        yield staged
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def store(staged: StagedAdapter) -> tuple[Path, bool]:
    """Move the staged adapter to its content address. Returns (path, created): identical content
    already stored (by anyone) is shared, and the staging copy is dropped."""
    final = storage_path_for(staged.sha256)
    if final.exists():
        return final, False
    for name in ADAPTER_FILES:
        os.chmod(staged.directory / name, 0o444)
    try:
        os.rename(staged.directory, final)
    except OSError:
        if final.exists():  # a concurrent upload of the same content won the rename
            return final, False
        raise
    return final, True


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _max_bytes() -> int:
    return int(settings.EXPERT_MAX_UPLOAD_BYTES)


def _too_large(size: int) -> AdapterRejected:
    return AdapterRejected(
        f"The adapter is too large: {size} bytes or more, the limit is {_max_bytes()} bytes.",
        code="too_large", status_code=413,
    )


def _copy_limited(source: BinaryIO, target: Path, staged: StagedAdapter) -> None:
    """Copy a stream, counting towards the size limit; stop as soon as it is exceeded."""
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            staged.size_bytes += len(chunk)
            if staged.size_bytes > _max_bytes():
                raise _too_large(staged.size_bytes)
            out.write(chunk)


def _receive_files(config_file, weights_file, staged: StagedAdapter) -> None:
    if config_file is None or weights_file is None:
        raise AdapterRejected(
            f"Upload the adapter as two files ({CONFIG_FILE} and {WEIGHTS_FILE}) "
            "or as one .zip/.tar.gz archive."
        )
    for upload in (config_file, weights_file):
        refuse_pickle_name(upload.name or "")
    declared = (config_file.size or 0) + (weights_file.size or 0)
    if declared > _max_bytes():
        raise _too_large(declared)
    if not (weights_file.name or "").endswith(".safetensors"):
        raise AdapterRejected(f"The adapter weights must be a .safetensors file, not {weights_file.name!r}.")
    for upload, name in ((config_file, CONFIG_FILE), (weights_file, WEIGHTS_FILE)):
        upload.seek(0)
        _copy_limited(upload, staged.directory / name, staged)
    _refuse_pickled_weights(staged.directory / WEIGHTS_FILE)


def _refuse_pickled_weights(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(8)
    if looks_like_pickle(head):
        raise AdapterRejected(
            f"{WEIGHTS_FILE} is a pickle/PyTorch file, not safetensors. Mosaic never unpickles uploads: "
            "save the adapter with safe_serialization=True."
        )


def _safe_member_path(name: str) -> PurePosixPath:
    """An archive member's path, refused if it could land outside the archive's folder."""
    if not name or "\\" in name or "\x00" in name:
        raise AdapterRejected(f"Archive member {name!r} has an unsafe name.")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise AdapterRejected(
            f"Archive member {name!r} has an absolute path; members must stay inside the archive."
        )
    if ".." in path.parts:
        raise AdapterRejected(f"Archive member {name!r} escapes its folder with '..'.")
    return path


def _pick_members(entries: list[tuple[str, str]]) -> dict[str, str]:
    """From (member name, kind) pairs, choose the adapter files: all at the root or all in one folder.
    Returns {canonical file name: member name}."""
    if len(entries) > MAX_ARCHIVE_MEMBERS:
        raise AdapterRejected(
            f"The archive holds {len(entries)} members; at most {MAX_ARCHIVE_MEMBERS} are allowed."
        )
    chosen: dict[str, str] = {}
    folders = set()
    for name, kind in entries:
        path = _safe_member_path(name)
        if kind == "dir":
            continue
        if kind != "file":
            raise AdapterRejected(
                f"Archive member {name!r} is a {kind}; only regular files are accepted (no links or devices)."
            )
        refuse_pickle_name(path.name)
        if path.name in IGNORED_MEMBERS or path.name.startswith("._") or "__MACOSX" in path.parts:
            continue
        if path.name not in ADAPTER_FILES:
            raise AdapterRejected(
                f"Unexpected file {name!r} in the archive; "
                f"it may hold only {CONFIG_FILE}, {WEIGHTS_FILE} and README.md."
            )
        if path.name in chosen:
            raise AdapterRejected(f"The archive holds more than one {path.name}.")
        chosen[path.name] = name
        folders.add(path.parent)
    missing = [name for name in ADAPTER_FILES if name not in chosen]
    if missing:
        raise AdapterRejected(
            f"The archive has no {missing[0]}; it must hold {CONFIG_FILE} and {WEIGHTS_FILE}."
        )
    if len(folders) > 1:
        raise AdapterRejected(f"{CONFIG_FILE} and {WEIGHTS_FILE} must be in the same folder of the archive.")
    return chosen


def _extract_archive(archive, staged: StagedAdapter) -> None:
    name = (archive.name or "").lower()
    refuse_pickle_name(name)
    if not name.endswith(ARCHIVE_SUFFIXES):
        raise AdapterRejected(f"Archives must be .zip or .tar.gz, not {archive.name!r}.")
    if (archive.size or 0) > _max_bytes():
        raise _too_large(archive.size)
    archive.seek(0)
    if name.endswith(".zip"):
        _extract_zip(archive, staged)
    else:
        _extract_tar(archive, staged)
    _refuse_pickled_weights(staged.directory / WEIGHTS_FILE)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip tool recorded no Unix file type
    if file_type == stat.S_IFLNK:
        return "symbolic link"
    if info.is_dir() or file_type == stat.S_IFDIR:
        return "dir"
    if file_type not in (0, stat.S_IFREG):
        return "special file"
    return "file"


def _extract_zip(archive, staged: StagedAdapter) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            infos = bundle.infolist()
            chosen = _pick_members([(info.filename, _zip_kind(info)) for info in infos])
            declared = sum(info.file_size for info in infos if info.filename in chosen.values())
            if declared > _max_bytes():
                raise _too_large(declared)
            for canonical, member in chosen.items():
                with bundle.open(member) as source:
                    _copy_limited(source, staged.directory / canonical, staged)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as error:
        raise AdapterRejected(f"The .zip archive is corrupt or unsupported ({error}).") from None


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.isfile():
        return "file"
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isdev():
        return "device or fifo"
    return "special member"


def _extract_tar(archive, staged: StagedAdapter) -> None:
    try:
        with tarfile.open(fileobj=archive, mode="r:gz") as bundle:
            members = []
            for member in bundle:
                members.append(member)
                if len(members) > MAX_ARCHIVE_MEMBERS:
                    break
            chosen = _pick_members([(m.name, _tar_kind(m)) for m in members])
            by_name = {m.name: m for m in members}
            declared = sum(by_name[name].size for name in chosen.values())
            if declared > _max_bytes():
                raise _too_large(declared)
            for canonical, member in chosen.items():
                source = bundle.extractfile(by_name[member])
                _copy_limited(source, staged.directory / canonical, staged)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise AdapterRejected(f"The .tar.gz archive is corrupt or unsupported ({error}).") from None
