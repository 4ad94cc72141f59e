from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from marketplace.models import Organization
from marketplace.services.organizations import api_key_create
from domain.errors import DomainError


class Command(BaseCommand):
    help = "Create an API key for an organization and print it (it is shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="Organization name or slug.")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--scopes", default="read,use", help="Comma-separated: read, use.")

    def handle(self, *args, org, name, scopes, **options):
        organization = Organization.objects.filter(Q(name=org) | Q(slug=org)).first()
        if organization is None:
            raise CommandError(f"No organization named {org!r}.")
        try:
            _, key = api_key_create(organization=organization, name=name,
                                    scopes=[s.strip() for s in scopes.split(",") if s.strip()])
        except DomainError as error:
            raise CommandError(error.message) from error
        self.stdout.write(key)
