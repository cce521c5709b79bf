"""Every raw SQL statement of the queue, named and commented, in one place.

Values are always ``%(name)s`` parameters. A write that changes orders is a
``changed`` CTE; ``with_events`` appends the tail that writes one OrderEvent per
changed row in the same statement and returns each event's JSON as
``event_payload``. ``queueing.db`` NOTIFYs those payloads once the transaction
has committed (``EVENTS_NOTIFY``), so no screen ever hears of a change that was
rolled back. The NOTIFY is not sent inside the writing transaction on purpose:
PostgreSQL serialises the commits of notifying transactions through one
server-wide lock held across the WAL flush, which would cap the whole queue at
one commit per disk flush; a NOTIFY of its own holds that lock only briefly.
A process that dies between its commit and its NOTIFY leaves the event in the
table, where the listener's periodic catch-up and every reconnecting screen find it.

Every ``changed`` CTE returns ``order_columns(alias)`` plus ``from_outlet_id``
and ``event_detail`` (jsonb). Every statement that locks several orders locks
them in id order, so two of them can never deadlock.
"""

from __future__ import annotations

EVENTS_CHANNEL = "hearth_events"

_ORDER_COLUMNS = (
    "id",
    "token",
    "kind",
    "zone",
    "rush",
    "quick",
    "lines",
    "prep_seconds",
    "state",
    "cancel_reason",
    "outlet_id",
    "sort_key",
    "fence",
    "claimed_by",
    "lease_expires_at",
    "attempts",
    "created_at",
)


def order_columns(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in _ORDER_COLUMNS)


def with_events(changed: str) -> str:
    """Wrap a ``changed`` CTE so each changed order gets its event (and its payload to NOTIFY)."""
    return f"""
WITH changed AS (
{changed}
), ev AS (
    INSERT INTO queueing_orderevent
        (order_id, type, state, outlet_id, from_outlet_id, fence, detail, at)
    SELECT c.id, %(event_type)s, c.state, c.outlet_id, c.from_outlet_id, c.fence,
           c.event_detail, now()
    FROM changed c
    RETURNING id, order_id, at
)
SELECT {order_columns("c")}, ev.id AS event_id,
       json_build_object(
           'id', ev.id, 'type', %(event_type)s::text, 'order', c.token, 'number', c.id,
           'kind', c.kind, 'state', c.state, 'outlet', o.slug, 'from_outlet', f.slug,
           'fence', c.fence, 'at', ev.at, 'detail', c.event_detail
       )::text AS event_payload
FROM changed c
JOIN ev ON ev.order_id = c.id
LEFT JOIN queueing_outlet o ON o.id = c.outlet_id
LEFT JOIN queueing_outlet f ON f.id = c.from_outlet_id
ORDER BY c.sort_key, c.id
"""


_RETURNING = f"RETURNING {order_columns('o')}"

# Place an order. sort_key = now() - boost (see queueing.services.orders).
ORDER_INSERT = with_events(f"""
    INSERT INTO queueing_order AS o
        (token, kind, zone, rush, quick, lines, customer, prep_seconds, state, cancel_reason,
         outlet_id, sort_key, fence, claimed_by, attempts, created_at)
    VALUES
        (%(token)s, %(kind)s, %(zone)s, %(rush)s, %(quick)s, %(lines)s, %(customer)s,
         %(prep_seconds)s, 'queued', '', %(outlet_id)s,
         now() - make_interval(secs => %(boost)s), 1, '', 0, now())
    {_RETURNING}, NULL::bigint AS from_outlet_id, %(detail)s::jsonb AS event_detail
""")

# Hold the outlet an order is being placed at, if it still takes orders, until the
# placement commits. KEY SHARE conflicts with the FOR UPDATE under which an outlet is
# taken down (drained, retired), so either the take-down waits for this order and moves
# it with the rest, or this waits for the take-down and finds the outlet no longer
# active. The insert alone does not do it: Django's foreign keys are checked at commit.
OUTLET_HOLD_ACTIVE = """
    SELECT id FROM queueing_outlet
    WHERE id = %(outlet_id)s AND state = 'active'
    FOR KEY SHARE
"""

