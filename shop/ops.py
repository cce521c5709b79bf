"""The operations screen (managers): outlet health, the ring, what happened lately, and outlet actions.

Every action shows a confirmation page first (GET) and acts on its POST,
calling one service of queueing.services, which records the outlet event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache, wraps
from typing import Any
from weakref import WeakKeyDictionary

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods

from queueing.errors import OutletNotEmpty, QueueError
from queueing.events import events_cursor
from queueing.models import EventType, Order, OrderEvent, Outlet, OutletState
from queueing.ring import HashRing
from queueing.selectors import (
    LastHour,
    events_notable,
    notifier_status,
    open_delivery_zones,
    orders_needing_attention,
    orders_stranded,
    outlet_open_orders_count,
    outlets_health,
    outlets_last_hour,
)
from queueing.services import (
    order_cancel,
    order_send,
    outlet_create,
    outlet_drain,
    outlet_mark_down,
    outlet_retire,
)
from queueing.services.outlets import outlet_activate, outlet_get
from queueing.services.routing import ring_of
from shop.access import is_manager
from shop.forms import OutletForm
from shop.payments import (
    NO_TAKINGS,
    Takings,
    local_day_start,
    order_hand_over_paid,
    payment_parse,
    takings_by_outlet,
    takings_total,
)
from shop.refusal import Refused


def manager_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous visitors go to the login page; signed-in users without the permission get 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_manager(request.user):
            raise PermissionDenied("operations is for managers")
        return view(request, *args, **kwargs)

    return wrapper


# --- The overview ----------------------------------------------------------------


@dataclass
class RingRow:
    outlet: Outlet
    share: float  # of the key space, on the ring of active outlets
    heirs: list[tuple[str, int]]  # who takes its key space if it dies, in whole percent
    zones: list[tuple[str, int, str]]  # (zone, open delivery orders, where they would go)
    percent: int = 0  # share in whole percent; the rows' percents add up to 100

    # The row's lists as HTML, joined here: a template loop per outlet costs more than the
    # rest of the row at 1,000 outlets.
    @property
    def heirs_html(self) -> str:
        return _heirs_html(tuple(self.heirs))

    @property
    def zones_html(self) -> str:
        return format_html_join(
            "; ",
            '<span class="zone">{} ×{} → {}</span>',
            ((zone or "(no zone)", count, where) for zone, count, where in self.zones),
        )


@lru_cache(maxsize=4096)
def _heirs_html(heirs: tuple[tuple[str, int], ...]) -> str:
    """One outlet's heirs as HTML; the same for every render of the same ring."""
    return format_html_join(", ", '<span class="heir">{} takes {}%</span>', heirs)


def whole_percents(parts: list[float]) -> list[int]:
    """Parts of a whole as whole percents that add up to 100 (largest remainder), or all 0."""
    total = sum(parts)
    if total <= 0:
        return [0] * len(parts)
    exact = [100 * p / total for p in parts]
    percents = [int(x) for x in exact]
    by_remainder = sorted(range(len(parts)), key=lambda i: (percents[i] - exact[i], i))
    for i in by_remainder[: 100 - sum(percents)]:
        percents[i] += 1
    return percents


HEIRS_SHOWN = 3  # per outlet; at 1,000 outlets each dead one spreads over dozens


_RING_FIGURES: WeakKeyDictionary[
    HashRing, tuple[dict[str, float], dict[str, list[tuple[str, int]]]]
]
_RING_FIGURES = WeakKeyDictionary()


def ring_figures(
    ring: HashRing,
) -> tuple[dict[str, float], dict[str, list[tuple[str, int]]]]:
    """Each outlet's share, and its heirs in whole percents (the first few, then the rest).

    Worked out once per ring (``ring_of`` keeps one ring per set of active outlets and
    weights): at 1,000 outlets it costs more than the rest of the overview.
    """
    figures = _RING_FIGURES.get(ring)
    if figures is None:
        heirs: dict[str, list[tuple[str, int]]] = {}
        for slug, gains in ring.heirs().items():
            by_gain = sorted((s for s, g in gains.items() if g > 1e-9), key=lambda s: -gains[s])
            percents = whole_percents([gains[s] for s in by_gain])
            if len(by_gain) > HEIRS_SHOWN:  # a big chain: the first few, then the rest together
                rest = len(by_gain) - HEIRS_SHOWN
                by_gain = [*by_gain[:HEIRS_SHOWN], f"the rest ({rest} outlets)"]
                percents = [*percents[:HEIRS_SHOWN], sum(percents[HEIRS_SHOWN:])]
            heirs[slug] = list(zip(by_gain, percents, strict=True))
        figures = _RING_FIGURES[ring] = (ring.shares(), heirs)
    return figures


