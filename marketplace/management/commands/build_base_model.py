import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from marketplace.demo import build_and_register_base_model
from domain.errors import DomainError


class Command(BaseCommand):
    help = ("Build a small Llama-architecture base model locally (no download) with composition.world "
            "and register it. An existing directory is reused unless --force.")

    def add_arguments(self, parser):
        parser.add_argument("--name", default="mosaic-tiny")
        parser.add_argument("--dir", default=None, help="default: BASE_MODEL_DIR/<name>")
        parser.add_argument("--train-steps", type=int, default=0,
                            help="next-character pretraining steps on random text (0: untrained)")
        parser.add_argument("--layers", type=int, default=4)
        parser.add_argument("--hidden", type=int, default=128)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--force", action="store_true", help="rebuild even if the directory exists")

    def handle(self, *args, name, dir, train_steps, layers, hidden, seed, force, **options):
        directory = Path(dir) if dir else Path(settings.BASE_MODEL_DIR) / name
        started = time.monotonic()
        try:
            base_model, built = build_and_register_base_model(
                name=name, directory=directory, layers=layers, hidden=hidden, seed=seed, train_steps=train_steps,
                force=force,
            )
        except DomainError as error:
            raise CommandError(error.message) from None
        action = "Built" if built else "Reused"
        self.stdout.write(f"{action} {directory} and registered base model {base_model.name!r} "
                          f"({base_model.num_layers} layers, hidden {base_model.hidden_size}) "
                          f"in {time.monotonic() - started:.1f} s")
