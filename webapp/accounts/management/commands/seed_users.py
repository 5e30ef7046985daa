from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

from webapp.accounts.services import lab_get_or_create, user_create

DEMO_USERS = [
    ("hematologist", "hematologist", "leukolab-hematologist"),
    ("annotator", "annotator", "leukolab-annotator"),
    ("admin", "admin", "leukolab-admin"),
]


class Command(BaseCommand):
    help = "Create the demo lab and one demo user per role (hematologist, annotator, admin); print their credentials."

    def add_arguments(self, parser):
        parser.add_argument("--lab", default="Demo lab")

    def handle(self, *args, lab: str, **options):
        demo_lab = lab_get_or_create(name=lab)
        self.stdout.write("Demo users (username / password):")
        for username, role, password in DEMO_USERS:
            if not User.objects.filter(username=username).exists():
                user_create(username=username, password=password, role=role, lab=demo_lab)
            self.stdout.write(f"  {role:13s} {username} / {password}")
