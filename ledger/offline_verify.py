#!/usr/bin/env python3
"""Verify a Mosaic ledger export bundle offline: `python3 verify.py BUNDLE.tar.gz [VERIFIER_KEY]`.

Standalone (Python 3.11 standard library + `cryptography` for Ed25519); shares no code with the
Mosaic project, so it checks the bundle independently of the software that wrote it. Pass the
verifier key published by the ledger (GET /api/ledger/verifier-key); without it the key inside the
bundle is used. Exit status 0 when everything holds, 1 naming the first thing that does not.
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


def open_note(note: str, vkey: str) -> tuple[str, int, bytes]:
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
            origin, size, root = text.split("\n")[:3]
            return origin, int(size), base64.b64decode(root)
    raise ValueError(f"no signature by {name}")


def main(path: str, vkey: str | None) -> int:
    with tarfile.open(path, "r:gz") as bundle:
        vkey = vkey or bundle.extractfile("verifier-key.txt").read().decode()
        signed: dict[int, list[tuple[str, bytes]]] = {}
        for member in sorted(bundle.getmembers(), key=lambda m: m.name):
            if member.name.startswith("checkpoints/") and member.isfile():
                try:
                    _, size, root = open_note(bundle.extractfile(member).read().decode(), vkey)
                except Exception as exc:  # any failure to read or verify a note is a failed check
                    print(f"FAILED: checkpoint {member.name}: {exc}")
                    return 1
                signed.setdefault(size, []).append((member.name, root))
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
            for name, expected in signed.pop(size, []):
                if root() != expected:
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
                else:
                    node = (0, bytes.fromhex(entry["leaf_hash"]))
                    while stack and stack[-1][0] == node[0]:
                        node = (node[0] + 1, hashlib.sha256(b"\x01" + stack.pop()[1] + node[1]).digest())
                    stack.append(node)
                    prev, count = entry["entry_hash"], count + 1
                    problem = check(count)
        if not problem and signed:
            problem = f"checkpoint {signed[min(signed)][0][0]}: it signs {min(signed)} entries, the bundle has {count}"
    if problem:
        print(f"FAILED: {problem}")
        return 1
    print(f"OK: {count} entries hold, with every checkpoint")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
