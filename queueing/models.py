"""The queue's tables: outlets, their heartbeats, orders with their queue columns, order events."""

from __future__ import annotations

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class OutletState(models.TextChoices):
    ACTIVE = "active", "active"
    DRAINING = "draining", "draining"
    DOWN = "down", "down"
    RETIRED = "retired", "retired"


# Capacity weights beyond this make the ring's virtual nodes (and every routing) slow.
OUTLET_WEIGHT_MAX = 100


class Outlet(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    weight = models.PositiveSmallIntegerField(default=1, help_text="Capacity weight on the ring.")
    # A new outlet is down until its first heartbeats prove it alive (see OUTLETS_BACK).
    state = models.CharField(max_length=10, choices=OutletState.choices, default=OutletState.DOWN)
    # Database clock, written by outlet_heartbeat; compared only with now() in SQL.
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When an outlet came back after being down (flap guard starts here).
    back_since = models.DateTimeField(null=True, blank=True)
    # Heartbeats since back_since: a return needs several, never one.
    back_beats = models.PositiveIntegerField(default=0, db_default=0)
    # A manager's mark-down holds until a manager reactivates, whatever heartbeats.
    down_by_manager = models.BooleanField(default=False, db_default=False)
    # The state a down outlet returns to by itself: a drained outlet comes back draining.
    # Database defaults too: rows written by raw SQL (tests' bulk loads) need them.
    resume_state = models.CharField(
        max_length=10,
        choices=OutletState.choices,
        default=OutletState.ACTIVE,
        db_default=OutletState.ACTIVE,
    )
    token_hash = models.CharField(max_length=128, blank=True, editable=False, db_index=True)
    amber_after = models.PositiveIntegerField(
        default=300, help_text="Ticket age (s) that turns amber."
    )
    red_after = models.PositiveIntegerField(default=600, help_text="Ticket age (s) that turns red.")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def takes_new_orders(self) -> bool:
        return self.state == OutletState.ACTIVE


class Heartbeat(models.Model):
    outlet = models.ForeignKey(Outlet, on_delete=models.CASCADE, related_name="heartbeats")
    source = models.CharField(max_length=60)
    seq = models.BigIntegerField(default=0)
    at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["outlet", "-at"], name="heartbeat_outlet_at"),
            models.Index(fields=["at"], name="heartbeat_prune"),
        ]

    def __str__(self) -> str:
        return f"{self.outlet_id}:{self.source}#{self.seq}"


class OrderKind(models.TextChoices):
    TAKEAWAY = "takeaway", "takeaway"
    DELIVERY = "delivery", "delivery"


class OrderState(models.TextChoices):
    QUEUED = "queued", "queued"
    PREPARING = "preparing", "preparing"
    READY = "ready", "ready"
    COMPLETED = "completed", "completed"
    CANCELLED = "cancelled", "cancelled"
    ATTENTION = "attention", "needs attention"


OPEN_STATES = (OrderState.QUEUED, OrderState.PREPARING, OrderState.READY)


