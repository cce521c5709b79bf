"""The HTML forms: a customer's order, a new outlet. Domain rules stay in shop.ordering and queueing."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Any

from django import forms

from queueing.models import OUTLET_WEIGHT_MAX, OrderKind, Outlet
from shop.models import MenuItem
from shop.ordering import MAX_NOTE, MAX_QTY
from shop.refusal import Refused

# The id of the datalist of known delivery zones that the zone field offers.
ZONE_LIST_ID = "known-zones"

# "lines[3].qty" -> (3, "qty")
_LINE_FIELD = re.compile(r"^lines\[(\d+)\]\.(\w+)$")

# Where the parser's field names (shared with the JSON API) show up on this form.
_FORM_FIELD = {
    "kind": "kind",
    "outlet": "outlet",
    "zone": "zone",
    "customer": "name",
    "customer.name": "name",
    "customer.phone": "phone",
    "customer.address": "address",
}


class OrderForm(forms.Form):
    """A quantity and a note per available menu item, then takeaway or delivery and the customer.

    Fields check only their type; what makes an order acceptable is decided by
    ``shop.ordering.order_request_parse``, the same rules as the API's.
    """

    kind = forms.ChoiceField(
        choices=OrderKind.choices, widget=forms.RadioSelect, initial=OrderKind.TAKEAWAY
    )
    outlet = forms.ChoiceField(required=False, label="Pick it up at")
    # Limits are the API's (shop.ordering), so every field's error shows at once here.
    zone = forms.CharField(
        required=False,
        max_length=40,
        label="Delivery zone",
        widget=forms.TextInput(attrs={"placeholder": "e.g. N1", "list": ZONE_LIST_ID}),
    )
    name = forms.CharField(
        required=False,
        max_length=100,
        label="Your name",
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    phone = forms.CharField(
        required=False,
        max_length=40,
        label="Phone",
        widget=forms.TextInput(attrs={"autocomplete": "tel"}),
    )
    address = forms.CharField(
        required=False,
        max_length=300,
        label="Address",
        widget=forms.Textarea(attrs={"rows": 2, "autocomplete": "street-address"}),
    )
    # One order per form shown: a double click or a resubmitted page places it once.
    form_id = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(
        self,
        *args: Any,
        menu: Iterable[MenuItem],
        outlets: Iterable[Outlet],
        zones: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.menu = list(menu)
        self.zones = list(zones)  # offered in a datalist; any other zone may still be typed
        outlet_field = self.fields["outlet"]
        assert isinstance(outlet_field, forms.ChoiceField)
        outlet_field.choices = [("", "— choose an outlet —")] + [(o.slug, o.name) for o in outlets]
        if not self.is_bound:
            self.initial["form_id"] = secrets.token_urlsafe(16)
        for item in self.menu:
            self.fields[f"qty_{item.slug}"] = forms.IntegerField(
                required=False,  # blank is 0: not ordered
                label=item.name,
                initial=0,
                widget=forms.NumberInput(attrs={"min": 0, "max": MAX_QTY, "inputmode": "numeric"}),
                error_messages={"invalid": f"Enter a number from 0 (none) to {MAX_QTY}."},
            )
            self.fields[f"note_{item.slug}"] = forms.CharField(
                required=False,
                max_length=MAX_NOTE,
                label=f"Note for {item.name}",
                widget=forms.TextInput(attrs={"placeholder": "note (optional)"}),
            )

    def menu_rows(self) -> list[tuple[MenuItem, forms.BoundField, forms.BoundField]]:
        """(item, quantity field, note field) per menu item, for the template."""
        return [(item, self[f"qty_{item.slug}"], self[f"note_{item.slug}"]) for item in self.menu]

    def clean(self) -> dict[str, Any]:
        """Every missing or wrong field at once; shop.ordering still has the last word."""
        super().clean()
        data = self.cleaned_data
        for item in self.menu:
            qty = data.get(f"qty_{item.slug}")
            if qty is not None and not 0 <= qty <= MAX_QTY:
                self.add_error(f"qty_{item.slug}", f"Enter a number from 0 (none) to {MAX_QTY}.")
        kind = data.get("kind")
        needed = {"name": "Enter your name."}
        if kind == OrderKind.DELIVERY:
            needed |= {"zone": "Enter your delivery zone.", "address": "Enter your address."}
        elif kind == OrderKind.TAKEAWAY:
            needed["outlet"] = "Choose where you will pick it up."
        for name, message in needed.items():
            if name in data and not str(data[name]).strip():
                self.add_error(name, message)
        if not self._ordered_slugs() and not any(f"qty_{m.slug}" in self.errors for m in self.menu):
            self.add_error(None, "Choose at least one item: set how many you want.")
        return self.cleaned_data

    def _ordered_slugs(self) -> list[str]:
        """Items with a quantity; 0 or blank means not ordered."""
        return [m.slug for m in self.menu if self.cleaned_data.get(f"qty_{m.slug}")]

    def payload(self) -> dict[str, Any]:
        """The order request in the API's shape, for ``order_request_parse``."""
        data = self.cleaned_data
        kind = data["kind"]
        payload: dict[str, Any] = {
            "kind": kind,
            "lines": [
                {"item": slug, "qty": data[f"qty_{slug}"], "note": data[f"note_{slug}"]}
                for slug in self._ordered_slugs()
            ],
            "customer": {"name": data["name"], "phone": data["phone"], "address": data["address"]},
        }
        if kind == OrderKind.DELIVERY:
            payload["zone"] = data["zone"]
        else:
            payload["outlet"] = data["outlet"]
        return payload

    def renew_id(self) -> None:
        """Give a bound form a new id, so its next submission is a new order."""
        self.data = {**self.data, "form_id": secrets.token_urlsafe(16)}  # one value per field

    def idempotency_key(self) -> str:
        form_id = self.cleaned_data.get("form_id") or ""
        return f"order-form:{form_id}" if re.fullmatch(r"[\w-]{8,64}", form_id) else ""

    def add_order_error(self, exc: Refused) -> None:
        """Show the parser's refusal next to the field it names."""
        match = _LINE_FIELD.match(exc.field or "")
        if match:
            index, part = int(match.group(1)), match.group(2)
            ordered = self._ordered_slugs()
            if index < len(ordered):
                slug = ordered[index]
                name = f"note_{slug}" if part == "note" else f"qty_{slug}"
                self.add_error(name, _sentence(exc.message))
                return
        field = _FORM_FIELD.get(exc.field or "")
        if field:
            self.add_error(field, _sentence(exc.message, subject=_SUBJECT.get(field, "")))
        else:
            self.add_error(
                None,
                f"{exc.field}: {_sentence(exc.message)}" if exc.field else _sentence(exc.message),
            )


# The parser's messages leave out their subject ("is required"); the form names it.
_SUBJECT = {
    "kind": "The kind of order",
    "outlet": "The outlet",
    "zone": "The delivery zone",
    "name": "Your name",
    "phone": "The phone number",
    "address": "The address",
}


def _sentence(message: str, *, subject: str = "") -> str:
    """'is required' -> 'The address is required.'; 'unknown outlet' -> 'Unknown outlet.'"""
    if not message:
        return message
    if subject and message.split(" ", 1)[0] in ("is", "must"):
        message = f"{subject} {message}"
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else f"{message}."


class OutletForm(forms.Form):
    """A new outlet for the operations screen."""

    slug = forms.SlugField(
        max_length=50, help_text="Short name used in URLs and on the ring; cannot change later."
    )
    name = forms.CharField(max_length=100, required=False)
    weight = forms.IntegerField(
        min_value=1,
        max_value=OUTLET_WEIGHT_MAX,
        initial=1,
        help_text="Capacity weight on the ring.",
    )

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data["slug"]
        if Outlet.objects.filter(slug=slug).exists():
            raise forms.ValidationError(f"There is already an outlet {slug}.")
        return slug