def ring_rows(outlets: list[Outlet], shown: set[int] | None = None) -> list[RingRow]:
    """The ring of active outlets, and for each live outlet where its orders would go if it died.

    Consistent hashing moves only the dead outlet's keys, so what each survivor
    gains is read off the one ring of active outlets (``HashRing.heirs``), never a
    ring rebuilt per outlet. Bounded loads may spill an order further along the
    ring when its heir is full. With ``shown`` (outlet ids), only those outlets'
    rows, their percents still of the whole ring.
    """
    active = [o for o in outlets if o.state == OutletState.ACTIVE]
    live = [o for o in outlets if o.state in (OutletState.ACTIVE, OutletState.DRAINING)]
    ring = ring_of(active) if active else None
    shares, heirs_by_outlet = ring_figures(ring) if ring else ({}, {})
    zones_by_outlet: dict[int, list[tuple[str, int]]] = {}
    for outlet_id, zone, count in open_delivery_zones():
        zones_by_outlet.setdefault(outlet_id, []).append((zone, count))
    rows = []
    for outlet in live:
        zones: list[tuple[str, int, str]] = []
        for zone, count in (
            zones_by_outlet.get(outlet.pk, []) if shown is None or outlet.pk in shown else []
        ):
            heir = ring.heir(zone, leaving=outlet.slug) if ring and zone else None
            if not zone and ring and len(ring.nodes) > (outlet.slug in ring.nodes):
                where = "(each its own way)"  # keyed by its token: each may go elsewhere
            else:
                where = heir or "nowhere: it would wait"
            zones.append((zone, count, where))
        rows.append(
            RingRow(
                outlet=outlet,
                share=shares.get(outlet.slug, 0.0),
                heirs=heirs_by_outlet.get(outlet.slug, []),
                zones=zones,
            )
        )
    for row, percent in zip(rows, whole_percents([r.share for r in rows]), strict=True):
        row.percent = percent
    return rows if shown is None else [r for r in rows if r.outlet.pk in shown]


OUTLET_ACTION_WORDS = {
    "added": "was added",
    "down": "was declared down",
    "back": "is back",
    "activate": "was reactivated",
    "drain": "is draining",
    "retire": "was retired",
}


def event_words(event: OrderEvent) -> str:
    """One line of the "what happened lately" list."""
    detail = event.detail if isinstance(event.detail, dict) else {}
    reason = f" ({detail['reason']})" if detail.get("reason") else ""
    outlet = event.outlet.name if event.outlet else "no outlet"
    if event.type == EventType.OUTLET:
        action = str(detail.get("action", ""))
        words = OUTLET_ACTION_WORDS.get(action, f"is now {event.state}")
        if action == "drain" and detail.get("move"):
            words += ", its waiting delivery orders moved"
        return f"{outlet} {words}{reason}"
    number = f"Order {event.order_id}"
    if event.type == EventType.REROUTED:
        where = f"to {outlet}" if event.outlet else "to no outlet (waiting for one)"
        source = f"from {event.from_outlet.name} " if event.from_outlet else ""
        return f"{number} moved {source}{where}{reason}"
    if event.type == EventType.CANCELLED:
        return f"{number} cancelled{reason}"
    at = f" at {outlet}" if event.outlet else ""
    return f"{number} {event.get_type_display()}{at}{reason}"  # type: ignore[attr-defined]


