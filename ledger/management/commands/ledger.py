import base64
import binascii
import os
import signal
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ledger import rotation, witness
from ledger.export import write_bundle
from ledger.services import create_checkpoint, follow_queue, sequence_pending
from ledger.signing import NoteError, key_id, ledger_signer
from ledger.stored_tree import tree_size
from ledger.verification import verify_bundle, verify_database
from domain.errors import DomainError
from mosaic.progress import add_progress_arguments, command_progress

REFUSED = 1  # exit status: the log does not verify, or the witness refuses its checkpoint
UNUSABLE = 2  # exit status: a witness store or a log that cannot be read


class Command(BaseCommand):
    help = ("The participation ledger: verify it (or an export bundle), sign a checkpoint, export a bundle, "
            "witness a log's checkpoints, rotate its signing key.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        verify = sub.add_parser("verify", help="recompute chain, leaves, roots at every checkpoint, signatures")
        verify.add_argument("--bundle", help="verify this export bundle (.tar.gz) instead of the database")
        verify.add_argument("--key", help="trusted verifier key name+keyid+base64 (for --bundle)")
        verify.add_argument("--witness", metavar="DIR",
                            help="also require the latest checkpoint to extend the one this witness store cosigned")
        add_progress_arguments(verify)
        sub.add_parser("checkpoint", help="sign a checkpoint of the current tree")
        rotate = sub.add_parser(
            "rotate-key",
            help="record a ledger.key_rotated entry signed by the old and the new key, sign its checkpoint with the "
                 "old key, then install the new key in LEDGER_SIGNING_KEY_FILE (the old file is kept, renamed)",
        )
        rotate.add_argument("--new-key-file", metavar="FILE",
                            help="the new key's seed (base64; created with a fresh key when missing); required when "
                                 "the key comes from LEDGER_SIGNING_KEY")
        sequence = sub.add_parser(
            "sequence", help="integrate the recorded events into the ledger (as the one sequencer: a second one waits)"
        )
        sequence.add_argument("--follow", action="store_true", help="keep integrating until stopped")
        sequence.add_argument("--interval", type=float, default=0.05, metavar="SECONDS",
                              help="with --follow: how long to wait after a batch that did not fill, collecting the "
                                   "next one (default 0.05)")
        export = sub.add_parser("export", help="write an export bundle")
        export.add_argument("file")
        add_progress_arguments(export)
        follow = sub.add_parser("witness", help="cosign the log's latest checkpoint if it extends the last one cosigned")
        follow.add_argument("--store", required=True, metavar="DIR", help="the witness's own store (key, checkpoint)")
        follow.add_argument("--log", metavar="SOURCE",
                            help="a database URL or an export bundle/directory (default: this project's database)")
        follow.add_argument("--log-key", help="the log's verifier key name+keyid+base64 (pinned at the first run)")
        follow.add_argument("--name", default=witness.DEFAULT_WITNESS_NAME, help="the witness's key name (new store)")

    def handle(self, *args, action, **options):
        if action == "checkpoint":
            checkpoint = create_checkpoint()
            self.stdout.write(checkpoint.note, ending="")
            return
        if action == "sequence":
            self._sequence(follow=options["follow"], interval=options["interval"])
            return
        if action == "export":
            with open(options["file"], "wb") as target:
                write_bundle(target, progress=command_progress(self, options))
            self.stdout.write(f"wrote {options['file']}")
            return
        if action == "witness":
            self._witness(**options)
            return
        if action == "rotate-key":
            self._rotate_key(new_key_file=options["new_key_file"])
            return
        started = time.monotonic()
        if options["bundle"]:
            result = verify_bundle(options["bundle"], verifier_key=options["key"],
                                   progress=command_progress(self, options))
        else:
            result = verify_database(progress=command_progress(self, options))
        message = result.message
        if result.ok and options["witness"]:
            with witness.opened_log(options["bundle"]) as log:
                problem = witness.compare_with_witness(log=log, store=witness.WitnessStore(options["witness"]))
            if problem:
                result, message = None, problem
            else:
                message += f"; it extends the checkpoint witness {options['witness']} cosigned"
        elapsed = time.monotonic() - started
        if result is None or not result.ok:
            self._fail(f"FAILED: {message}", f"ledger does not verify: {message}", REFUSED)
        self.stdout.write(f"OK: {message} ({elapsed:.1f} s)")

    def _sequence(self, *, follow: bool, interval: float):
        if not 0 < interval <= 3600:
            self._fail(f"ERROR: --interval must be between 0 and 3600 seconds, not {interval:g}",
                       "bad --interval", UNUSABLE)
        if not follow:
            integrated = sequence_pending(wait=True)
            self.stdout.write(f"integrated {integrated} events; ledger size {tree_size()}")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):  # finish the batch in hand, drain the queue, then leave
            signal.signal(signum, lambda *_: stop.set())
        reported = [time.monotonic()]

        def report(batch):
            if time.monotonic() - reported[0] >= 10:
                self.stdout.write(f"ledger size {batch[-1].sequence + 1}")
                reported[0] = time.monotonic()

        integrated = follow_queue(interval=interval, should_stop=stop.is_set, on_batch=report)
        self.stdout.write(f"integrated {integrated} events; ledger size {tree_size()}")

    def _witness(self, *, store, log, log_key, name, **_):
        try:
            with witness.opened_log(log) as source:
                cosigned, before = witness.witness(
                    log=source, store=witness.WitnessStore(store), log_key=log_key, name=name
                )
        except witness.WitnessRefused as exc:
            self._fail(f"REFUSED: {exc}", f"the witness refuses: {exc}", REFUSED)
        except witness.WitnessError as exc:
            self._fail(f"ERROR: {exc}", str(exc), UNUSABLE)
        was = f"size {before.checkpoint.tree_size}" if before else "nothing"
        self.stdout.write(
            f"COSIGNED: {cosigned.checkpoint.origin} at size {cosigned.checkpoint.tree_size} (before: {was}); "
            f"{store}/checkpoint"
        )

    def _rotate_key(self, *, new_key_file: str | None):
        from_setting = bool(settings.LEDGER_SIGNING_KEY)
        if from_setting and not new_key_file:
            self._fail("ERROR: --new-key-file is required when LEDGER_SIGNING_KEY holds the key",
                       "--new-key-file is required when LEDGER_SIGNING_KEY holds the key", UNUSABLE)
        old = ledger_signer()
        key_file = Path(settings.LEDGER_SIGNING_KEY_FILE)
        # Staged before the rotation commits, so that a crash after it leaves the new key on disk.
        staged = Path(new_key_file) if new_key_file else key_file.with_name(key_file.name + ".next")
        try:
            if staged.exists():
                seed = base64.b64decode(staged.read_text().strip(), validate=True)
            else:
                seed = os.urandom(32)
                rotation.write_seed(staged, seed)
            new = rotation.signer_from_seed(seed)
            entry, checkpoint = rotation.rotate_signing_key(new=new)
        except (OSError, binascii.Error, NoteError) as exc:
            self._fail(f"ERROR: {exc}", f"cannot rotate the key: {exc}", UNUSABLE)
        except DomainError as exc:
            self._fail(f"REFUSED: {exc.message}", f"cannot rotate the key: {exc.message}", REFUSED)
        old_id = key_id(old.name, old.public_key).hex()
        self.stdout.write(f"ROTATED: entry {entry.sequence} retires key {old_id} for {new.verifier_key}; "
                          f"checkpoint at size {checkpoint.tree_size} signed by the old key")
        if from_setting:
            self.stdout.write(f"Now set LEDGER_SIGNING_KEY to the seed in {staged} and restart every process that signs.")
            return
        if key_file.exists():
            os.replace(key_file, key_file.with_name(f"{key_file.name}.retired-{old_id}"))
        if new_key_file:
            rotation.write_seed(key_file, seed)
        else:
            os.replace(staged, key_file)
        self.stdout.write(f"The new key is in {key_file} (the old one in {key_file.name}.retired-{old_id}).")

    def _fail(self, line: str, error: str, returncode: int):
        self.stderr.write(line)
        sys.stdout.flush()
        raise CommandError(error, returncode=returncode)
