"""Create the admin account named in the environment, once: later runs leave it as it is."""

import os

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS


class Command(BaseCommand):
    help = (
        "Create a superuser from DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_EMAIL and "
        "DJANGO_SUPERUSER_PASSWORD if none by that name exists. Does nothing when the username "
        "is unset; never changes an existing account (its password may have been changed since)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, database: str, **options) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "").strip()
        if not username:
            self.stdout.write("ensure_superuser: DJANGO_SUPERUSER_USERNAME is not set; skipped.")
            return
        users = get_user_model()._default_manager.db_manager(database)
        if users.filter(**{users.model.USERNAME_FIELD: username}).exists():
            self.stdout.write(f"ensure_superuser: {username!r} exists; left unchanged.")
            return
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if not password:
            raise CommandError(
                "DJANGO_SUPERUSER_PASSWORD must be set along with DJANGO_SUPERUSER_USERNAME."
            )
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "").strip()
        candidate = users.model(**{users.model.USERNAME_FIELD: username, "email": email})
        try:
            validate_password(password, candidate)
        except ValidationError as error:
            raise CommandError(
                "DJANGO_SUPERUSER_PASSWORD is not accepted: " + " ".join(error.messages)
            ) from None
        users.create_superuser(
            **{users.model.USERNAME_FIELD: username, "email": email, "password": password}
        )
        self.stdout.write(f"ensure_superuser: created superuser {username!r}.")