def outlet_waiting_words(outlet: Outlet) -> str:
    """Why a down outlet takes no orders, and what brings it back, in a manager's words."""
    if outlet.state != OutletState.DOWN:
        return ""
    if outlet.down_by_manager:
        return "marked down by a manager: stays down until a manager reactivates it"
    guard = f"{settings.HEARTH_FLAP_GUARD:g} s"
    if outlet.last_heartbeat_at is None:
        return f"new: takes orders once its agent has heartbeated without a break for {guard}"
    comes_back = "draining" if outlet.resume_state == OutletState.DRAINING else "active"
    return f"comes back {comes_back} after {guard} of unbroken heartbeats"


# --- The last hour, as small charts ------------------------------------------------

SPARK_WIDTH = 96  # the SVG's viewBox; CSS sizes it
SPARK_HEIGHT = 20


def spark_path(values: list[float | None]) -> str:
    """An SVG path through the values, scaled to the box (0 at the bottom); None breaks the line."""
    top = max((v for v in values if v is not None), default=0) or 1
    step = SPARK_WIDTH / (len(values) - 1)
    parts, pen_down = [], False
    for i, value in enumerate(values):
        if value is None:
            pen_down = False
            continue
        y = SPARK_HEIGHT - 1 - (SPARK_HEIGHT - 2) * value / top
        parts.append(f"{'L' if pen_down else 'M'}{i * step:.1f} {y:.1f}")
        pen_down = True
    return "".join(parts)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} s"


def _spark(kind: str, name: str, values: list[Any], words: Callable[[Any], str]) -> str:
    """One chart; every part is a constant or a number, so nothing needs escaping."""
    return _spark_drawn(kind, name, tuple(values), words)


# The overview polls every few seconds and an outlet's last hour changes only when its
# orders do (or a bucket ends): the same charts are drawn again and again.
@lru_cache(maxsize=8192)
def _spark_drawn(kind: str, name: str, values: tuple[Any, ...], words: Callable[[Any], str]) -> str:
    path = spark_path(list(values))
    line = (
        f'<path d="{path}" stroke="currentColor" stroke-width="1.5" fill="none" '
        'stroke-linejoin="round"/>'
        if path
        else ""
    )
    return (
        f'<span class="spark spark--{kind}"><svg viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" '
        f'width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" role="img" '
        f'aria-label="{name}, last hour per 5 minutes: {", ".join(words(v) for v in values)}" '
        f'focusable="false"><path d="M0 {SPARK_HEIGHT - 1}H{SPARK_WIDTH}" class="spark-base" '
        f'stroke="currentColor" stroke-width="1" fill="none"/>{line}</svg>'
        f'<span class="spark-words">{name} <b>{words(values[-1])}</b></span></span>'
    )


def last_hour_sparks(hour: LastHour) -> str:
    """The three charts of one outlet's row, as HTML (drawn here: a template loop per outlet
    costs more than the rest of the row at 1,000 outlets)."""
    return mark_safe(  # noqa: S308 - constants and numbers only
        _spark("placed", "placed", hour.placed, str)
        + _spark("wait", "wait", hour.wait, _seconds)
        + _spark("reroutes", "moved away", hour.reroutes, str)
    )


QUIET_SPARKS = last_hour_sparks(LastHour())  # most outlets of a big chain share it


def pounds(value: Decimal) -> str:
    """A sum of money as the screens show it, thousands grouped: "£1,216.50"."""
    return f"£{value:,.2f}"


def takings_line(takings: Takings) -> str:
    """Money taken in the last hour and today, as HTML beside the charts (numbers only)."""
    return mark_safe(  # noqa: S308 - constants and numbers only
        f'<p class="takings"><span>taken last hour <b>{pounds(takings.hour)}</b></span> '
        f"<span>today <b>{pounds(takings.today)}</b></span></p>"
    )


NO_TAKINGS_LINE = takings_line(NO_TAKINGS)


@lru_cache(maxsize=64)
def _url_pattern(prefix: str, name: str, *fixed: str) -> str:
    return reverse(name, args=[_SLUG, *fixed])  # under ``prefix``, the script prefix now


_SLUG = "outlet-slug-here"


def _url_of(name: str, slug: str, *fixed: str) -> str:
    """``reverse(name, args=[slug, *fixed])`` for a slug, a thousand times a render, cheaply
    (a slug is URL-safe as it is: letters, digits, ``-`` and ``_``)."""
    return _url_pattern(get_script_prefix(), name, *fixed).replace(_SLUG, slug, 1)