# Claim up to %(limit)s orders of an outlet, highest priority first. SKIP LOCKED
# lets every station take a different row without waiting; the fence grows, so
# every earlier holder's writes are refused from now on.
CLAIM_NEXT = with_events(f"""
    WITH next AS MATERIALIZED (
        SELECT id FROM queueing_order
        WHERE outlet_id = %(outlet_id)s AND state = 'queued'
        ORDER BY sort_key, id
        LIMIT %(limit)s
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE queueing_order o
    SET state = 'preparing', fence = o.fence + 1, claimed_by = %(station)s,
        claimed_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
    FROM next
    WHERE o.id = next.id
    {_RETURNING}, NULL::bigint AS from_outlet_id,
        jsonb_build_object('station', %(station)s::text) AS event_detail
""")

# Lock one named ticket without waiting: a cook tapped it, and if another
# station holds it right now the answer is "taken", not a frozen screen.
TICKET_LOCK = f"""
    SELECT {order_columns("o")}, out.slug AS outlet_slug
    FROM queueing_order o LEFT JOIN queueing_outlet out ON out.id = o.outlet_id
    WHERE o.token = %(token)s
    FOR NO KEY UPDATE OF o NOWAIT
"""

# Claim the ticket locked by TICKET_LOCK (caller checked it is queued here).
CLAIM_TICKET = with_events(f"""
    UPDATE queueing_order o
    SET state = 'preparing', fence = o.fence + 1, claimed_by = %(station)s,
        claimed_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE o.id = %(order_id)s AND o.state = 'queued'
    {_RETURNING}, NULL::bigint AS from_outlet_id,
        jsonb_build_object('station', %(station)s::text) AS event_detail
""")

# Acknowledge claims: each row is checked against its own fence; rows whose
# fence is stale (or state wrong) are simply not returned. The outlet check is
# written so it cannot be an index condition: the rows must come from the token
# index, not from a walk through all of a busy outlet's open orders (which the
# planner picks for a table it has not ANALYZEd yet).
MARK_READY = with_events(f"""
    WITH target AS MATERIALIZED (
        SELECT o.id FROM queueing_order o
        JOIN unnest(%(tokens)s::text[], %(fences)s::bigint[]) AS b(token, fence)
          ON o.token = b.token AND o.fence = b.fence
        WHERE o.state = 'preparing'
          AND o.outlet_id IS NOT DISTINCT FROM coalesce(%(outlet_id)s::bigint, o.outlet_id)
        ORDER BY o.id
        FOR NO KEY UPDATE OF o
    )
    UPDATE queueing_order o
    SET state = 'ready', ready_at = now(), lease_expires_at = NULL
    FROM target WHERE o.id = target.id
    {_RETURNING}, NULL::bigint AS from_outlet_id, '{{}}'::jsonb AS event_detail
""")

ORDER_COMPLETE = with_events(f"""
    WITH target AS MATERIALIZED (
        SELECT o.id FROM queueing_order o
        JOIN unnest(%(tokens)s::text[], %(fences)s::bigint[]) AS b(token, fence)
          ON o.token = b.token AND o.fence = b.fence
        WHERE o.state IN ('preparing', 'ready')
          AND o.outlet_id IS NOT DISTINCT FROM coalesce(%(outlet_id)s::bigint, o.outlet_id)
        ORDER BY o.id
        FOR NO KEY UPDATE OF o
    )
    UPDATE queueing_order o
    SET state = 'completed', finished_at = now(), lease_expires_at = NULL,
        ready_at = coalesce(o.ready_at, now())
    FROM target WHERE o.id = target.id
    {_RETURNING}, NULL::bigint AS from_outlet_id, '{{}}'::jsonb AS event_detail
""")

# Bring a bumped (completed) ticket back to the pass as ready; same fence.
ORDER_RECALL = with_events(f"""
    UPDATE queueing_order o
    SET state = 'ready', finished_at = NULL
    WHERE o.token = %(token)s AND o.fence = %(fence)s AND o.state = 'completed'
      AND (%(outlet_id)s::bigint IS NULL OR o.outlet_id = %(outlet_id)s::bigint)
    {_RETURNING}, NULL::bigint AS from_outlet_id, '{{}}'::jsonb AS event_detail
""")

