"""Export bundle: a .tar.gz that a person can verify offline (see ledger/README.md)."""
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

from ledger import stored_tree
from ledger.canonical import format_time
from ledger.models import Checkpoint, Entry
from ledger.signing import ledger_signer
from mosaic.progress import QUIET, Progress

README = Path(__file__).with_name("README.md")
OFFLINE_VERIFIER = Path(__file__).with_name("offline_verify.py")


def _add(bundle: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    bundle.addfile(info, io.BytesIO(data))


def write_bundle(target, *, chunk: int = 20_000, progress: Progress = QUIET) -> None:
    """Write entries.jsonl, checkpoints/<id>.note, verifier-key.txt, README.md and verify.py to `target`
    (a binary file object). Entries up to the size at the start; checkpoints no larger. `progress` is told
    of the entries written."""
    size = stored_tree.tree_size()
    with tempfile.TemporaryFile() as lines, tarfile.open(fileobj=target, mode="w:gz") as bundle, \
            progress.stage("exporting entries", total=size, unit="entry") as step:
        start = 0
        while start < size:
            rows = (
                Entry.objects.filter(sequence__gte=start, sequence__lt=min(start + chunk, size))
                .order_by("sequence")
                .values_list("sequence", "kind", "payload", "actor", "created_at", "prev_hash", "entry_hash", "leaf_hash")
            )
            for sequence, kind, payload, actor, created_at, prev_hash, entry_hash, leaf in rows:
                item = {
                    "sequence": sequence, "kind": kind, "payload": json.loads(bytes(payload)), "actor": actor,
                    "time": format_time(created_at), "prev_hash": bytes(prev_hash).hex(),
                    "entry_hash": bytes(entry_hash).hex(), "leaf_hash": bytes(leaf).hex(),
                }
                lines.write(json.dumps(item, ensure_ascii=False, sort_keys=True).encode() + b"\n")
            step.update(min(start + chunk, size) - start)
            start += chunk
        info = tarfile.TarInfo("entries.jsonl")
        info.size = lines.tell()
        info.mtime = int(time.time())
        lines.seek(0)
        bundle.addfile(info, lines)
        for checkpoint in Checkpoint.objects.filter(tree_size__lte=size).order_by("id"):
            _add(bundle, f"checkpoints/{checkpoint.id:08d}.note", checkpoint.note.encode())
        _add(bundle, "verifier-key.txt", (ledger_signer().verifier_key + "\n").encode())
        _add(bundle, "README.md", README.read_bytes())
        _add(bundle, "verify.py", OFFLINE_VERIFIER.read_bytes())
