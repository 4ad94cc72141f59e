"""A witness, as in Certificate Transparency: a party outside the log that follows the log's signed
checkpoints, checks that each new one extends the last one it cosigned (an RFC 9162 consistency
proof), and cosigns it in the C2SP tlog-cosignature format (https://c2sp.org/tlog-cosignature,
cosignature/v1). It keeps its own store, so a log that later loses its tail or rewrites its history
(even with every hash recomputed and every checkpoint re-signed) no longer matches the witness.

A cosignature is a signed-note signature line "— <witness name> base64(key ID || timestamp || sig)":
- key ID = SHA-256(<name> || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4];
- timestamp = 8 bytes, big-endian, POSIX seconds when the witness cosigned;
- sig = Ed25519 over "cosignature/v1\\ntime <timestamp>\\n" followed by the checkpoint's text.
The witness's verifier key is "<name>+<key ID hex>+base64(0x04 || public key)".

The store (a directory, one log per store):
- witness-key: the witness's Ed25519 seed, base64 (mode 0600, made on first use);
- witness.vkey: the witness's verifier key, for the log's clients;
- log.vkey: the log's verifier key, pinned at the first cosignature;
- checkpoint: the latest checkpoint it cosigned: the log's signed note with the cosignature line added.

A log is read from this project's database, another database (a DATABASE URL), or an export
(`ledger export` bundle, .tar.gz, or the same layout unpacked in a directory).
"""
import base64
import binascii
import contextlib
import fcntl
import io
import json
import os
import struct
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection

from ledger import merkle, stored_tree
from ledger.checkpoints import CheckpointBody, open_checkpoint
from ledger.signing import SIGNATURE_PREFIX, NoteError, Verifier, key_id, parse_vkey, split_note, verifier_key

COSIGNATURE_V1 = 0x04
DEFAULT_WITNESS_NAME = "mosaic.local/witness"


class WitnessError(Exception):
    """The witness could not do its work: a store or a log it cannot read."""


class WitnessRefused(WitnessError):
    """The log's checkpoint is not one the witness may cosign: unsigned, smaller, or inconsistent."""


# --- cosignatures (C2SP tlog-cosignature, cosignature/v1) --------------------------------------------


def cosigned_message(checkpoint_text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


@dataclass(frozen=True)
class Cosigner:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.name, self.public_key, COSIGNATURE_V1)

    def cosign(self, note: str, timestamp: int) -> str:
        """The note with this witness's cosignature line added."""
        text, _ = split_note(note)
        signature = self.private_key.sign(cosigned_message(text, timestamp))
        blob = key_id(self.name, self.public_key, COSIGNATURE_V1) + struct.pack(">Q", timestamp) + signature
        return f"{note}{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class CosignatureVerifier:
    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> "CosignatureVerifier":
        return cls(*parse_vkey(text, key_type=COSIGNATURE_V1, what="witness key"))

    def timestamp(self, note: str) -> int:
        """When this witness cosigned the note, if its cosignature holds; NoteError otherwise."""
        text, signatures = split_note(note)
        for name, blob in signatures:
            if name != self.name or blob[:4] != self.key_id:
                continue
            if len(blob) != 4 + 8 + 64:
                raise NoteError(f"the cosignature by {name} is not a timestamped Ed25519 signature")
            (timestamp,) = struct.unpack(">Q", blob[4:12])
            public = Ed25519PublicKey.from_public_bytes(self.public_key)
            try:
                public.verify(blob[12:], cosigned_message(text, timestamp))
            except InvalidSignature as exc:
                raise NoteError(f"the cosignature by {name} does not verify") from exc
            return timestamp
        raise NoteError(f"the note carries no cosignature by {self.name}")


# --- the witness's store -------------------------------------------------------------------------------


def _write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@dataclass(frozen=True)
class Cosigned:
    """The latest checkpoint a witness cosigned."""

    note: str
    checkpoint: CheckpointBody
    timestamp: int


