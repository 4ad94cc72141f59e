import sys
import time

from django.core.management.base import BaseCommand, CommandError

from ledger import witness
from ledger.export import write_bundle
from ledger.services import create_checkpoint, sequence_pending
from ledger.stored_tree import tree_size
from ledger.verification import verify_bundle, verify_database

REFUSED = 1  # exit status: the log does not verify, or the witness refuses its checkpoint
UNUSABLE = 2  # exit status: a witness store or a log that cannot be read


class Command(BaseCommand):
    help = ("The participation ledger: verify it (or an export bundle), sign a checkpoint, export a bundle, "
            "witness a log's checkpoints.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        verify = sub.add_parser("verify", help="recompute chain, leaves, roots at every checkpoint, signatures")
        verify.add_argument("--bundle", help="verify this export bundle (.tar.gz) instead of the database")
        verify.add_argument("--key", help="trusted verifier key name+keyid+base64 (for --bundle)")
        verify.add_argument("--witness", metavar="DIR",
                            help="also require the latest checkpoint to extend the one this witness store cosigned")
        sub.add_parser("checkpoint", help="sign a checkpoint of the current tree")
        sequence = sub.add_parser(
            "sequence", help="integrate the recorded events into the ledger (as the one sequencer: a second one waits)"
        )
        sequence.add_argument("--follow", action="store_true", help="keep integrating until stopped")
        sequence.add_argument("--interval", type=float, default=0.2, metavar="SECONDS",
                              help="with --follow: how long to sleep when the queue is empty (default 0.2)")
        export = sub.add_parser("export", help="write an export bundle")
        export.add_argument("file")
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
                write_bundle(target)
            self.stdout.write(f"wrote {options['file']}")
            return
        if action == "witness":
            self._witness(**options)
            return
        started = time.monotonic()
        if options["bundle"]:
            result = verify_bundle(options["bundle"], verifier_key=options["key"])
        else:
            result = verify_database()
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
        while True:
            integrated = sequence_pending(wait=True)
            if not follow:
                self.stdout.write(f"integrated {integrated} events; ledger size {tree_size()}")
                return
            if integrated:
                self.stdout.write(f"integrated {integrated} events; ledger size {tree_size()}")
            else:
                time.sleep(interval)

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

    def _fail(self, line: str, error: str, returncode: int):
        self.stderr.write(line)
        sys.stdout.flush()
        raise CommandError(error, returncode=returncode)