# The outlets table, a page at a time: a chain of 1,000 outlets is 1,000 rows, and the
# overview is fetched again every few seconds.
OUTLET_STATES = (OutletState.ACTIVE, OutletState.DRAINING, OutletState.DOWN)
SEARCH_MAX = 50


@dataclass(frozen=True)
class OutletsView:
    """Which outlets the table shows: a search on name or slug, a state, a page."""

    q: str = ""
    state: str = ""
    page: str = "1"

    @classmethod
    def of(cls, query: QueryDict) -> OutletsView:
        """From the query string; anything unknown shows everything, from the first page."""
        state = query.get("state", "")
        return cls(
            q=query.get("q", "").strip()[:SEARCH_MAX],
            state=state if state in OUTLET_STATES or state == "look" else "",
            page=query.get("page", "1")[:10],
        )

    def query(self, **changes: str) -> str:
        """This view's query string, with ``changes``, leaving out what is the default."""
        fields = {"q": self.q, "state": self.state, "page": self.page, **changes}
        return urlencode({k: v for k, v in fields.items() if v and (k, v) != ("page", "1")})

    def keeps(self, outlet: Outlet) -> bool:
        if self.state == "look" and not outlet.needs_look:  # type: ignore[attr-defined]
            return False
        if self.state and self.state != "look" and outlet.state != self.state:
            return False
        q = self.q.casefold()
        return not q or q in outlet.slug.casefold() or q in outlet.name.casefold()


def _ops_href(view: OutletsView, page: int) -> str:
    """The operations screen at another page of the same view."""
    query = view.query(page=str(page))
    return f"{reverse('ops')}?{query}" if query else reverse("ops")


def _needs_look(outlet: Outlet) -> bool:
    """Silent, down, draining, or with an order older than the outlet's red age."""
    return bool(
        outlet.silent  # type: ignore[attr-defined]
        or outlet.state != OutletState.ACTIVE
        or (outlet.oldest_seconds or 0) >= outlet.red_after  # type: ignore[attr-defined]
    )


def _row_figures(outlet: Outlet, timeout: float) -> None:
    """The figures every outlet needs to be counted and sorted, cheap enough for all of them."""
    age = outlet.heartbeat_age  # type: ignore[attr-defined]
    outlet.heartbeat_seconds = None if age is None else max(0, int(age.total_seconds()))  # type: ignore[attr-defined]
    oldest = outlet.oldest_age  # type: ignore[attr-defined]
    outlet.oldest_seconds = None if oldest is None else max(0, int(oldest.total_seconds()))  # type: ignore[attr-defined]
    outlet.silent = outlet.state in (OutletState.ACTIVE, OutletState.DRAINING) and (  # type: ignore[attr-defined]
        outlet.heartbeat_seconds is None or outlet.heartbeat_seconds > timeout  # type: ignore[attr-defined]
    )
    outlet.needs_look = _needs_look(outlet)  # type: ignore[attr-defined]


def _row_details(outlet: Outlet, hours: dict[int, LastHour], takings: dict[Any, Takings]) -> None:
    """What only a shown row needs: its actions, links, words and charts."""
    open_orders = outlet.queued + outlet.preparing + outlet.ready  # type: ignore[attr-defined]
    outlet.action_links = [  # type: ignore[attr-defined]
        (a, _url_of("ops-outlet-action", outlet.slug, a.slug))
        for a in ACTIONS.values()
        if not action_refusal(a, outlet, open_orders)
    ]
    outlet.kitchen_url = _url_of("kitchen", outlet.slug)  # type: ignore[attr-defined]
    outlet.waiting_words = outlet_waiting_words(outlet)  # type: ignore[attr-defined]
    hour = hours.get(outlet.pk)
    outlet.sparks = last_hour_sparks(hour) if hour else QUIET_SPARKS  # type: ignore[attr-defined]
    taken = takings.get(outlet.pk)
    outlet.takings = takings_line(taken) if taken else NO_TAKINGS_LINE  # type: ignore[attr-defined]