class WitnessStore:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    @property
    def _key_file(self) -> Path:
        return self.directory / "witness-key"

    def cosigner(self, *, name: str = DEFAULT_WITNESS_NAME) -> Cosigner:
        """The witness's key, made on first use (`name` names a new key; a stored key keeps its name)."""
        if not self._key_file.exists():
            if not name or "+" in name or any(c.isspace() for c in name):
                raise WitnessError(f"witness name {name!r} must be non-empty, with no spaces and no '+'")
            self.directory.mkdir(parents=True, exist_ok=True)
            seed = os.urandom(32)
            _write_atomically(self._key_file, base64.b64encode(seed).decode() + "\n", mode=0o600)
            cosigner = Cosigner(name=name, private_key=Ed25519PrivateKey.from_private_bytes(seed))
            _write_atomically(self.directory / "witness.vkey", cosigner.verifier_key + "\n")
            return cosigner
        try:
            seed = base64.b64decode(self._key_file.read_text().strip(), validate=True)
            stored = CosignatureVerifier.parse((self.directory / "witness.vkey").read_text())
            private_key = Ed25519PrivateKey.from_private_bytes(seed)
        except (OSError, ValueError, binascii.Error) as exc:
            raise WitnessError(f"the witness store {self.directory} has no usable key: {exc}") from exc
        cosigner = Cosigner(name=stored.name, private_key=private_key)
        if cosigner.public_key != stored.public_key:
            raise WitnessError(f"{self._key_file} does not hold the key that witness.vkey publishes")
        return cosigner

    def witness_verifier(self) -> CosignatureVerifier:
        try:
            return CosignatureVerifier.parse((self.directory / "witness.vkey").read_text())
        except (OSError, NoteError) as exc:
            raise WitnessError(f"{self.directory} is not a witness store: {exc}") from exc

    @contextlib.contextmanager
    def locked(self):
        """One witness run at a time on this store, so two runs cannot write their checkpoints out of order."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def log_key(self) -> str | None:
        path = self.directory / "log.vkey"
        return path.read_text().strip() if path.exists() else None

    def cosigned(self) -> Cosigned | None:
        """The latest checkpoint this witness cosigned, both signatures checked; None before the first."""
        path = self.directory / "checkpoint"
        if not path.exists():
            return None
        note = path.read_text()
        try:
            checkpoint = open_checkpoint(note, Verifier.parse(self.log_key() or ""))
            timestamp = self.witness_verifier().timestamp(note)
        except NoteError as exc:
            raise WitnessError(f"the witness's checkpoint in {path} does not verify: {exc}") from exc
        return Cosigned(note=note, checkpoint=checkpoint, timestamp=timestamp)

    def record(self, *, cosigned_note: str, log_key: str) -> None:
        if self.log_key() is None:
            _write_atomically(self.directory / "log.vkey", log_key + "\n")
        _write_atomically(self.directory / "checkpoint", cosigned_note)


# --- logs to witness -------------------------------------------------------------------------------------


class DatabaseLog:
    """A log in a Django database: this project's (no `url`) or another's, read over a connection of the
    witness's own. It publishes no verifier key in its tables: the witness is given one, or uses this
    project's."""

    def __init__(self, url: str | None = None):
        self.database = _connection_to(url) if url else connection
        self.label = "this project's database" if url is None else "the database at " + url.split("@")[-1]

    def verifier_key(self) -> str:
        from ledger.signing import ledger_signer

        return ledger_signer().verifier_key

    def latest_checkpoint(self) -> str | None:
        try:
            with self.database.cursor() as cursor:
                cursor.execute("SELECT note FROM ledger_checkpoint ORDER BY id DESC LIMIT 1")
                row = cursor.fetchone()
        except DatabaseError as exc:
            raise WitnessError(f"cannot read the checkpoints in {self.label}: {exc}") from exc
        return row[0] if row else None

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return stored_tree.consistency_proof(old_size, new_size, database=self.database)

    def close(self) -> None:
        if self.database is not connection:
            self.database.close()


