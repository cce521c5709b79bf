"""The shop's tables: the menu, who works at which outlet, idempotent order requests, web processes."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.functions import Now

from queueing.models import Order, Outlet


class MenuItemManager(models.Manager["MenuItem"]):
    def get_by_natural_key(self, slug: str) -> MenuItem:
        return self.get(slug=slug)


class MenuItem(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    price = models.DecimalField(
        max_digits=7, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    prep_seconds = models.PositiveIntegerField(help_text="Time to prepare one, in seconds.")
    available = models.BooleanField(default=True)

    # Natural keys let `loaddata sample_menu` update the menu in place when run again.
    objects = MenuItemManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(price__gte=0), name="menuitem_price_not_negative"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def natural_key(self) -> tuple[str]:
        return (self.slug,)


class Membership(models.Model):
    """A staff user works at an outlet: they may open its kitchen screen."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    outlet = models.ForeignKey(Outlet, on_delete=models.CASCADE, related_name="memberships")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "outlet"], name="membership_unique")]
        permissions = [("manager", "Can open operations and every outlet's kitchen")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.outlet}"


class IdempotentRequest(models.Model):
    """The first answer to a request with an ``Idempotency-Key``; a retry gets it again."""

    key = models.CharField(max_length=200, unique=True)
    body_hash = models.CharField(max_length=64)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="+", null=True)
    created_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.key


class RateCounter(models.Model):
    """Requests one client made in the current window, per limit (``key`` = "<limit>:<client>")."""

    key = models.CharField(max_length=200, primary_key=True)
    window_start = models.DateTimeField(db_default=Now())
    hits = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}: {self.hits}"


class PaymentMethod(models.TextChoices):
    CASH = "cash", "Cash"
    CARD = "card", "Card"


class PaymentPlace(models.TextChoices):
    COUNTER = "counter", "at the counter"
    DELIVERY = "delivery", "on delivery"


class Payment(models.Model):
    """An order was paid for when it was handed over: how much, how, where, when and who took it.

    Kept in the shop, not on the engine's order row: the queue knows nothing of money.
    """

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="payment")
    amount = models.DecimalField(
        max_digits=9, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    method = models.CharField(max_length=10, choices=PaymentMethod.choices)
    where = models.CharField(max_length=10, choices=PaymentPlace.choices)
    paid_at = models.DateTimeField(db_default=Now())
    by = models.CharField(max_length=150, help_text="Who took the money.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gte=0), name="payment_amount_not_negative"
            )
        ]
        indexes = [models.Index(fields=["paid_at"], name="payment_paid_at")]

    def __str__(self) -> str:
        return f"order {self.order_id}: £{self.amount} {self.method} {self.get_where_display()}"


class WebProcess(models.Model):
    """A web process's live figures, written by itself every few seconds (shop.live_metrics)."""

    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    # Random per process start: containers often share a hostname and run as pid 1.
    boot = models.CharField(max_length=16)
    seen_at = models.DateTimeField(db_default=Now())
    kitchen_sockets = models.PositiveIntegerField(default=0)
    order_sockets = models.PositiveIntegerField(default=0)
    ops_sockets = models.PositiveIntegerField(default=0)
    # Event → socket lag since the process started: {"<upper bound>": cumulative count}.
    lag_buckets = models.JSONField(default=dict)
    lag_sum = models.FloatField(default=0)
    lag_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "pid", "boot"], name="webprocess_unique")
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.boot}"