# Extend a claim's lease; no event (the lease is bookkeeping, not a change a screen shows).
LEASE_RENEW = """
    UPDATE queueing_order
    SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE token = %(token)s AND fence = %(fence)s AND state = 'preparing'
      AND (%(outlet_id)s::bigint IS NULL OR outlet_id = %(outlet_id)s::bigint)
    RETURNING lease_expires_at
"""

# Why a fenced write matched nothing: the order as it is now.
ORDER_BY_TOKEN = f"""
    SELECT {order_columns("o")}, out.slug AS outlet_slug
    FROM queueing_order o LEFT JOIN queueing_outlet out ON out.id = o.outlet_id
    WHERE o.token = ANY(%(tokens)s::text[])
"""

# Open orders per active outlet: the loads the bounded-load ring balances.
OUTLET_LOADS = """
    SELECT outlet_id, count(*) AS open
    FROM queueing_order
    WHERE state IN ('queued', 'preparing', 'ready') AND outlet_id = ANY(%(outlet_ids)s::bigint[])
    GROUP BY outlet_id
"""

# Lock the open orders that must move (of the given outlets, or given ids),
# in id order. Ready orders are made already: they stay where they are.
ORDERS_TO_MOVE = """
    SELECT id, token, kind, zone, outlet_id, state, attempts
    FROM queueing_order
    WHERE state IN ('queued', 'preparing')
      AND (outlet_id = ANY(%(outlet_ids)s::bigint[]) OR id = ANY(%(order_ids)s::bigint[]))
    ORDER BY id
    FOR NO KEY UPDATE
"""

# Move locked orders to new outlets (NULL: no outlet available yet). The fence
# grows, so the old holder can no longer acknowledge; the claim is dropped.
ORDERS_MOVE = with_events(f"""
    UPDATE queueing_order o
    SET outlet_id = m.outlet_id, state = 'queued', fence = o.fence + 1, claimed_by = '',
        lease_expires_at = NULL, claimed_at = NULL, attempts = o.attempts + m.attempt
    FROM unnest(%(ids)s::bigint[], %(outlet_ids)s::bigint[], %(attempt)s::int[])
         AS m(id, outlet_id, attempt),
         queueing_order before
    WHERE o.id = m.id AND before.id = m.id
    {_RETURNING}, before.outlet_id AS from_outlet_id, %(detail)s::jsonb AS event_detail
""")

# Cancel locked orders with a reason the customer sees.
ORDERS_CANCEL = with_events(f"""
    UPDATE queueing_order o
    SET state = 'cancelled', cancel_reason = %(reason)s, fence = o.fence + 1, claimed_by = '',
        lease_expires_at = NULL, finished_at = now()
    WHERE o.id = ANY(%(ids)s::bigint[])
    {_RETURNING}, NULL::bigint AS from_outlet_id,
        jsonb_build_object('reason', %(reason)s::text) AS event_detail
""")

# --- A manager's ways out (queueing.services.ways_out) ------------------------------

# Lock one order a manager acts on, waiting for a cook's short write to finish.
ORDER_LOCK = f"""
    SELECT {order_columns("o")}, out.slug AS outlet_slug, out.state AS outlet_state
    FROM queueing_order o LEFT JOIN queueing_outlet out ON out.id = o.outlet_id
    WHERE o.id = %(order_id)s
    FOR NO KEY UPDATE OF o
"""

# Send the locked order to an outlet's queue, to be made there (again). The fence
# grows, so whoever held it can no longer act on it; the manager's decision starts
# its count of attempts afresh.
ORDER_SEND = with_events(f"""
    UPDATE queueing_order o
    SET outlet_id = %(outlet_id)s, state = 'queued', fence = o.fence + 1, claimed_by = '',
        lease_expires_at = NULL, claimed_at = NULL, ready_at = NULL, attempts = 0
    FROM queueing_order before
    WHERE o.id = %(order_id)s AND before.id = o.id
    {_RETURNING}, before.outlet_id AS from_outlet_id, %(detail)s::jsonb AS event_detail
""")

# The locked order reached its customer by hand: completed, fence grown.
ORDER_HAND_OVER = with_events(f"""
    UPDATE queueing_order o
    SET state = 'completed', fence = o.fence + 1, claimed_by = '', lease_expires_at = NULL,
        finished_at = now(), ready_at = coalesce(o.ready_at, now())
    WHERE o.id = %(order_id)s
    {_RETURNING}, NULL::bigint AS from_outlet_id, %(detail)s::jsonb AS event_detail
""")