def _connection_to(url: str):
    """A connection of the witness's own to the database at `url` (not one of this project's aliases)."""
    import environ
    from django.db import connections
    from django.db.utils import load_backend

    try:
        config = environ.Env.db_url_config(url)
    except Exception as exc:  # django-environ raises several types for a bad URL
        raise WitnessError(f"not a database URL: {url!r} ({exc})") from exc
    settings_dict = connections.configure_settings({DEFAULT_DB_ALIAS: config})[DEFAULT_DB_ALIAS]
    return load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias="witnessed-log")


class ExportLog:
    """An export: a `ledger export` bundle (.tar.gz) or a directory with the same layout
    (entries.jsonl, checkpoints/<id>.note, verifier-key.txt)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.label = str(self.path)

    def _read(self, name: str) -> bytes:
        try:
            if self.path.is_dir():
                return (self.path / name).read_bytes()
            with tarfile.open(self.path, "r:gz") as bundle:
                return bundle.extractfile(name).read()
        except (OSError, tarfile.TarError, KeyError, AttributeError) as exc:
            raise WitnessError(f"cannot read {name} in {self.path}: {exc}") from exc

    def verifier_key(self) -> str:
        return self._read("verifier-key.txt").decode().strip()

    def latest_checkpoint(self) -> str | None:
        try:
            if self.path.is_dir():
                notes = (self.path / "checkpoints").glob("*.note")
                names = sorted(note.relative_to(self.path).as_posix() for note in notes)
            else:
                with tarfile.open(self.path, "r:gz") as bundle:
                    members = bundle.getmembers()
                names = sorted(m.name for m in members if m.name.startswith("checkpoints/") and m.isfile())
        except (OSError, tarfile.TarError) as exc:
            raise WitnessError(f"cannot read the checkpoints in {self.path}: {exc}") from exc
        return self._read(names[-1]).decode() if names else None

    def _leaf_hashes(self) -> Iterator[bytes]:
        lines = io.BytesIO(self._read("entries.jsonl"))
        for number, line in enumerate(lines, start=1):
            try:
                yield bytes.fromhex(json.loads(line)["leaf_hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise WitnessError(f"entries.jsonl line {number} of {self.path} has no leaf hash: {exc}") from exc

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Built from the export's leaf hashes, one pass, one compact range per subtree the proof needs.
        The witness checks the proof against the two signed roots, so the export need not be trusted."""
        wanted: list[tuple[int, int]] = []
        merkle.consistency_path(old_size, new_size, lambda start, end: wanted.append((start, end)) or b"")
        ranges = {span: merkle.CompactRange() for span in wanted}
        for index, leaf in enumerate(self._leaf_hashes()):
            if index >= new_size:
                break
            for (start, end), accumulator in ranges.items():
                if start <= index < end:
                    accumulator.append(leaf)
        return [ranges[span].root() for span in wanted]

    def close(self) -> None:
        pass


@contextlib.contextmanager
def opened_log(source: str | None):
    """A log from `--log`: nothing for this project's database, a URL (scheme://...) for another
    database, or the path of an export bundle or directory."""
    if not source:
        log = DatabaseLog()
    elif "://" in source:
        log = DatabaseLog(source)
    elif Path(source).exists():
        log = ExportLog(source)
    else:
        raise WitnessError(f"--log {source!r} is neither a database URL nor an existing bundle or directory")
    try:
        yield log
    finally:
        log.close()


# --- witnessing and comparing ---------------------------------------------------------------------------


def _open_latest(log, verifier: Verifier) -> tuple[str, CheckpointBody]:
    note = log.latest_checkpoint()
    if note is None:
        raise WitnessRefused(f"the log in {log.label} has signed no checkpoint")
    try:
        return note, open_checkpoint(note, verifier)
    except NoteError as exc:
        raise WitnessRefused(
            f"the log's latest checkpoint does not verify with {verifier.name}'s key: {exc}"
        ) from exc


