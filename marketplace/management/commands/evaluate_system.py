from django.core.management.base import BaseCommand, CommandError

from marketplace.models import ComposedSystem, SystemEvaluation
from marketplace.services.evaluations import MAX_ITEMS_PER_SKILL, evaluation_request, evaluation_run
from domain.errors import DomainError
from mosaic.progress import add_progress_arguments, command_progress


class Command(BaseCommand):
    help = ("Run a system's held-out sets through the serving path (temperature 0) and write its quality and each "
            "expert's measured contribution (Shapley), with 95% intervals, to the system and the ledger.")

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the system's slug, as in /v1/models")
        parser.add_argument("--items", type=int, default=None,
                            help=f"held-out items per skill (1..{MAX_ITEMS_PER_SKILL}; default EVALUATION_ITEMS_PER_SKILL)")
        parser.add_argument("--seed", type=int, default=1, help="seed of the held-out sets and of Monte Carlo Shapley")
        add_progress_arguments(parser)

    def handle(self, *args, slug, items, seed, **options):
        system = ComposedSystem.objects.filter(slug=slug).first()
        if system is None:
            known = ", ".join(ComposedSystem.objects.order_by("slug").values_list("slug", flat=True)) or "none"
            raise CommandError(f"No system {slug!r}; systems: {known}.")
        try:
            evaluation = evaluation_request(system=system, items_per_skill=items, seed=seed)
        except DomainError as error:
            raise CommandError(error.message) from None
        evaluation = evaluation_run(evaluation_id=evaluation.pk, progress=command_progress(self, options))
        if evaluation.state != SystemEvaluation.State.SUCCEEDED:
            raise CommandError(f"Evaluation {evaluation.pk} of {slug!r} failed: {evaluation.error}")
        quality = evaluation.result
        low, high = quality["interval95"]
        self.stdout.write(f"{slug}: accuracy {quality['accuracy']:.3f} [{low:.3f}, {high:.3f}] on {quality['n']} items "
                          f"(base model alone {quality['base_accuracy']:.3f}); evaluation {evaluation.pk}")
        for skill, score in quality["per_skill"].items():
            self.stdout.write(f"  {skill:<12} {score['accuracy']:.3f} [{score['interval95'][0]:.3f}, "
                              f"{score['interval95'][1]:.3f}]  n={score['n']}")
        for expert, measured in quality["contributions"].items():
            self.stdout.write(f"  {expert:<12} Shapley {measured['shapley']:+.3f} [{measured['interval95'][0]:+.3f}, "
                              f"{measured['interval95'][1]:+.3f}]  share {measured['share_bp'] / 100:.2f}%")