def overview_context(view: OutletsView | None = None) -> dict[str, Any]:
    view = view or OutletsView()
    cursor, newest = events_cursor()  # read first: the overview below is at least this fresh
    everyone = list(outlets_health())
    # Retired outlets never come back: listed apart, folded away, so the table stays short.
    outlets = [o for o in everyone if o.state != OutletState.RETIRED]
    retired = [o for o in everyone if o.state == OutletState.RETIRED]
    timeout = settings.HEARTH_HEARTBEAT_TIMEOUT
    for outlet in outlets:
        _row_figures(outlet, timeout)
    # Those that need a look first, then by slug; a page of them, with the rest a click away.
    kept = sorted(
        (o for o in outlets if view.keeps(o)),
        key=lambda o: (not o.needs_look, o.slug),  # type: ignore[attr-defined]
    )
    page = Paginator(kept, settings.HEARTH_OPS_PAGE_SIZE).get_page(view.page)
    shown = list(page.object_list)
    hours = outlets_last_hour()
    takings = takings_by_outlet(day_start=local_day_start())
    for outlet in shown:
        _row_details(outlet, hours, takings)
    counts: dict[str, int] = {state: 0 for state in OUTLET_STATES}
    for outlet in outlets:
        counts[outlet.state] += 1
    return {
        "outlets": shown,
        "any_outlets": bool(outlets),
        "view": view,
        "page": page,
        "filtered": len(kept),
        "previous_href": page.has_previous() and _ops_href(view, page.number - 1),
        "next_href": page.has_next() and _ops_href(view, page.number + 1),
        "state_counts": [(state, counts[state]) for state in OUTLET_STATES],
        "look_count": len([o for o in outlets if o.needs_look]),  # type: ignore[attr-defined]
        "retired": retired,
        # Every outlet's, retired ones and orders handed over with no outlet included.
        "chain_takings": takings_line(takings_total(takings.values())),
        "ring": ring_rows(outlets, shown={o.pk for o in shown}),
        "ring_partial": len(shown) < len(outlets),
        "ring_empty": not any(o.state == OutletState.ACTIVE for o in outlets),
        "events": [(event, event_words(event)) for event in events_notable()],
        "attention": list(orders_needing_attention()),
        "stranded": list(orders_stranded()),
        "order_actions": list(ORDER_ACTIONS.values()),
        "notifier": notifier_status(),
        "heartbeat_timeout": timeout,
        "last_event_id": newest,
        "cursor": cursor,
        "server_now": timezone.now(),
    }


@require_GET
@manager_required
def ops_screen(request: HttpRequest) -> HttpResponse:
    response = render(request, "shop/ops.html", overview_context(OutletsView.of(request.GET)))
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def ops_overview_part(request: HttpRequest) -> HttpResponse:
    """The live part of the operations screen, fetched again on events and every few seconds.

    Signed out, it answers 401 rather than redirecting: a fetch would follow the
    redirect and put the login page inside the screen; the script shows a banner.
    """
    if not request.user.is_authenticated:
        return HttpResponse("Signed out: sign in again.", status=401, content_type="text/plain")
    if not is_manager(request.user):
        raise PermissionDenied("operations is for managers")
    response = render(
        request, "shop/_ops_overview.html", overview_context(OutletsView.of(request.GET))
    )
    response["Cache-Control"] = "no-store"
    return response


# --- Outlet actions ----------------------------------------------------------------


@dataclass(frozen=True)
class OutletAction:
    slug: str
    label: str
    short: str  # the button in the outlets table, where a row's buttons share one line
    explain: str  # {name} is the outlet's name
    allowed_from: tuple[str, ...]
    danger: bool
    run: Callable[[Outlet], str]


def _drain(outlet: Outlet) -> str:
    outlet_drain(outlet=outlet, move_queued=False)
    return f"{outlet.name} is draining: no new orders, it finishes what it has."


def _orders(count: int, what: str) -> str:
    """'1 delivery order', '2 delivery orders'."""
    return f"{count} {what} order{pluralize(count)}"


def _drain_move(outlet: Outlet) -> str:
    moved = outlet_drain(outlet=outlet, move_queued=True)
    return (
        f"{outlet.name} is draining; {_orders(len(moved), 'waiting delivery')} "
        "moved to other outlets."
    )


