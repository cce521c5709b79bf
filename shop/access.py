"""Who may open which screen: outlet staff their own kitchens, managers everything."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404

from queueing.models import Outlet

MANAGER_PERMISSION = "shop.manager"
MANAGERS_GROUP = "Managers"
# What a manager does in the admin, and no more: outlets, the menu, orders and who works
# where. Not users' accounts: changing a user could grant superuser, so accounts stay a
# superuser's job and a manager assigns existing staff to outlets.
MANAGERS_ADMIN_PERMISSIONS = (
    "queueing.view_outlet",
    "queueing.add_outlet",
    "queueing.change_outlet",
    "queueing.view_order",
    "queueing.change_order",
    "queueing.view_orderevent",
    "queueing.view_notifierstatus",
    "shop.view_menuitem",
    "shop.add_menuitem",
    "shop.change_menuitem",
    "shop.delete_menuitem",
    "shop.view_membership",
    "shop.add_membership",
    "shop.change_membership",
    "shop.delete_membership",
    "auth.view_user",
    MANAGER_PERMISSION,
)


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


def managers_group_ensure() -> Group:
    """The "Managers" group with exactly the permissions a manager needs (created or corrected)."""
    group, _ = Group.objects.get_or_create(name=MANAGERS_GROUP)
    wanted = Q()
    for name in MANAGERS_ADMIN_PERMISSIONS:
        app_label, codename = name.split(".")
        wanted |= Q(content_type__app_label=app_label, codename=codename)
    permissions = list(Permission.objects.filter(wanted))
    if len(permissions) != len(MANAGERS_ADMIN_PERMISSIONS):
        raise LookupError("some manager permissions do not exist: run migrate first")
    group.permissions.set(permissions)
    return group
