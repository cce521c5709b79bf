from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def managers_group_migrated(sender: AppConfig, **kwargs: Any) -> None:
    """After every migrate: the Managers group exists with exactly a manager's permissions.

    Permissions are created by the same signal, app by app; auth and queueing come
    before shop in INSTALLED_APPS, so theirs and shop's exist by the time shop's runs.
    """
    from shop.access import managers_group_ensure

    managers_group_ensure()


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop"

    def ready(self) -> None:
        post_migrate.connect(managers_group_migrated, sender=self)
