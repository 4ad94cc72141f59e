#!/usr/bin/env python3
"""Verify a Mosaic ledger export bundle offline: `python3 verify.py BUNDLE.tar.gz [VERIFIER_KEY]`.

Standalone (Python 3.11 standard library + `cryptography` for Ed25519); shares no code with the
Mosaic project, so it checks the bundle independently of the software that wrote it. Pass the
verifier key published by the ledger (GET /api/ledger/verifier-key); without it the key inside the
bundle is used. Exit status 0 when everything holds, 1 naming the first thing that does not.

Key rotation: a `ledger.key_rotated` entry names the old and the new key, with a note signed by both. Key k is
valid for checkpoints of tree sizes from start_k to end_k, where start_0 = 0 and end_k = start_(k+1) = (the k-th
rotation's sequence) + 1; the first key is the first rotation's old key. A checkpoint signed by a key outside its
validity fails, and the given key must be one of the ledger's keys.
"""
import base64
import hashlib
import json
import sys
import tarfile


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def has_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(has_float(v) for v in value)
    return False


ROTATION = "ledger.key_rotated"


def note_text(note: str) -> str:
    return note[: note.rindex("\n\n") + 1]


def open_rotation(payload: dict, current: str) -> str:
    """The new key of a rotation from `current`, signed by both keys; ValueError otherwise."""
    old, new, note = payload.get("old_key"), payload.get("new_key"), payload.get("note")
    if not all(isinstance(v, str) for v in (old, new, note)) or old.strip() != current.strip():
        raise ValueError(f"it does not rotate from the key in office {current.strip()}")
    text = note_text(note)
    origin = text.split("\n", 1)[0]
    if text != f"{origin}\nkey rotation\nold {old.strip()}\nnew {new.strip()}\n":
        raise ValueError("its note does not name its keys")
    for key in (old, new):
        open_note(note, key, body=False)
    return new.strip()


def open_note(note: str, vkey: str, body: bool = True):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, key_id, key = vkey.strip().split("+", 2)
    raw = base64.b64decode(key)
    if raw[0] != 1 or len(raw) != 33:
        raise ValueError("not an Ed25519 verifier key")
    if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() != key_id:
        raise ValueError("the verifier key's ID does not match")
    cut = note.rindex("\n\n")
    text = note[: cut + 1]
    for line in note[cut + 2 :].splitlines():
        dash, signer, blob = line.split(" ")
        signature = base64.b64decode(blob)
        if dash == "\u2014" and signer == name and signature[:4].hex() == key_id:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(signature[4:], text.encode())
            if not body:
                return text
            origin, size, root = text.split("\n")[:3]
            return origin, int(size), base64.b64decode(root)
    raise ValueError(f"no signature by {name}")


def main(path: str, vkey: str | None) -> int:
    with tarfile.open(path, "r:gz") as bundle:
        vkey = (vkey or bundle.extractfile("verifier-key.txt").read().decode()).strip()
        first = vkey
        for line in bundle.extractfile("entries.jsonl"):
            if ROTATION.encode() in line and json.loads(line).get("kind") == ROTATION:
                first = str(json.loads(line)["payload"].get("old_key", vkey)).strip()
                break
        keys = [(first, 0)]  # (verifier key, first tree size it may sign); each valid up to the next one's start
        notes: dict[int, list[tuple[str, str]]] = {}
        for member in sorted(bundle.getmembers(), key=lambda m: m.name):
            if member.name.startswith("checkpoints/") and member.isfile():
                note = bundle.extractfile(member).read().decode()
                try:
                    size = int(note_text(note).split("\n")[1])
                except Exception as exc:  # any failure to read a note is a failed check
                    print(f"FAILED: checkpoint {member.name}: {exc}")
                    return 1
                notes.setdefault(size, []).append((member.name, note))
        stack: list[tuple[int, bytes]] = []  # (height, root) of complete subtrees, largest first
        prev, count = "0" * 64, 0

        def root() -> bytes:
            if not stack:
                return hashlib.sha256(b"").digest()
            r = stack[-1][1]
            for _, left in reversed(stack[:-1]):
                r = hashlib.sha256(b"\x01" + left + r).digest()
            return r

        def check(size: int) -> str | None:
            for name, note in notes.pop(size, []):
                valid = [k for i, (k, start) in enumerate(keys)
                         if start <= size and (i + 1 == len(keys) or size <= keys[i + 1][1])]
                opened, problems = None, []
                for key in valid:
                    try:
                        opened = open_note(note, key)
                        break
                    except Exception as exc:  # a key that does not open the note: try the other valid one
                        problems.append(str(exc))
                if opened is None:
                    return f"checkpoint {name}: no valid signature by the key(s) in office at size {size}: {problems}"
                if opened[1] != size or root() != opened[2]:
                    return f"checkpoint {name}: the root of the first {size} entries is not the signed root"
            return None

        problem = check(0)
        for line in bundle.extractfile("entries.jsonl"):
            if problem:
                break
            entry = json.loads(line)
            where = f"entry {entry.get('sequence')}"
            if entry["sequence"] != count:
                problem = f"entry {count} is missing"
            elif entry["prev_hash"] != prev:
                problem = f"{where}: its previous hash is not the hash of the entry before"
            elif has_float(entry["payload"]):
                problem = f"{where}: its payload holds a float"
            else:
                data = canonical({k: entry[k] for k in ("actor", "kind", "payload", "prev_hash", "sequence", "time")})
                if hashlib.sha256(data).hexdigest() != entry["entry_hash"]:
                    problem = f"{where}: its entry hash does not match its contents"
                elif hashlib.sha256(b"\x00" + data).hexdigest() != entry["leaf_hash"]:
                    problem = f"{where}: its Merkle leaf hash does not match its contents"
                elif entry["kind"] == ROTATION:
                    try:
                        keys.append((open_rotation(entry["payload"], keys[-1][0]), count + 1))
                    except Exception as exc:  # any failure to read or verify the rotation is a failed check
                        problem = f"{where}: not a valid key rotation: {exc}"
                if not problem:
                    node = (0, bytes.fromhex(entry["leaf_hash"]))
                    while stack and stack[-1][0] == node[0]:
                        node = (node[0] + 1, hashlib.sha256(b"\x01" + stack.pop()[1] + node[1]).digest())
                    stack.append(node)
                    prev, count = entry["entry_hash"], count + 1
                    problem = check(count)
        if not problem and notes:
            problem = f"checkpoint {notes[min(notes)][0][0]}: it signs {min(notes)} entries, the bundle has {count}"
        if not problem and vkey not in [k for k, _ in keys]:
            problem = f"the key {vkey} is not one of the ledger's keys"
    if problem:
        print(f"FAILED: {problem}")
        return 1
    print(f"OK: {count} entries hold, with every checkpoint")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
