import sys
import time

from django.core.management.base import BaseCommand, CommandError

from ledger.export import write_bundle
from ledger.services import create_checkpoint
from ledger.verification import verify_bundle, verify_database


class Command(BaseCommand):
    help = "The participation ledger: verify it (or an export bundle), sign a checkpoint, export a bundle."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        verify = sub.add_parser("verify", help="recompute chain, leaves, roots at every checkpoint, signatures")
        verify.add_argument("--bundle", help="verify this export bundle (.tar.gz) instead of the database")
        verify.add_argument("--key", help="trusted verifier key name+keyid+base64 (for --bundle)")
        sub.add_parser("checkpoint", help="sign a checkpoint of the current tree")
        export = sub.add_parser("export", help="write an export bundle")
        export.add_argument("file")

    def handle(self, *args, action, **options):
        if action == "checkpoint":
            checkpoint = create_checkpoint()
            self.stdout.write(checkpoint.note, ending="")
            return
        if action == "export":
            with open(options["file"], "wb") as target:
                write_bundle(target)
            self.stdout.write(f"wrote {options['file']}")
            return
        started = time.monotonic()
        if options["bundle"]:
            result = verify_bundle(options["bundle"], verifier_key=options["key"])
        else:
            result = verify_database()
        elapsed = time.monotonic() - started
        if not result.ok:
            self.stderr.write(f"FAILED: {result.message}")
            sys.stdout.flush()
            raise CommandError(f"ledger does not verify: {result.message}", returncode=1)
        self.stdout.write(f"OK: {result.message} ({elapsed:.1f} s)")
