import os
import time

from django.core.management.base import BaseCommand

from marketplace.demo import DEFAULT_WORLD, WORLDS, seed_demo
from mosaic.progress import add_progress_arguments, command_progress


class Command(BaseCommand):
    help = ("Create the demo data (idempotent): the SmolLM2-135M-Instruct base model, staff and auditor users, "
            "five contributors whose LoRA experts are trained here (cached by recipe under var/cache/experts) and "
            "uploaded through the upload service, two organizations with API keys, and the composed systems.")

    def add_arguments(self, parser):
        parser.add_argument("--world", choices=WORLDS, default=DEFAULT_WORLD,
                            help="real: SmolLM2-135M-Instruct and experts that learn their skills (default); "
                                 "toy: a tiny untrained character model, two training steps per expert (tests)")
        add_progress_arguments(parser)

    def handle(self, *args, world, **options):
        started = time.monotonic()
        context = seed_demo(world=world, log=self.stdout.write, progress=command_progress(self, options))
        self.stdout.write("")
        for line in context.summary:
            self.stdout.write(line)
        load = " ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
        self.stdout.write(f"\nDemo data ready in {time.monotonic() - started:.1f} s (load average {load}).")
