"""Who may open which screen: outlet staff their own kitchens, managers everything."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

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


def works_at(user: Any, outlet: Outlet) -> bool:
    """A member of this outlet's staff: only their kitchen screen heartbeats for it."""
    if not user.is_authenticated or not user.is_active:
        return False
    return bool(user.memberships.filter(outlet=outlet).exists())


def kitchen_outlet(*, user: Any, slug: str) -> Outlet:
    """The outlet whose kitchen ``user`` opens; Http404 if unknown, PermissionDenied if not theirs."""
    outlet = Outlet.objects.filter(slug=slug).first()
    if outlet is None:
        raise Http404(f"no outlet {slug}")
    if not can_open_kitchen(user, outlet):
        raise PermissionDenied(f"you do not work at {outlet.name}")
    return outlet
