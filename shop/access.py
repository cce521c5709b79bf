"""Who may open which screen: outlet staff their own kitchens, managers everything."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404
from django.utils.crypto import constant_time_compare

from queueing.models import Outlet
from queueing.services.outlets import outlet_by_token

MANAGER_PERMISSION = "shop.manager"
MANAGERS_GROUP = "Managers"
# What a manager does in the admin, and no more: outlets, the menu, orders, who works
# where, and reading payments (no one writes those in the admin). Not users' accounts:
# changing a user could grant superuser, so accounts stay a superuser's job and a manager
# assigns existing staff to outlets (``view_user`` lets them pick one).
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
    "shop.view_payment",
    "auth.view_user",
    MANAGER_PERMISSION,
)


# What of an event's detail a customer may see: why the order moved or was cancelled,
# never who is cooking it (a claim's detail names the station, a cook's username).
CUSTOMER_DETAIL_KEYS = ("reason",)


def customer_detail(detail: Any) -> dict[str, Any]:
    """An event's detail as the customer's page, API and socket show it."""
    if not isinstance(detail, dict):
        return {}
    return {k: detail[k] for k in CUSTOMER_DETAIL_KEYS if k in detail}


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


def session_user(*, session_key: str | None) -> Any:
    """Who a session belongs to now: AnonymousUser once it ended, the account was deactivated or its password changed."""
    if not session_key:
        return AnonymousUser()
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(store[SESSION_KEY])
        backend_path = store[BACKEND_SESSION_KEY]
    except (KeyError, ValueError):
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = load_backend(backend_path).get_user(user_id)  # None for an inactive account
    if user is None or not user.is_active:
        return AnonymousUser()
    if not constant_time_compare(store.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return AnonymousUser()
    return user


def may_rush(request: Any) -> bool:
    """Whether this request may flag an order rush: staff signed in, or an outlet's agent token."""
    user = request.user
    if user.is_authenticated and user.is_active:
        if user.is_staff or is_manager(user) or user.memberships.exists():
            return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (
        scheme.lower() == "bearer"
        and bool(token.strip())
        and (outlet_by_token(token=token.strip()) is not None)
    )
