from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create (or reset the password of) the demo user from settings.DEMO_USERNAME / DEMO_PASSWORD."

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(username=settings.DEMO_USERNAME)
        user.set_password(settings.DEMO_PASSWORD)
        user.is_staff = True
        user.is_superuser = True
        user.save()
        verb = "Created" if created else "Reset"
        self.stdout.write(
            f"{verb} the demo user {settings.DEMO_USERNAME!r} (password {settings.DEMO_PASSWORD!r})."
        )
