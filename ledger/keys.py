"""The ledger's signing keys over time.

A rotation is a ledger entry of kind `ledger.key_rotated` whose payload names the old and the new verifier key and
carries a signed note over

    <origin>
    key rotation
    old <old verifier key>
    new <new verifier key>

signed by the old key (the key in office vouches for its successor) and by the new key (its holder has it). The
checkpoint that first covers the rotation entry is signed by the old key; from then on the new key signs.

So key k (0 being the first) is valid for checkpoints of tree sizes [start_k, end_k], where start_0 = 0,
end_k = r_k + 1 = start_(k+1) and r_k is the sequence of the k-th rotation: the checkpoint of size r_k + 1 may
carry either signature, any other only its own period's. The first key is the first rotation's old key (or, with no
rotation, the key the ledger is verified against). `ledger verify` rebuilds this history from the entries as it
reads them and refuses a checkpoint signed by a key outside its validity.
"""
import json
from dataclasses import dataclass

from ledger.checkpoints import CheckpointBody
from ledger.signing import NoteError, Signer, Verifier, split_note

ROTATION_KIND = "ledger.key_rotated"


def rotation_text(*, origin: str, old_key: str, new_key: str) -> str:
    return f"{origin}\nkey rotation\nold {old_key}\nnew {new_key}\n"


def rotation_payload(*, origin: str, old: Signer, new: Signer) -> dict:
    text = rotation_text(origin=origin, old_key=old.verifier_key, new_key=new.verifier_key)
    signed_by_old = old.sign(text)
    new_line = new.sign(text)[len(text) + 1:]  # "— name base64\n"
    return {"old_key": old.verifier_key, "new_key": new.verifier_key, "note": signed_by_old + new_line}


@dataclass
class KeyPeriod:
    verifier_key: str
    first_size: int
    last_size: int | None = None  # None: the key in office
    retired_by: int | None = None  # sequence of the rotation entry that retired it

    @property
    def key_id(self) -> str:
        return self.verifier_key.split("+")[1]

    def covers(self, size: int) -> bool:
        return self.first_size <= size and (self.last_size is None or size <= self.last_size)


class KeyHistory:
    """The keys in office, in order, rebuilt from rotation entries (each checked: see `rotate`)."""

    def __init__(self, first_key: str):
        Verifier.parse(first_key)
        self.periods = [KeyPeriod(verifier_key=first_key.strip(), first_size=0)]

    @property
    def current(self) -> str:
        return self.periods[-1].verifier_key

    def rotate(self, *, sequence: int, payload: dict) -> None:
        """Take the rotation recorded at `sequence`; NoteError if it is not a rotation from the key in office to a
        new key, signed by both."""
        if not isinstance(payload, dict) or not all(isinstance(payload.get(k), str) for k in ("old_key", "new_key", "note")):
            raise NoteError("a key rotation names old_key and new_key and carries a signed note")
        old_key, new_key = payload["old_key"].strip(), payload["new_key"].strip()
        if old_key != self.current:
            raise NoteError(f"the rotation retires {old_key}, but the key in office is {self.current}")
        if new_key in {p.verifier_key for p in self.periods}:
            raise NoteError("the rotation's new key was already used by this ledger")
        text_by_old = Verifier.parse(old_key).open(payload["note"])
        text_by_new = Verifier.parse(new_key).open(payload["note"])
        origin = text_by_old.split("\n", 1)[0]
        if not text_by_old == text_by_new == rotation_text(origin=origin, old_key=old_key, new_key=new_key):
            raise NoteError("the rotation's signed note does not name its old and new keys")
        self.periods[-1].last_size = sequence + 1
        self.periods[-1].retired_by = sequence
        self.periods.append(KeyPeriod(verifier_key=new_key, first_size=sequence + 1))

    def open_checkpoint(self, note: str) -> CheckpointBody:
        """The checkpoint in `note` if it is signed by a key valid at its tree size; NoteError naming why not."""
        text, signatures = split_note(note)
        body = CheckpointBody.parse(text)
        for period in self.periods:
            if period.covers(body.tree_size):
                try:
                    return CheckpointBody.parse(Verifier.parse(period.verifier_key).open(note))
                except NoteError as exc:
                    if "carries no signature" not in str(exc):
                        raise
        signers = {blob[:4].hex() for _, blob in signatures}
        known = [p for p in self.periods if p.key_id in signers]
        if known:
            period = known[0]
            until = "now" if period.last_size is None else f"size {period.last_size}"
            raise NoteError(
                f"signed by key {period.key_id}, valid for tree sizes {period.first_size} to {until}, "
                f"not at size {body.tree_size}"
            )
        raise NoteError(f"the note carries no signature by the key in office at size {body.tree_size}")

    def as_list(self) -> list[dict]:
        return [
            {"verifier_key": p.verifier_key, "key_id": p.key_id, "first_size": p.first_size,
             "last_size": p.last_size, "retired_by_entry": p.retired_by}
            for p in self.periods
        ]


def first_key(rotation_payload_bytes: bytes | None, fallback: str) -> str:
    """The ledger's first key: the first rotation's old key, or `fallback` when there was no rotation."""
    if rotation_payload_bytes is None:
        return fallback
    try:
        payload = json.loads(bytes(rotation_payload_bytes))
        return payload["old_key"] if isinstance(payload.get("old_key"), str) else fallback
    except (ValueError, TypeError, AttributeError):
        return fallback


def signature_key_ids(note: str) -> list[str]:
    """The key IDs (hex) of a signed note's signatures."""
    return [blob[:4].hex() for _, blob in split_note(note)[1]]
