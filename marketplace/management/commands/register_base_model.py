from django.core.management.base import BaseCommand, CommandError

from marketplace.services.base_models import base_model_register
from mosaic.errors import DomainError


class Command(BaseCommand):
    help = "Register a local base model directory (config.json + *.safetensors) under a name."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--path", required=True)

    def handle(self, *args, name, path, **options):
        try:
            base_model = base_model_register(name=name, path=path)
        except DomainError as error:
            raise CommandError(error.message) from None
        self.stdout.write(
            f"Registered base model {base_model.name!r}: {base_model.architecture}, {base_model.num_layers} layers, "
            f"hidden {base_model.hidden_size}, vocab {base_model.vocab_size}, "
            f"{len(base_model.module_shapes)} linear modules, sha256 {base_model.content_hash}"
        )
