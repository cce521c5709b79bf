"""Who may open which screen: outlet staff their own kitchens, managers everything."""

from __future__ import annotations

from typing import Any

from queueing.models import Outlet

MANAGER_PERMISSION = "shop.manager"


def is_manager(user: Any) -> bool:
    return bool(user.is_authenticated and (user.is_superuser or user.has_perm(MANAGER_PERMISSION)))


def can_open_kitchen(user: Any, outlet: Outlet) -> bool:
    """Staff of this outlet, a manager, or a superuser."""
    if not user.is_authenticated or not user.is_active:
        return False
    if is_manager(user):
        return True
    return bool(user.memberships.filter(outlet=outlet).exists())
