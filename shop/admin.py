"""The admin for the shop's records: the menu, and which staff work at which outlet."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User

from queueing.admin import OutletAdmin
from queueing.models import Outlet
from shop.models import Membership, MenuItem


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