class Order(models.Model):
    """An order and its place in the queue. ``id`` is the number the customer is told."""

    token = models.CharField(max_length=40, unique=True, editable=False)
    kind = models.CharField(max_length=10, choices=OrderKind.choices)
    zone = models.CharField(max_length=40, blank=True, help_text="Delivery zone: the routing key.")
    rush = models.BooleanField(default=False)
    quick = models.BooleanField(default=False)
    # A snapshot of what was ordered: [{"item", "name", "qty", "note", "prep_seconds"}].
    lines = models.JSONField()
    customer = models.JSONField(default=dict)
    prep_seconds = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=10, choices=OrderState.choices, default=OrderState.QUEUED)
    cancel_reason = models.CharField(max_length=200, blank=True)
    # Queue columns: written only by queueing.services.
    # No index of its own: the partial indexes below lead with outlet, and outlets are
    # retired, never deleted (every extra index is written at each claim and move).
    outlet = models.ForeignKey(
        Outlet,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="orders",
        db_index=False,
    )
    sort_key = models.DateTimeField()
    fence = models.BigIntegerField(default=0)
    claimed_by = models.CharField(max_length=60, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    claimed_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The claim: next queued order of an outlet by priority. ``id`` too, so the
            # index is in exactly the claim's ORDER BY and a claim reads only the rows it
            # takes instead of sorting the outlet's whole queue.
            models.Index(
                fields=["outlet", "sort_key", "id"],
                name="order_claim_queue",
                condition=Q(state="queued"),
            ),
            # Health and rerouting: open orders per outlet. In claim order within a state
            # too: the planner may read an outlet's queue through this index instead of
            # the one above (on statistics that say the queue is short, both cost one
            # row), and it must then stop after the rows it needs, not sort the queue.
            models.Index(
                fields=["outlet", "state", "sort_key", "id"],
                name="order_open_by_outlet",
                condition=Q(state__in=["queued", "preparing", "ready"]),
            ),
            # Lease expiry scan (ready orders have a holder's lease too).
            models.Index(
                fields=["lease_expires_at"],
                name="order_lease_expiry",
                condition=Q(state__in=["preparing", "ready"]),
            ),
            # Orders waiting for any outlet, and orders needing attention.
            models.Index(
                fields=["created_at"],
                name="order_unassigned",
                condition=Q(outlet__isnull=True, state="queued") | Q(state="attention"),
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.pk}"

    @property
    def number(self) -> int:
        return self.pk

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class EventType(models.TextChoices):
    PLACED = "placed", "placed"
    CLAIMED = "claimed", "claimed"
    READY = "ready", "ready"
    COMPLETED = "completed", "completed"
    RECALLED = "recalled", "recalled"
    RENEWED = "renewed", "renewed"
    REROUTED = "rerouted", "rerouted"
    CANCELLED = "cancelled", "cancelled"
    LEASE_EXPIRED = "lease_expired", "lease expired"
    RELEASED = "released", "handed back"
    ATTENTION = "attention", "needs attention"
    WAITING = "waiting", "no outlet available"
    OUTLET = "outlet", "outlet changed"


class OrderEvent(models.Model):
    """Append-only; written in the transaction of the change it records."""

    # The foreign keys have no single-column indexes: the (key, id) indexes in Meta
    # serve every lookup, and each index is written once per event.
    order = models.ForeignKey(
        Order,
        on_delete=models.CASCADE,
        related_name="events",
        null=True,
        blank=True,
        db_index=False,
    )
    type = models.CharField(max_length=20, choices=EventType.choices)
    state = models.CharField(max_length=10, blank=True)
    outlet = models.ForeignKey(
        Outlet, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    from_outlet = models.ForeignKey(
        Outlet, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    fence = models.BigIntegerField(default=0)
    detail = models.JSONField(default=dict)
    at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["order", "id"], name="event_by_order"),
            models.Index(fields=["outlet", "id"], name="event_by_outlet"),
            models.Index(fields=["from_outlet", "id"], name="event_by_from_outlet"),
            # Windows of recent events (metrics): events are appended in time order, so a
            # BRIN index finds the last minute's pages for almost nothing per insert.
            BrinIndex(fields=["at"], name="event_at_brin", autosummarize=True),
        ]

    def __str__(self) -> str:
        return f"event {self.pk} {self.type}"


class NotifierStatus(models.Model):
    """One row: who leads the notifiers (its term and lease), its last tick, and any alert."""

    leader = models.CharField(max_length=100, blank=True)
    leader_since = models.DateTimeField(null=True, blank=True)
    last_tick_at = models.DateTimeField(null=True, blank=True)
    # The leader's term: grows at every takeover (from a sequence, so it keeps growing even
    # if the row is deleted); every write of a tick is fenced by it (queueing.sql.LEADER_FENCE).
    term = models.BigIntegerField(default=0)
    # Database clock; the leader renews it every tick. Past it, any notifier may take over.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    alert = models.CharField(max_length=300, blank=True)
    alert_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "notifier status"

    def __str__(self) -> str:
        return f"notifier led by {self.leader or 'nobody'}"