def _down(outlet: Outlet) -> str:
    moved, cancelled = outlet_mark_down(outlet=outlet)
    return (
        f"{outlet.name} is down: {_orders(len(moved), 'delivery')} moved, "
        f"{_orders(len(cancelled), 'takeaway')} cancelled (their customers are told)."
    )


def _retire(outlet: Outlet) -> str:
    try:
        outlet_retire(outlet=outlet)
    except OutletNotEmpty:
        # The engine's message counts without plurals; this one says what to do.
        raise OutletNotEmpty(
            "it still has open orders. Let them finish, or use Drain and move or Mark down; "
            "orders left ready at a down outlet are under Stranded orders: hand them over, "
            "send or cancel them, then retire it."
        ) from None
    return f"{outlet.name} is retired; its agent token no longer works."


def _activate(outlet: Outlet) -> str:
    outlet_activate(outlet=outlet)
    return f"{outlet.name} is active again and takes new orders."


_LIVE = (OutletState.ACTIVE, OutletState.DRAINING)
ACTIONS = {
    a.slug: a
    for a in (
        OutletAction(
            "drain",
            "Drain",
            "Drain",
            "{name} stops taking new orders and finishes the ones it has.",
            (OutletState.ACTIVE,),
            False,
            _drain,
        ),
        OutletAction(
            "drain-move",
            "Drain and move",
            "Drain + move",
            "{name} stops taking new orders; its delivery orders that nobody has started "
            "move to other outlets now. Orders being made stay and are finished there.",
            _LIVE,
            False,
            _drain_move,
        ),
        OutletAction(
            "down",
            "Mark down",
            "Mark down",
            "Declare {name} down now, for a planned outage: its open delivery orders move to "
            "other outlets and its takeaway orders are cancelled, their customers told at once.",
            _LIVE,
            True,
            _down,
        ),
        OutletAction(
            "retire",
            "Retire",
            "Retire",
            "Retire {name} for good: it leaves the ring and its agent token stops working. "
            "Only possible once it has no open orders.",
            (OutletState.DRAINING, OutletState.DOWN),
            True,
            _retire,
        ),
        OutletAction(
            "activate",
            "Reactivate",
            "Reactivate",
            "{name} takes new orders again. If nothing heartbeats for it, the notifier will "
            "declare it down again after the heartbeat timeout.",
            (OutletState.DRAINING, OutletState.DOWN),
            False,
            _activate,
        ),
    )
}


def action_refusal(action: OutletAction, outlet: Outlet, open_orders: int) -> str:
    """Why the action cannot be done to the outlet now ("" when it can): nothing is offered to be refused."""
    if outlet.state not in action.allowed_from:
        return f"{outlet.name} is {outlet.state}: {action.label} is not possible from there."
    if action.slug == "retire" and open_orders:
        return (
            f"{outlet.name} still has {_orders(open_orders, 'open')}. Let them finish, or use "
            "Drain and move or Mark down; orders left ready at a down outlet are under Stranded "
            "orders: hand them over, send or cancel them, then retire it."
        )
    return ""


