"""C2SP tlog-checkpoint bodies (https://c2sp.org/tlog-checkpoint): origin, tree size, base64 root."""
import base64
import binascii
from dataclasses import dataclass

from ledger.signing import NoteError, Verifier


@dataclass(frozen=True)
class CheckpointBody:
    origin: str
    tree_size: int
    root_hash: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root_hash).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> "CheckpointBody":
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is an origin, a tree size and a root hash, one per line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError(f"bad checkpoint origin or size: {origin!r}, {size!r}")
        try:
            root_hash = base64.b64decode(root, validate=True)
        except binascii.Error as exc:
            raise NoteError(f"bad checkpoint root hash {root!r}") from exc
        if len(root_hash) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        return cls(origin=origin, tree_size=int(size), root_hash=root_hash)


def open_checkpoint(note: str, verifier: Verifier) -> CheckpointBody:
    """The checkpoint in a signed note, if the verifier's signature holds; NoteError otherwise."""
    return CheckpointBody.parse(verifier.open(note))
