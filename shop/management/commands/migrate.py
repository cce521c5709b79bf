"""python manage.py migrate, with the statement timeout lifted: building an index runs long."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.commands import migrate
from django.db import connections


class Command(migrate.Command):
    def handle(self, *args: Any, **options: Any) -> None:
        # The lock timeout stays: a migration waiting behind a long transaction for a
        # table's lock would queue every order behind it; it fails instead, to be run again.
        seconds = float(settings.HEARTH_DB_MIGRATE_STATEMENT_TIMEOUT)
        with connections[options["database"]].cursor() as cursor:
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, false)", [str(round(seconds * 1000))]
            )
        super().handle(*args, **options)