# Set aside orders that bounced too often.
ORDERS_ATTENTION = with_events(f"""
    UPDATE queueing_order o
    SET state = 'attention', fence = o.fence + 1, claimed_by = '', lease_expires_at = NULL,
        attempts = o.attempts + 1
    WHERE o.id = ANY(%(ids)s::bigint[])
    {_RETURNING}, NULL::bigint AS from_outlet_id, %(detail)s::jsonb AS event_detail
""")

# Claims whose lease ran out (database clock, or the tick's clock in tests), except at
# outlets the notifier holds back (silent during its grace or a mass-silence alert:
# their stations could not renew for the same reason they could not heartbeat).
LEASES_EXPIRED = """
    SELECT id, token, kind, zone, outlet_id, state, attempts
    FROM queueing_order
    WHERE state = 'preparing' AND lease_expires_at < %(now)s
      AND NOT (outlet_id = ANY(%(held_outlet_ids)s::bigint[]))
    ORDER BY id
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
"""

# Orders waiting for any outlet (their outlet died while none was alive).
ORDERS_WAITING = """
    SELECT id, token, kind, zone, outlet_id, state, attempts
    FROM queueing_order
    WHERE state = 'queued' AND outlet_id IS NULL
    ORDER BY id
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
"""

# A heartbeat: database clock (%(now)s NULL; tests pass their own), one row of history.
# A down outlet's return (back_since, where the flap guard starts) begins with its first
# heartbeat after a silence longer than the timeout (or its first ever); an unbroken run
# keeps it and counts its beats (back_beats). So an outlet that flaps starts its guard
# again, and OUTLETS_BACK can ask for several heartbeats, never one.
OUTLET_HEARTBEAT = """
    WITH clock AS (
        SELECT coalesce(%(now)s::timestamptz, now()) AS at
    ), beat AS (
        UPDATE queueing_outlet o
        SET last_heartbeat_at = clock.at,
            back_since = CASE
                WHEN o.state <> 'down' THEN NULL
                WHEN o.back_since IS NULL OR o.last_heartbeat_at IS NULL
                  OR o.last_heartbeat_at < clock.at - make_interval(secs => %(timeout)s)
                  THEN clock.at
                ELSE o.back_since
            END,
            back_beats = CASE
                WHEN o.state <> 'down' THEN 0
                WHEN o.back_since IS NULL OR o.last_heartbeat_at IS NULL
                  OR o.last_heartbeat_at < clock.at - make_interval(secs => %(timeout)s)
                  THEN 1
                ELSE o.back_beats + 1
            END
        FROM clock
        WHERE o.id = %(outlet_id)s AND o.state <> 'retired'
        RETURNING o.id, o.state, o.last_heartbeat_at
    ), hist AS (
        INSERT INTO queueing_heartbeat (outlet_id, source, seq, at)
        SELECT id, %(source)s, %(seq)s, last_heartbeat_at FROM beat
    )
    SELECT state, last_heartbeat_at FROM beat
"""

HEARTBEATS_PRUNE = """
    DELETE FROM queueing_heartbeat WHERE at < %(now)s - make_interval(secs => %(keep)s)
"""

# The notifier's leadership: a session-level advisory lock on its own connection.
LEADER_TRY = "SELECT pg_try_advisory_lock(%(key)s)"
LEADER_RELEASE = "SELECT pg_advisory_unlock(%(key)s)"

# Outlets that fell silent: active or draining, last heartbeat older than the timeout.
OUTLETS_SILENT = """
    SELECT id, slug, state, last_heartbeat_at
    FROM queueing_outlet
    WHERE state IN ('active', 'draining')
      AND coalesce(last_heartbeat_at, created_at) < %(now)s - make_interval(secs => %(timeout)s)
    ORDER BY id
"""

