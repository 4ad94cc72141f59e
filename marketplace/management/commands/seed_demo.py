import time

from django.core.management.base import BaseCommand

from marketplace.demo import SIZES, seed_demo


class Command(BaseCommand):
    help = ("Create the demo data (idempotent): a pretrained small base model, staff and auditor users, "
            "contributors with real peft experts uploaded and validated through the upload service, and "
            "whatever the other seeders in marketplace.demo.SEEDERS add.")

    def add_arguments(self, parser):
        parser.add_argument("--size", choices=sorted(SIZES), default="demo",
                            help="demo: 4-layer 128-wide base, experts that learn their skill; "
                                 "tiny: 2-layer 64-wide, few steps (for tests)")

    def handle(self, *args, size, **options):
        started = time.monotonic()
        context = seed_demo(size=size, log=self.stdout.write)
        self.stdout.write("")
        for line in context.summary:
            self.stdout.write(line)
        self.stdout.write(f"\nDemo data ready in {time.monotonic() - started:.1f} s.")
