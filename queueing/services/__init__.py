"""The queue's writes. Views, consumers and commands call these and nothing else to change the queue."""

from queueing.services.claims import (
    lease_renew,
    order_claim_next,
    order_claim_ticket,
    order_complete,
    order_mark_ready,
    order_recall,
    orders_complete,
    orders_mark_ready,
    station_claims_renew,
    stations_release,
)
from queueing.services.orders import order_enqueue
from queueing.services.outlets import (
    outlet_authenticate,
    outlet_create,
    outlet_drain,
    outlet_heartbeat,
    outlet_heartbeat_by_token,
    outlet_mark_down,
    outlet_retire,
    outlet_rotate_token,
)
from queueing.services.routing import orders_move, outlets_reroute
from queueing.services.ways_out import order_cancel, order_hand_over, order_send

__all__ = [
    "lease_renew",
    "order_cancel",
    "order_claim_next",
    "order_claim_ticket",
    "order_complete",
    "order_enqueue",
    "order_hand_over",
    "order_mark_ready",
    "order_recall",
    "order_send",
    "orders_complete",
    "orders_mark_ready",
    "orders_move",
    "outlet_authenticate",
    "outlet_create",
    "outlet_drain",
    "outlet_heartbeat",
    "outlet_heartbeat_by_token",
    "outlet_mark_down",
    "outlet_retire",
    "outlet_rotate_token",
    "outlets_reroute",
    "station_claims_renew",
    "stations_release",
]