# Outlets that came back: down (not by a manager: that holds until a manager
# reactivates), heartbeating without a break for longer than the flap guard, at least
# %(beats)s times. Each returns to the state it was in when it went down (a drained
# outlet comes back draining); a new outlet, never up before, becomes active.
OUTLETS_BACK = """
    UPDATE queueing_outlet
    SET state = resume_state, back_since = NULL, back_beats = 0
    WHERE state = 'down' AND NOT down_by_manager
      AND back_since IS NOT NULL AND back_since < %(now)s - make_interval(secs => %(guard)s)
      AND back_beats >= %(beats)s
      AND last_heartbeat_at >= %(now)s - make_interval(secs => %(timeout)s)
    RETURNING id, slug, state
"""

# Outlet-level events (down, back, drained, added): order_id is NULL.
OUTLET_EVENT = """
    WITH ev AS (
        INSERT INTO queueing_orderevent (order_id, type, state, outlet_id, fence, detail, at)
        VALUES (NULL, 'outlet', %(state)s, %(outlet_id)s, 0, %(detail)s::jsonb, now())
        RETURNING id, at
    )
    SELECT ev.id, json_build_object(
        'id', ev.id, 'type', 'outlet', 'order', NULL, 'number', NULL, 'kind', NULL,
        'state', %(state)s::text, 'outlet', %(outlet_slug)s::text, 'from_outlet', NULL,
        'fence', 0, 'at', ev.at, 'detail', %(detail)s::jsonb
    )::text AS event_payload
    FROM ev
"""

DATABASE_NOW = "SELECT now()"

# Outlet state changes run one at a time (see services.outlets._outlet_locked);
# the key is "hearth outlets" as two int4 halves, apart from the notifier's leader key.
OUTLET_CHANGES_SERIALISE = "SELECT pg_advisory_xact_lock(1751478888, 1869900660)"

# Announce committed events (run by queueing.db after commit), in the order given.
EVENTS_NOTIFY = f"""
    SELECT pg_notify('{EVENTS_CHANNEL}', payload)
    FROM unnest(%(payloads)s::text[]) WITH ORDINALITY AS p(payload, n)
    ORDER BY n
"""

# --- The live path (queueing.listener) ------------------------------------------

# Each web process's one listening connection.
EVENTS_LISTEN = f"LISTEN {EVENTS_CHANNEL}"

# The newest event id: where a screen's stream starts, and the listener's first mark.
EVENTS_LAST_ID = "SELECT coalesce(max(id), 0) AS last_event_id FROM queueing_orderevent"

# An event as the JSON object its NOTIFY carried (with_events / OUTLET_EVENT), so a
# replayed event and a live one look the same to a screen.
_EVENT_PAYLOAD = """
    SELECT e.id, json_build_object(
        'id', e.id, 'type', e.type, 'order', o.token, 'number', e.order_id, 'kind', o.kind,
        'state', e.state, 'outlet', ot.slug, 'from_outlet', f.slug, 'fence', e.fence,
        'at', e.at, 'detail', e.detail
    )::text AS payload
    FROM queueing_orderevent e
    LEFT JOIN queueing_order o ON o.id = e.order_id
    LEFT JOIN queueing_outlet ot ON ot.id = e.outlet_id
    LEFT JOIN queueing_outlet f ON f.id = e.from_outlet_id
"""

# Replays and catch-up: the newest %(limit)s events after %(after)s (NULL: all of
# them), oldest first. One statement per audience, so each uses its own index.
EVENTS_AFTER = f"""
    SELECT * FROM ({_EVENT_PAYLOAD}
        WHERE e.id > %(after)s
        ORDER BY e.id DESC LIMIT %(limit)s
    ) newest ORDER BY id
"""

# A kitchen's events: its orders (also those that moved away) and its outlet-level events.
EVENTS_AFTER_FOR_OUTLET = f"""
    SELECT * FROM ({_EVENT_PAYLOAD}
        WHERE e.id > %(after)s AND (e.outlet_id = %(outlet_id)s OR e.from_outlet_id = %(outlet_id)s)
        ORDER BY e.id DESC LIMIT %(limit)s
    ) newest ORDER BY id
"""

# One order's events (a customer's page).
EVENTS_AFTER_FOR_ORDER = f"""
    SELECT * FROM ({_EVENT_PAYLOAD}
        WHERE e.id > %(after)s AND e.order_id = %(order_id)s
        ORDER BY e.id DESC LIMIT %(limit)s
    ) newest ORDER BY id
"""
