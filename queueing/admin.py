"""The admin for the queue's records: outlets (tokens never shown), orders read-mostly with their events."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from queueing.errors import QueueError
from queueing.models import (
    OUTLET_WEIGHT_MAX,
    NotifierStatus,
    Order,
    OrderEvent,
    Outlet,
    OutletState,
)
from queueing.services import (
    order_cancel,
    order_hand_over,
    order_send,
    outlet_create,
    outlet_rotate_token,
)

# The operations permission (queueing does not import shop, where it is defined).
MANAGER_PERMISSION = "shop.manager"

# What a manager may edit on an outlet here. Its state changes go through the
# operations screen's actions, which move orders and record events.
OUTLET_EDITABLE = ("name", "weight", "amber_after", "red_after")


def _tokens_page(
    request: HttpRequest, title: str, tokens: list[tuple[Outlet, str]]
) -> HttpResponse:
    """Agent tokens, shown on this one response: they are stored only hashed."""
    response = TemplateResponse(
        request,
        "admin/queueing/outlet/agent_tokens.html",
        {**admin.site.each_context(request), "title": title, "tokens": tokens},
    )
    response["Cache-Control"] = "no-store"
    return response


# A customer's contact as the admin may set it: these keys, each text of at most this length.
CUSTOMER_FIELDS = {"name": 100, "phone": 40, "address": 300}
# Ticket ages (seconds) past this are no useful colour on a kitchen screen.
AGE_MAX = 24 * 3600


class OutletAdminForm(forms.ModelForm):
    """The same bounds as the operations screen's form (a weight of 32767 made routing take seconds)."""

    weight = forms.IntegerField(min_value=1, max_value=OUTLET_WEIGHT_MAX, initial=1)
    amber_after = forms.IntegerField(min_value=1, max_value=AGE_MAX, initial=300)
    red_after = forms.IntegerField(min_value=1, max_value=AGE_MAX, initial=600)

    class Meta:
        model = Outlet
        fields = ("slug", "name", "weight", "amber_after", "red_after")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        amber, red = data.get("amber_after"), data.get("red_after")
        if amber is not None and red is not None and red < amber:
            self.add_error("red_after", "Red must come after amber.")
        return data


class OrderAdminForm(forms.ModelForm):
    class Meta:
        model = Order
        fields = ("customer",)  # everything else on the page is read-only

    def clean_customer(self) -> dict[str, str]:
        """An object of name, phone and address texts: anything else broke the order list."""
        value = self.cleaned_data.get("customer")
        if not isinstance(value, dict):
            raise forms.ValidationError('Enter an object such as {"name": "Ann", "phone": ""}.')
        unknown = sorted(set(value) - set(CUSTOMER_FIELDS))
        if unknown:
            raise forms.ValidationError(f"Unknown keys: {', '.join(unknown)}.")
        for key, text in value.items():
            if not isinstance(text, str) or "\x00" in text or len(text) > CUSTOMER_FIELDS[key]:
                raise forms.ValidationError(
                    f"{key} must be text of at most {CUSTOMER_FIELDS[key]} characters."
                )
        if not value.get("name", "").strip():
            raise forms.ValidationError("name is required.")
        return value


