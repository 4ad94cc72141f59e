import time

from django.core.management.base import BaseCommand

from marketplace.demo import DEFAULT_SIZE, SIZES, seed_demo


class Command(BaseCommand):
    help = ("Create the demo data (idempotent): a lightly pretrained small base model, staff and auditor users, "
            "contributors with real peft experts uploaded and validated through the upload service, and "
            "whatever the other seeders in marketplace.demo.SEEDERS add.")

    def add_arguments(self, parser):
        parser.add_argument("--size", choices=SIZES, default=DEFAULT_SIZE,
                            help="small: 2-layer 64-wide base, 120 pretraining steps, experts 60 steps (default); "
                                 "full: the small world's full size, 4-layer 128-wide (experts learn their "
                                 "skills well; several times the compute); "
                                 "tiny: a few steps (tests)")

    def handle(self, *args, size, **options):
        started = time.monotonic()
        context = seed_demo(size=size, log=self.stdout.write)
        self.stdout.write("")
        for line in context.summary:
            self.stdout.write(line)
        self.stdout.write(f"\nDemo data ready in {time.monotonic() - started:.1f} s.")
