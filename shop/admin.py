"""The admin for the shop's records: the menu, which staff work at which outlet, payments."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from queueing.admin import OutletAdmin
from queueing.models import Outlet
from shop.models import Membership, MenuItem, Payment


@admin.register(MenuItem)
class MenuItemAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "price", "prep_seconds", "available")
    list_editable = ("price", "available")
    list_filter = ("available",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "outlet")
    list_filter = ("outlet",)
    list_select_related = ("user", "outlet")
    search_fields = ("user__username", "outlet__slug", "outlet__name")
    autocomplete_fields = ("user", "outlet")


class StaffOfOutletInline(admin.TabularInline):
    model = Membership
    fk_name = "outlet"
    extra = 1
    autocomplete_fields = ("user",)
    verbose_name = "staff member"
    verbose_name_plural = "staff (who may open this outlet's kitchen screen)"


class OutletsOfUserInline(admin.TabularInline):
    model = Membership
    fk_name = "user"
    extra = 1
    autocomplete_fields = ("outlet",)
    verbose_name = "outlet"
    verbose_name_plural = "works at (kitchen screens this user may open)"


# queueing knows nothing of the shop's staff, so the shop adds them to its admins.
admin.site.unregister(Outlet)


@admin.register(Outlet)
class OutletWithStaffAdmin(OutletAdmin):
    inlines = [StaffOfOutletInline]


admin.site.unregister(User)


@admin.register(User)
class StaffUserAdmin(UserAdmin):
    inlines = [OutletsOfUserInline]


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    """Payments are read here, never written: not added, changed or deleted, by anyone.

    A payment is recorded by staff at hand-over, with the hand-over, and is what the
    till and the takings on the operations screen add up to. Editing or deleting one
    here would change the takings with no trace of what they were (the admin's log
    keeps which fields changed, not their old values). A wrong record is put right by
    a new record that says so (a refund), which is not built yet.
    """

    list_display = ("order_link", "outlet", "pounds", "method", "where", "paid_at", "by")
    list_filter = ("order__outlet", "method", "where", "paid_at")
    list_select_related = ("order__outlet",)
    date_hierarchy = "paid_at"
    search_fields = ("=order__id", "order__token", "by")
    ordering = ("-paid_at", "-id")
    fields = ("order_link", "outlet", "pounds", "method", "where", "paid_at", "by")
    readonly_fields = fields

    @admin.display(description="order", ordering="order_id")
    def order_link(self, payment: Payment) -> str:
        url = reverse("admin:queueing_order_change", args=[payment.order_id])
        return format_html('<a href="{}">Order {}</a>', url, payment.order_id)

    @admin.display(description="outlet", ordering="order__outlet__name")
    def outlet(self, payment: Payment) -> str:
        outlet = payment.order.outlet
        return outlet.name if outlet else "—"

    @admin.display(description="amount", ordering="amount")
    def pounds(self, payment: Payment) -> str:
        return f"£{payment.amount}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # recorded at hand-over, by the kitchen's bump or a manager's hand-over

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