@admin.register(Outlet)
class OutletAdmin(admin.ModelAdmin):
    form = OutletAdminForm
    list_display = (
        "slug",
        "name",
        "weight",
        "state",
        "last_heartbeat_at",
        "amber_after",
        "red_after",
    )
    list_filter = ("state",)
    search_fields = ("slug", "name")
    actions = ["rotate_token"]

    def get_fields(self, request: HttpRequest, obj: Outlet | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("slug", *OUTLET_EDITABLE)
        return ("slug", *OUTLET_EDITABLE, "state", "last_heartbeat_at", "back_since", "created_at")

    def get_readonly_fields(
        self, request: HttpRequest, obj: Outlet | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ()
        # The slug places the outlet on the ring and in URLs: it does not change.
        return ("slug", "state", "last_heartbeat_at", "back_since", "created_at")

    def has_delete_permission(self, request: HttpRequest, obj: Outlet | None = None) -> bool:
        return False  # orders keep pointing at their outlet; retire it instead

    def save_model(self, request: HttpRequest, obj: Outlet, form: ModelForm, change: bool) -> None:
        if change:
            # Only the fields edited here: a whole-row save would write back the state
            # and heartbeat this form loaded, undoing what the notifier did meanwhile.
            fields = [f for f in form.changed_data if f in OUTLET_EDITABLE]
            if fields:
                obj.save(update_fields=fields)
            return
        outlet, token = outlet_create(slug=obj.slug, name=obj.name, weight=obj.weight)
        Outlet.objects.filter(pk=outlet.pk).update(
            amber_after=obj.amber_after, red_after=obj.red_after
        )
        obj.pk = outlet.pk
        obj.refresh_from_db()
        obj._agent_token = token  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: Outlet, post_url_continue: str | None = None
    ) -> HttpResponse:
        token = getattr(obj, "_agent_token", None)
        if token:
            return _tokens_page(request, f"Outlet {obj.slug} added", [(obj, token)])
        return super().response_add(request, obj, post_url_continue)

    @admin.action(description="Rotate the agent token (the new one is shown once)")
    def rotate_token(self, request: HttpRequest, queryset: QuerySet[Outlet]) -> HttpResponse | None:
        outlets = list(queryset.exclude(state=OutletState.RETIRED).order_by("slug"))
        if not outlets:
            self.message_user(request, "Retired outlets have no token to rotate.")
            return None
        tokens = [(outlet, outlet_rotate_token(outlet=outlet)) for outlet in outlets]
        return _tokens_page(request, "New agent tokens", tokens)


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    fk_name = "order"
    fields = ("id", "at", "type", "state", "outlet", "from_outlet", "fence", "detail")
    readonly_fields = fields
    ordering = ("id",)
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OrderActionForm(ActionForm):
    """The admin's action bar, with what the ways out need: a destination, a reason."""

    outlet = forms.ModelChoiceField(
        queryset=Outlet.objects.filter(state=OutletState.ACTIVE).order_by("slug"),
        required=False,
        label="to outlet",
        to_field_name="slug",
    )
    reason = forms.CharField(required=False, max_length=200, label="reason (the customer sees it)")


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """Orders are placed by customers and moved by the queue; here they are read, contacts fixed,
    and a manager's ways out (send, hand over, cancel) taken as actions."""

    action_form = OrderActionForm
    actions = ["send_to_outlet", "hand_over", "cancel_with_reason"]

    form = OrderAdminForm

    list_display = (
        "id",
        "kind",
        "state",
        "outlet",
        "zone",
        "customer_name",
        "created_at",
        "attempts",
    )
    list_filter = ("state", "kind", "outlet")
    list_select_related = ("outlet",)
    search_fields = ("=id", "token", "zone")
    date_hierarchy = "created_at"
    inlines = [OrderEventInline]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "token",
                    "kind",
                    "zone",
                    "rush",
                    "quick",
                    "items",
                    "prep_seconds",
                    "customer",
                )
            },
        ),
        (
            "State",
            {
                "fields": (
                    "state",
                    "cancel_reason",
                    "created_at",
                    "claimed_at",
                    "ready_at",
                    "finished_at",
                )
            },
        ),
        (
            "Queue (written only by the queue)",
            {
                "fields": (
                    "outlet",
                    "sort_key",
                    "fence",
                    "claimed_by",
                    "lease_expires_at",
                    "attempts",
                )
            },
        ),
    )
    readonly_fields = (
        "token", "kind", "zone", "rush", "quick", "items", "prep_seconds", "state", "cancel_reason",
        "created_at", "claimed_at", "ready_at", "finished_at",
        "outlet", "sort_key", "fence", "claimed_by", "lease_expires_at", "attempts",
    )  # fmt: skip

    def has_manage_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_superuser or user.has_perm(MANAGER_PERMISSION))

    def _each(self, request: HttpRequest, queryset: QuerySet[Order], act: Any, done: str) -> None:
        """Run ``act`` on each order (its own transaction); report what happened and what not."""
        by = request.user.get_username()
        ok: list[int] = []
        for order_id in queryset.order_by("id").values_list("id", flat=True):
            try:
                act(order_id=order_id, by=by)
            except QueueError as exc:
                self.message_user(request, f"Order {order_id}: {exc.message}", messages.ERROR)
            else:
                ok.append(order_id)
        if ok:
            self.message_user(request, f"{done}: order {', '.join(map(str, ok))}.")

    @admin.action(description="Send to the outlet chosen beside the action", permissions=["manage"])
    def send_to_outlet(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        outlet = Outlet.objects.filter(
            slug=request.POST.get("outlet", ""), state=OutletState.ACTIVE
        ).first()
        if outlet is None:
            self.message_user(request, "Choose an active outlet to send to.", messages.ERROR)
            return
        self._each(
            request,
            queryset,
            lambda order_id, by: order_send(order_id=order_id, outlet=outlet, by=by),
            f"Sent to {outlet.slug}",
        )

    @admin.action(description="Mark handed over (completed)", permissions=["manage"])
    def hand_over(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        self._each(request, queryset, order_hand_over, "Marked handed over")

    @admin.action(
        description="Cancel with the reason given beside the action", permissions=["manage"]
    )
    def cancel_with_reason(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        reason = request.POST.get("reason", "")
        self._each(
            request,
            queryset,
            lambda order_id, by: order_cancel(order_id=order_id, reason=reason, by=by),
            "Cancelled",
        )

    @admin.display(description="customer")
    def customer_name(self, order: Order) -> str:
        customer = order.customer
        return str(customer.get("name", "")) if isinstance(customer, dict) else ""

    @admin.display(description="items")
    def items(self, order: Order) -> str:
        return "; ".join(
            f"{line['qty']}× {line['name']}" + (f" ({line['note']})" if line.get("note") else "")
            for line in order.lines
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # orders come through the order form or the API, which route and record them

    def has_delete_permission(self, request: HttpRequest, obj: Order | None = None) -> bool:
        return False  # the audit trail stays

    def save_model(self, request: HttpRequest, obj: Order, form: ModelForm, change: bool) -> None:
        # Only the customer's contact is editable: never write back queue columns this form loaded.
        if "customer" in form.changed_data:
            obj.save(update_fields=["customer"])


@admin.register(OrderEvent)
class OrderEventAdmin(admin.ModelAdmin):
    list_display = ("id", "at", "type", "order", "state", "outlet", "from_outlet", "fence")
    list_filter = ("type", "outlet")
    list_select_related = ("order", "outlet", "from_outlet")
    search_fields = ("=order__id", "order__token")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OrderEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OrderEvent | None = None) -> bool:
        return False


@admin.register(NotifierStatus)
class NotifierStatusAdmin(admin.ModelAdmin):
    list_display = (
        "leader",
        "term",
        "leader_since",
        "lease_expires_at",
        "last_tick_at",
        "alert",
        "alert_since",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: NotifierStatus | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: NotifierStatus | None = None
    ) -> bool:
        return False