@require_http_methods(["GET", "POST"])
@manager_required
def outlet_action(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    todo = ACTIONS.get(action)
    outlet = Outlet.objects.filter(slug=slug).first()
    if todo is None or outlet is None:
        raise Http404("no such outlet or action")
    if request.method == "GET":
        refusal = action_refusal(todo, outlet, outlet_open_orders_count(outlet=outlet))
        return render(
            request,
            "shop/ops_confirm.html",
            {
                "outlet": outlet,
                "action": todo,
                "explain": todo.explain.format(name=outlet.name),
                "refusal": refusal,
            },
            status=409 if refusal else 200,
        )
    try:
        messages.success(request, todo.run(outlet))
    except QueueError as exc:
        messages.error(request, f"{todo.label} {outlet.name}: {exc.message}")
    return redirect("ops")


# --- Order actions: a manager's ways out ---------------------------------------------


@dataclass(frozen=True)
class OrderAction:
    slug: str
    label: str
    explain: str
    danger: bool


ORDER_ACTIONS = {
    a.slug: a
    for a in (
        OrderAction(
            "send",
            "Send to an outlet",
            "The order goes to the chosen outlet's queue and is made there. Whoever held it "
            "can no longer act on it.",
            False,
        ),
        OrderAction(
            "handover",
            "Mark handed over",
            "The order reached its customer (by hand, or made elsewhere): it is completed.",
            False,
        ),
        OrderAction(
            "cancel",
            "Cancel",
            "The order is cancelled; the customer sees the reason you give on their order page.",
            True,
        ),
    )
}


def _order_action_run(request: HttpRequest, order: Order, action: str) -> str:
    """Parse the confirmation form and call the one service it names; returns what happened."""
    by = request.user.get_username()
    if action == "send":
        outlet = outlet_get(slug=request.POST.get("outlet", "").strip()[:50])
        order_send(order_id=order.pk, outlet=outlet, by=by)
        return f"Order {order.pk} sent to {outlet.name}: it is queued there."
    if action == "handover":
        paid = {"paid": request.POST.get("paid") == "on", "method": request.POST.get("method")}
        taken = payment_parse(paid, order=order)
        order_hand_over_paid(order=order, taken=taken, by=by)
        was_paid = " and paid" if taken else ""
        return f"Order {order.pk} marked handed over{was_paid}: it is completed."
    order_cancel(order_id=order.pk, reason=request.POST.get("reason", ""), by=by)
    return f"Order {order.pk} cancelled; its customer sees why."


@require_http_methods(["GET", "POST"])
@manager_required
def order_action(request: HttpRequest, number: int, action: str) -> HttpResponse:
    todo = ORDER_ACTIONS.get(action)
    order = Order.objects.select_related("outlet").filter(pk=number).first()
    if todo is None or order is None:
        raise Http404("no such order or action")
    if request.method == "GET":
        return render(
            request,
            "shop/ops_order_confirm.html",
            {
                "order": order,
                "action": todo,
                "outlets": Outlet.objects.filter(state=OutletState.ACTIVE).order_by("slug"),
            },
        )
    try:
        messages.success(request, _order_action_run(request, order, action))
    except (QueueError, Refused) as exc:
        messages.error(request, f"{todo.label}, order {order.pk}: {exc.message}")
    return redirect("ops")


# The new outlet's agent token waits here between the POST and the page that shows it.
NEW_TOKEN_KEY = "hearth_new_outlet_token"


@require_http_methods(["GET", "POST"])
@manager_required
def outlet_add(request: HttpRequest) -> HttpResponse:
    """The form; its POST redirects to ``?added=<slug>``, which shows the agent token once.

    POST/redirect/GET: reloading the page that shows the token asks the server
    for nothing new. The token is stored hashed; its clear text waits in the
    session only until that page is shown.
    """
    if request.method == "GET" and "added" in request.GET:
        return _outlet_added(request, request.GET["added"])
    form = OutletForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            outlet, token = outlet_create(
                slug=data["slug"], name=data["name"], weight=data["weight"]
            )
        except IntegrityError:  # two managers added the same slug at once
            form.add_error("slug", f"There is already an outlet {data['slug']}.")
        else:
            request.session[NEW_TOKEN_KEY] = {"slug": outlet.slug, "token": token}
            return redirect(f"{reverse('ops-outlet-add')}?{urlencode({'added': outlet.slug})}")
    status = 400 if request.method == "POST" else 200
    return render(request, "shop/ops_outlet_add.html", {"form": form}, status=status)


def _outlet_added(request: HttpRequest, slug: str) -> HttpResponse:
    outlet = Outlet.objects.filter(slug=slug).first()
    if outlet is None:
        raise Http404("no such outlet")
    pending = request.session.get(NEW_TOKEN_KEY)
    token = None
    if isinstance(pending, dict) and pending.get("slug") == slug:
        token = pending.get("token")
        del request.session[NEW_TOKEN_KEY]
    response = render(
        request,
        "shop/ops_outlet_added.html",
        {"outlet": outlet, "token": token, "server": request.build_absolute_uri("/").rstrip("/")},
    )
    response["Cache-Control"] = "no-store"
    return response