def check_extends(log, old: CheckpointBody, new: CheckpointBody) -> None:
    """WitnessRefused unless `new` is the same log as `old`, no smaller, and consistent with it."""
    if new.origin != old.origin:
        raise WitnessRefused(f"the log's origin is {new.origin!r}; the witness follows {old.origin!r}")
    if new.tree_size < old.tree_size:
        raise WitnessRefused(
            f"the log's latest checkpoint (size {new.tree_size}) is smaller than the one the witness "
            f"cosigned (size {old.tree_size}): entries or checkpoints were removed"
        )
    try:
        proof = log.consistency_proof(old.tree_size, new.tree_size)
    except (stored_tree.MissingNode, ValueError, DatabaseError) as exc:
        proof = None
        reason = f"the log cannot prove it: {exc}"
    else:
        reason = "history was rewritten"
    consistent = proof is not None and merkle.verify_consistency(
        old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof
    )
    if not consistent:
        raise WitnessRefused(
            f"the log's latest checkpoint (size {new.tree_size}) is not consistent with the one the witness "
            f"cosigned (size {old.tree_size}): {reason}"
        )


def witness(*, log, store: WitnessStore, log_key: str | None = None, name: str = DEFAULT_WITNESS_NAME,
            now: int | None = None) -> tuple[Cosigned, Cosigned | None]:
    """Cosign the log's latest checkpoint if it extends the last one this witness cosigned.
    Returns (now cosigned, cosigned before); WitnessRefused leaves the store unchanged.

    The log's key: the one pinned in the store, else `log_key`, else the one the log publishes
    (an export's verifier-key.txt; this project's key for a database). A `log_key` that differs
    from the pinned one is refused."""
    with store.locked():
        return _witness_locked(log=log, store=store, log_key=log_key, name=name, now=now)


def _witness_locked(*, log, store: WitnessStore, log_key: str | None, name: str, now: int | None):
    pinned = store.log_key()
    if pinned and log_key and log_key.strip() != pinned:
        raise WitnessRefused("the given --log-key is not the log key this witness follows (its log.vkey)")
    key = pinned or (log_key.strip() if log_key else log.verifier_key())
    try:
        verifier = Verifier.parse(key)
    except NoteError as exc:
        raise WitnessError(f"the log's key: {exc}") from exc
    cosigner = store.cosigner(name=name)
    before = store.cosigned()
    note, checkpoint = _open_latest(log, verifier)
    if before is not None:
        check_extends(log, before.checkpoint, checkpoint)
    timestamp = int(time.time()) if now is None else now
    cosigned_note = cosigner.cosign(note, timestamp)
    store.record(cosigned_note=cosigned_note, log_key=key)
    return Cosigned(note=cosigned_note, checkpoint=checkpoint, timestamp=timestamp), before


def compare_with_witness(*, log, store: WitnessStore) -> str | None:
    """None when the log's latest checkpoint extends the one the witness cosigned; else what does not hold.
    This is what `ledger verify --witness DIR` adds: a log that lost its tail (entries and checkpoints
    deleted) or rewrote its history (hashes recomputed, checkpoints re-signed) no longer matches."""
    try:
        cosigned = store.cosigned()
        if cosigned is None:
            return f"the witness in {store.directory} has cosigned no checkpoint yet"
        _, latest = _open_latest(log, Verifier.parse(store.log_key()))
        check_extends(log, cosigned.checkpoint, latest)
    except (WitnessError, NoteError) as exc:
        return f"witness {store.directory}: {exc}"
    return None


def witness_once(store_dir: Path | str, *, name: str = DEFAULT_WITNESS_NAME) -> Cosigned:
    """One witness over this project's own log: cosign its latest signed checkpoint (the demo calls this
    after `ledger.services.create_checkpoint()`). Raises WitnessRefused if the log went backwards."""
    cosigned, _ = witness(log=DatabaseLog(), store=WitnessStore(store_dir), name=name)
    return cosigned
