"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519, and the ledger's key.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
"— <key name> <base64(4-byte key ID || 64-byte Ed25519 signature)>\\n" over the text.
Key ID = first 4 bytes of SHA-256(key name || 0x0A || 0x01 || 32-byte public key).
Verifier key = "<key name>+<key ID, 8 hex digits>+<base64(0x01 || public key)>".
"""
import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings

ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash, space


class NoteError(ValueError):
    pass


def key_id(name: str, public_key: bytes, key_type: int = ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public_key).digest()[:4]


def _check_key_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, with no spaces and no '+'")


def parse_vkey(text: str, *, key_type: int, what: str) -> tuple[str, bytes, bytes]:
    """(name, key ID, 32-byte public key) of "<name>+<key ID hex>+<base64(type || public key)>", checking the
    type byte and that the ID is key_id(name, public key, type)."""
    try:
        name, hex_id, encoded = text.strip().split("+", 2)
        raw = base64.b64decode(encoded, validate=True)
        wanted_id = bytes.fromhex(hex_id)
    except (ValueError, binascii.Error) as exc:
        raise NoteError(f"not a {what} of the form name+keyid+base64: {text!r}") from exc
    if len(raw) != 33 or raw[0] != key_type:
        raise NoteError(f"the {what} is not of key type 0x{key_type:02x} with 32 bytes of Ed25519 public key")
    if len(wanted_id) != 4 or key_id(name, raw[1:], key_type) != wanted_id:
        raise NoteError(f"the {what}'s ID does not match its name and public key")
    return name, wanted_id, raw[1:]


def verifier_key(name: str, public_key: bytes, key_type: int = ED25519) -> str:
    _check_key_name(name)
    encoded = base64.b64encode(bytes([key_type]) + public_key).decode()
    return f"{name}+{key_id(name, public_key, key_type).hex()}+{encoded}"


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> "Verifier":
        return cls(*parse_vkey(text, key_type=ED25519, what="verifier key"))

    def open(self, note: str) -> str:
        """The note's text if one of its signatures is this key's and valid; NoteError otherwise."""
        text, signatures = split_note(note)
        public = Ed25519PublicKey.from_public_bytes(self.public_key)
        for name, blob in signatures:
            if name != self.name or blob[:4] != self.key_id:
                continue
            try:
                public.verify(blob[4:], text.encode())
            except InvalidSignature as exc:
                raise NoteError(f"the signature by {name} does not verify") from exc
            return text
        raise NoteError(f"the note carries no signature by {self.name}")


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(text, [(key name, key ID || signature)]) of a signed note; NoteError if malformed."""
    if not note.endswith("\n") or "\n\n" not in note:
        raise NoteError("a signed note is text, a blank line and signature lines, ending in a newline")
    cut = note.rindex("\n\n")
    text, block = note[: cut + 1], note[cut + 2 :]
    signatures = []
    for line in block.splitlines():
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"not a signature line: {line!r}")
        try:
            name, encoded = line[len(SIGNATURE_PREFIX) :].split(" ")
            blob = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise NoteError(f"not a signature line: {line!r}") from exc
        if len(blob) < 5:
            raise NoteError(f"signature too short in {line!r}")
        signatures.append((name, blob))
    if not signatures:
        raise NoteError("the note has no signature")
    return text, signatures


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.name, self.public_key)

    def sign(self, text: str) -> str:
        if not text.endswith("\n"):
            raise NoteError("a note's text ends with a newline")
        signature = self.private_key.sign(text.encode())
        blob = base64.b64encode(key_id(self.name, self.public_key) + signature).decode()
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {blob}\n"


def _seed_from_file(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = os.urandom(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _seed_from_file(path)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(seed).decode() + "\n")
        return seed
    return base64.b64decode(path.read_text().strip(), validate=True)


def ledger_signer() -> Signer:
    """The ledger's key: settings.LEDGER_SIGNING_KEY (base64 Ed25519 seed), else the seed in
    settings.LEDGER_SIGNING_KEY_FILE (created with a fresh key, mode 0600, when missing).
    Its name is settings.LEDGER_KEY_NAME, by default the log's origin."""
    seed = (
        base64.b64decode(settings.LEDGER_SIGNING_KEY, validate=True)
        if settings.LEDGER_SIGNING_KEY
        else _seed_from_file(Path(settings.LEDGER_SIGNING_KEY_FILE))
    )
    if len(seed) != 32:
        raise NoteError("the ledger signing key must be a 32-byte Ed25519 seed, base64-encoded")
    name = getattr(settings, "LEDGER_KEY_NAME", "") or settings.LEDGER_ORIGIN
    _check_key_name(name)
    return Signer(name=name, private_key=Ed25519PrivateKey.from_private_bytes(seed))
