"""Every raw SQL statement of the queue, named and commented, in one place.

Values are always ``%(name)s`` parameters. A write that changes orders is a
``changed`` CTE; ``with_events`` appends the tail that writes one OrderEvent per
changed row in the same statement and returns its id as ``event_id``. Each event
row also records the id of the transaction that wrote it (``xid``, a column
default), which is how readers follow events in commit order (``EVENTS_SINCE``):
a reader's cursor is a PostgreSQL snapshot, and the events it has not read are
exactly those of transactions that snapshot did not see as committed.

NOTIFY only wakes readers and carries nothing (``EVENTS_WAKE``); ``queueing.wake``
sends at most one per process per short window after a commit, outside the
writing transaction: PostgreSQL serialises the commits of notifying transactions
through one server-wide lock held across the WAL flush, and readers that missed a
wake-up find the events at their next periodic read anyway.

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
    """Wrap a ``changed`` CTE so each changed order gets its event (its id as ``event_id``)."""
    return f"""
WITH changed AS (
{changed}
), ev AS (
    INSERT INTO queueing_orderevent
        (order_id, type, state, outlet_id, from_outlet_id, fence, detail, at)
    SELECT c.id, %(event_type)s, c.state, c.outlet_id, c.from_outlet_id, c.fence,
           c.event_detail, now()
    FROM changed c
    RETURNING id, order_id
)
SELECT {order_columns("c")}, ev.id AS event_id
FROM changed c
JOIN ev ON ev.order_id = c.id
ORDER BY c.sort_key, c.id
"""


_RETURNING = f"RETURNING {order_columns('o')}"

# Place an order at an outlet, if it still takes orders: ``held`` (OUTLET_HOLD_ACTIVE)
# takes the outlet's row FOR KEY SHARE until the placement commits (sort_key = now() -
# boost, see queueing.services.orders). KEY SHARE conflicts with the FOR UPDATE under
# which an outlet is taken down (drained, marked down, retired), so either the take-down
# waits for this order and moves it with the rest, or this waits for the take-down, finds
# the outlet no longer active and inserts nothing. The insert alone does not do it:
# Django's foreign keys are checked at commit. One statement, so a placement outside a
# transaction is one commit and one round trip (no BEGIN, no separate hold, no COMMIT).
_ORDER_INSERT = """
    INSERT INTO queueing_order AS o
        (token, kind, zone, rush, quick, lines, customer, prep_seconds, state, cancel_reason,
         outlet_id, sort_key, fence, claimed_by, attempts, created_at)
    SELECT %(token)s, %(kind)s, %(zone)s, %(rush)s, %(quick)s, %(lines)s, %(customer)s,
         %(prep_seconds)s, 'queued', '', held.id,
         now() - make_interval(secs => %(boost)s), 1, '', 0, now()
    FROM {held} AS held
    {returning}, NULL::bigint AS from_outlet_id, %(detail)s::jsonb AS event_detail
"""

# Hold an outlet, if it still takes orders, until the caller's transaction ends: the
# ``held`` of ORDER_INSERT, and a manager sending an order there (queueing.services.ways_out).
OUTLET_HOLD_ACTIVE = """
    SELECT id FROM queueing_outlet
    WHERE id = %(outlet_id)s AND state = 'active'
    FOR KEY SHARE
"""

ORDER_INSERT = with_events(
    _ORDER_INSERT.format(held=f"({OUTLET_HOLD_ACTIVE})", returning=_RETURNING)
)

# Place a delivery order that waits for an outlet (none is alive): no outlet to hold.
ORDER_INSERT_WAITING = with_events(
    _ORDER_INSERT.format(held="(SELECT NULL::bigint AS id)", returning=_RETURNING)
)

# Claim up to %(limit)s orders of an outlet, ready ones without a holder first (made
# already: the station hands them over, it does not cook them again), then the
# queued ones by priority. SKIP LOCKED lets every station take a different row
# without waiting; the fence grows, so every earlier holder's writes are refused
# from now on. A down (or retired) outlet claims nothing: its stranded orders are
# the notifier's to move. The queued scan takes only the rows the ready one left.
CLAIM_NEXT = with_events(f"""
    WITH live AS (
        SELECT id FROM queueing_outlet
        WHERE id = %(outlet_id)s AND state IN ('active', 'draining')
    ), unheld AS MATERIALIZED (
        SELECT id FROM queueing_order
        WHERE outlet_id = (SELECT id FROM live) AND state = 'ready' AND claimed_by = ''
        ORDER BY sort_key, id
        LIMIT %(limit)s
        FOR NO KEY UPDATE SKIP LOCKED
    ), queued AS MATERIALIZED (
        SELECT id FROM queueing_order
        WHERE outlet_id = (SELECT id FROM live) AND state = 'queued'
        ORDER BY sort_key, id
        LIMIT greatest(%(limit)s - (SELECT count(*) FROM unheld), 0)
        FOR NO KEY UPDATE SKIP LOCKED
    ), next AS (
        SELECT id FROM unheld UNION ALL SELECT id FROM queued
    )
    UPDATE queueing_order o
    SET state = CASE WHEN o.state = 'ready' THEN 'ready' ELSE 'preparing' END,
        fence = o.fence + 1, claimed_by = %(station)s,
        claimed_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
    FROM next
    WHERE o.id = next.id
    {_RETURNING}, NULL::bigint AS from_outlet_id,
        jsonb_build_object('station', %(station)s::text, 'handover', o.state = 'ready')
        AS event_detail
""")

# What a station already holds at its outlet (being made, or ready to hand over), oldest
# claim first, its lease renewed: a station whose claim answer was lost gets the same
# claims again (same fence) instead of waiting a lease for them. No event: nothing changed.
STATION_HELD = f"""
    UPDATE queueing_order o
    SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    FROM (
        SELECT id FROM queueing_order
        WHERE outlet_id = %(outlet_id)s AND claimed_by = %(station)s
          AND state IN ('preparing', 'ready')
        ORDER BY claimed_at, id
        LIMIT %(limit)s
        FOR NO KEY UPDATE SKIP LOCKED
    ) held
    WHERE o.id = held.id
    {_RETURNING}
"""

# A station that is still there (a kitchen screen's socket is open) keeps every claim it
# holds at its outlet, however long the cooking takes; no event.
STATION_RENEW = """
    UPDATE queueing_order
    SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE outlet_id = %(outlet_id)s AND claimed_by = %(station)s
      AND state IN ('preparing', 'ready')
"""

# A holder that restarted hands back at once what its stations held at the outlet:
# orders being made go back to the outlet's queue, ready ones stay at the pass with no
# holder (the next claim hands them over). The fence grows, so the old claims are dead.
STATIONS_RELEASE = with_events(f"""
    WITH target AS MATERIALIZED (
        SELECT id, claimed_by FROM queueing_order
        WHERE outlet_id = %(outlet_id)s AND claimed_by = ANY(%(stations)s::text[])
          AND state IN ('preparing', 'ready')
        ORDER BY id
        FOR NO KEY UPDATE
    )
    UPDATE queueing_order o
    SET state = CASE WHEN o.state = 'ready' THEN 'ready' ELSE 'queued' END,
        fence = o.fence + 1, claimed_by = '', lease_expires_at = NULL,
        claimed_at = CASE WHEN o.state = 'ready' THEN o.claimed_at END
    FROM target WHERE o.id = target.id
    {_RETURNING}, NULL::bigint AS from_outlet_id,
        jsonb_build_object('reason', %(reason)s::text, 'station', target.claimed_by)
        AS event_detail
""")

# A ready order whose holder's lease ran out at a live outlet: it stays at the pass
# with no holder, the fence grows (the old holder can no longer complete it) and the
# outlet's next claim hands it over.
READY_RELEASE = with_events(f"""
    UPDATE queueing_order o
    SET fence = o.fence + 1, claimed_by = '', lease_expires_at = NULL
    WHERE o.id = ANY(%(ids)s::bigint[]) AND o.state = 'ready'
    {_RETURNING}, NULL::bigint AS from_outlet_id, %(detail)s::jsonb AS event_detail
""")

# Lock one named ticket without waiting: a cook tapped it, and if another
# station holds it right now the answer is "taken", not a frozen screen.
TICKET_LOCK = f"""
    SELECT {order_columns("o")}, out.slug AS outlet_slug
    FROM queueing_order o LEFT JOIN queueing_outlet out ON out.id = o.outlet_id
    WHERE o.token = %(token)s
    FOR NO KEY UPDATE OF o NOWAIT
"""

# Claim the ticket locked by TICKET_LOCK (caller checked it is queued here), unless
# its outlet is down: a down outlet's orders are the notifier's to move.
CLAIM_TICKET = with_events(f"""
    UPDATE queueing_order o
    SET state = 'preparing', fence = o.fence + 1, claimed_by = %(station)s,
        claimed_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE o.id = %(order_id)s AND o.state = 'queued'
      AND EXISTS (
          SELECT 1 FROM queueing_outlet t
          WHERE t.id = o.outlet_id AND t.state IN ('active', 'draining')
      )
    {_RETURNING}, NULL::bigint AS from_outlet_id,
        jsonb_build_object('station', %(station)s::text) AS event_detail
""")

# Acknowledge claims: each row is checked against its own fence; rows whose
# fence is stale (or state wrong) are simply not returned. A ready order keeps
# its holder and a fresh lease: someone must still hand it over. The outlet check is
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
    SET state = 'ready', ready_at = now(),
        lease_expires_at = now() + make_interval(secs => %(lease)s)
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
    {_RETURNING}, NULL::bigint AS from_outlet_id,
        coalesce(%(detail)s::jsonb, '{{}}'::jsonb) AS event_detail
""")

# Bring a bumped (completed) ticket back to the pass as ready; same fence, and a
# fresh lease for its holder (ready always has a holder or a lease that moves it on).
ORDER_RECALL = with_events(f"""
    UPDATE queueing_order o
    SET state = 'ready', finished_at = NULL,
        lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE o.token = %(token)s AND o.fence = %(fence)s AND o.state = 'completed'
      AND (%(outlet_id)s::bigint IS NULL OR o.outlet_id = %(outlet_id)s::bigint)
    {_RETURNING}, NULL::bigint AS from_outlet_id, '{{}}'::jsonb AS event_detail
""")

# Extend a claim's lease (being made, or ready to hand over); no event (the lease is
# bookkeeping, not a change a screen shows).
LEASE_RENEW = """
    UPDATE queueing_order
    SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE token = %(token)s AND fence = %(fence)s AND state IN ('preparing', 'ready')
      AND (%(outlet_id)s::bigint IS NULL OR outlet_id = %(outlet_id)s::bigint)
    RETURNING lease_expires_at
"""

# Why a fenced write matched nothing: the order as it is now.
ORDER_BY_TOKEN = f"""
    SELECT {order_columns("o")}, out.slug AS outlet_slug
    FROM queueing_order o LEFT JOIN queueing_outlet out ON out.id = o.outlet_id
    WHERE o.token = ANY(%(tokens)s::text[])
"""

# The active outlets' version: changes whenever one joins, leaves or changes weight. A
# placement reads this one row and reloads the outlets only when it changed.
ACTIVE_OUTLETS_VERSION = """
    SELECT md5(string_agg(id || ':' || slug || ':' || weight, ',' ORDER BY id)) AS version
    FROM queueing_outlet
    WHERE state = 'active'
"""

# One outlet's open orders: the load a placement's ring walk checks against its cap.
OUTLET_LOAD = """
    SELECT count(*) AS open
    FROM queueing_order
    WHERE state IN ('queued', 'preparing', 'ready') AND outlet_id = %(outlet_id)s
"""

# The work ahead of a queued order at its outlet, in one round trip: the first %(depth)s
# queued orders before it in claim order (seconds), and what is left of those being
# prepared (a claim without a time counts whole). The read stops at the depth, so an
# estimate costs the same at the back of a queue of 10,000 as at its front
# (queueing.selectors.ESTIMATE_DEPTH).
ORDER_WORK_AHEAD = """
    SELECT ahead.seconds::float8 AS ahead,
        (SELECT coalesce(sum(greatest(0, prep_seconds
                    - extract(epoch FROM %(now)s::timestamptz
                                         - coalesce(claimed_at, %(now)s::timestamptz)))), 0)
         FROM queueing_order
         WHERE outlet_id = %(outlet_id)s AND state = 'preparing'
        )::float8 AS remaining
    FROM (
        SELECT coalesce(sum(prep_seconds), 0) AS seconds
        FROM (
            SELECT prep_seconds
            FROM queueing_order
            WHERE outlet_id = %(outlet_id)s AND state = 'queued'
              AND (sort_key, id) < (%(sort_key)s, %(id)s)
            ORDER BY sort_key, id
            LIMIT %(depth)s
        ) first_ahead
    ) ahead
"""

# The active outlets' open orders together: the total the bounded-load caps share out.
OPEN_ORDERS_TOTAL = """
    SELECT count(*) AS open
    FROM queueing_order
    WHERE state IN ('queued', 'preparing', 'ready')
      AND outlet_id IN (SELECT id FROM queueing_outlet WHERE state = 'active')
"""

# Lock the open orders that must move (of the given outlets, or given ids), in id
# order. Ready ones too: a pizza in a dark shop reaches no customer, so a delivery
# is made again by a survivor and a takeaway is cancelled with the reason.
ORDERS_TO_MOVE = """
    SELECT id, token, kind, zone, outlet_id, state, attempts
    FROM queueing_order
    WHERE state IN ('queued', 'preparing', 'ready')
      AND (outlet_id = ANY(%(outlet_ids)s::bigint[]) OR id = ANY(%(order_ids)s::bigint[]))
    ORDER BY id
    FOR NO KEY UPDATE
"""

# Move locked orders to new outlets (NULL: no outlet available yet). The fence
# grows, so the old holder can no longer acknowledge; the claim is dropped.
ORDERS_MOVE = with_events(f"""
    UPDATE queueing_order o
    SET outlet_id = m.outlet_id, state = 'queued', fence = o.fence + 1, claimed_by = '',
        lease_expires_at = NULL, claimed_at = NULL, ready_at = NULL,
        attempts = o.attempts + m.attempt
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
# Ready orders too: they lose their holder and wait at the pass (READY_RELEASE).
LEASES_EXPIRED = """
    SELECT id, token, kind, zone, outlet_id, state, attempts
    FROM queueing_order
    WHERE state IN ('preparing', 'ready') AND lease_expires_at < %(now)s
      AND NOT (outlet_id = ANY(%(held_outlet_ids)s::bigint[]))
    ORDER BY id
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
"""

_OUTLET_COLUMNS = (
    "id",
    "slug",
    "name",
    "weight",
    "state",
    "last_heartbeat_at",
    "back_since",
    "back_beats",
    "down_by_manager",
    "resume_state",
    "token_hash",
    "amber_after",
    "red_after",
    "created_at",
)

# The outlet (not retired) an agent token belongs to, by the token's hash. Every agent
# request starts with it, so it is a named statement (prepared) rather than the ORM's;
# the columns are named so that a column added by a later migration does not change
# the prepared statement's result.
OUTLET_BY_TOKEN_HASH = f"""
    SELECT {", ".join(_OUTLET_COLUMNS)} FROM queueing_outlet
    WHERE token_hash = %(token_hash)s AND state <> 'retired'
    ORDER BY id
    LIMIT 1
"""

# An order and its outlet by the order's token: a customer's page, socket and API calls
# all start with it. Every column of both, the outlet's prefixed ``outlet__``.
_ORDER_ALL_COLUMNS = (*_ORDER_COLUMNS, "customer", "claimed_at", "ready_at", "finished_at")
ORDER_WITH_OUTLET = f"""
    SELECT {", ".join(f"o.{c}" for c in _ORDER_ALL_COLUMNS)},
           {", ".join(f"t.{c} AS outlet__{c}" for c in _OUTLET_COLUMNS)}
    FROM queueing_order o LEFT JOIN queueing_outlet t ON t.id = o.outlet_id
    WHERE o.token = %(token)s
"""

# An order's timeline, oldest first, with the slug and name of each event's outlets: the
# customer's status call and page read it on every visit, so it is a named statement.
ORDER_EVENTS = """
    SELECT e.id, e.order_id, e.type, e.state, e.outlet_id, e.from_outlet_id, e.fence,
           e.detail, e.at,
           t.slug AS outlet__slug, t.name AS outlet__name,
           f.slug AS from_outlet__slug, f.name AS from_outlet__name
    FROM queueing_orderevent e
    LEFT JOIN queueing_outlet t ON t.id = e.outlet_id
    LEFT JOIN queueing_outlet f ON f.id = e.from_outlet_id
    WHERE e.order_id = %(order_id)s AND e.id > %(after)s
    ORDER BY e.id
"""

# An outlet by its slug, whatever its state: every takeaway order names one, so it is a
# named statement too.
OUTLET_BY_SLUG = f"""
    SELECT {", ".join(_OUTLET_COLUMNS)} FROM queueing_outlet WHERE slug = %(slug)s
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
_HEARTBEAT_SET = """
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
            END"""

OUTLET_HEARTBEAT = f"""
    WITH clock AS (
        SELECT coalesce(%(now)s::timestamptz, now()) AS at
    ), beat AS (
        UPDATE queueing_outlet o{_HEARTBEAT_SET}
        FROM clock
        WHERE o.id = %(outlet_id)s AND o.state <> 'retired'
        RETURNING o.id, o.state, o.last_heartbeat_at
    ), hist AS (
        INSERT INTO queueing_heartbeat (outlet_id, source, seq, at)
        SELECT id, %(source)s, %(seq)s, last_heartbeat_at FROM beat
    )
    SELECT state, last_heartbeat_at FROM beat
"""

# An agent's heartbeat in one round trip: the outlet its token (%(token_hash)s) belongs
# to, and OUTLET_HEARTBEAT's beat when that is %(slug)s. No row: no such token (401);
# a row with another slug and no state: another outlet's token (403), nothing written.
OUTLET_HEARTBEAT_BY_TOKEN = f"""
    WITH me AS (
        SELECT id, slug FROM queueing_outlet
        WHERE token_hash = %(token_hash)s AND state <> 'retired'
        LIMIT 1
    ), clock AS (
        SELECT now() AS at
    ), beat AS (
        UPDATE queueing_outlet o{_HEARTBEAT_SET}
        FROM clock, me
        WHERE o.id = me.id AND me.slug = %(slug)s AND o.state <> 'retired'
        RETURNING o.id, o.state, o.last_heartbeat_at
    ), hist AS (
        INSERT INTO queueing_heartbeat (outlet_id, source, seq, at)
        SELECT id, %(source)s, %(seq)s, last_heartbeat_at FROM beat
    )
    SELECT me.slug, beat.state, beat.last_heartbeat_at FROM me LEFT JOIN beat ON true
"""

# Several agents' heartbeats in one statement, so one commit (one WAL flush) for all of
# them: the web process's event loop writes the beats that arrived while the last write
# was in flight together. Each %(token_hashes)s[n] (at most once in a batch) with
# %(slugs)s[n], %(sources)s[n], %(seqs)s[n] is OUTLET_HEARTBEAT_BY_TOKEN's beat; a row
# per token found, in order (n): another slug and no state is another outlet's token.
# The outlets are locked in id order first, so two batches never deadlock.
OUTLET_HEARTBEATS_BY_TOKEN = f"""
    WITH sent AS (
        SELECT * FROM unnest(
            %(token_hashes)s::text[], %(slugs)s::text[], %(sources)s::text[], %(seqs)s::bigint[]
        ) WITH ORDINALITY AS s(token_hash, asked, source, seq, n)
    ), me AS (
        SELECT DISTINCT ON (s.n) s.n, o.id, o.slug, s.asked, s.source, s.seq
        FROM sent s
        JOIN queueing_outlet o ON o.token_hash = s.token_hash AND o.state <> 'retired'
        ORDER BY s.n, o.id
    ), locked AS MATERIALIZED (
        SELECT o.id FROM queueing_outlet o
        WHERE o.id IN (SELECT id FROM me WHERE slug = asked) AND o.state <> 'retired'
        ORDER BY o.id
        FOR NO KEY UPDATE
    ), clock AS (
        SELECT now() AS at
    ), beat AS (
        UPDATE queueing_outlet o{_HEARTBEAT_SET}
        FROM clock, locked
        WHERE o.id = locked.id
        RETURNING o.id, o.state, o.last_heartbeat_at
    ), hist AS (
        INSERT INTO queueing_heartbeat (outlet_id, source, seq, at)
        SELECT beat.id, me.source, me.seq, beat.last_heartbeat_at
        FROM beat JOIN me ON me.id = beat.id AND me.slug = me.asked
    )
    SELECT me.n, me.slug, beat.state, beat.last_heartbeat_at
    FROM me LEFT JOIN beat ON beat.id = me.id AND me.slug = me.asked
    ORDER BY me.n
"""

HEARTBEATS_PRUNE = """
    DELETE FROM queueing_heartbeat WHERE at < %(now)s - make_interval(secs => %(keep)s)
"""

# --- The notifier's leadership: a lease with a term, in the one NotifierStatus row ------

# Take the lease when it is free or lapsed (creating the row if it is missing); the term
# grows. Its row lock conflicts with LEADER_FENCE's FOR SHARE, so a takeover waits until
# the old leader's fenced transaction in flight has committed (or was killed by a timeout).
LEADER_TAKE = """
    WITH taken AS (
        UPDATE queueing_notifierstatus s
        SET term = nextval('queueing_notifier_term'), leader = %(leader)s, leader_since = now(),
            last_tick_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
        WHERE s.id = 1 AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now())
        RETURNING s.term
    ), created AS (
        INSERT INTO queueing_notifierstatus
            (id, leader, leader_since, last_tick_at, alert, term, lease_expires_at)
        SELECT 1, %(leader)s, now(), now(), '', nextval('queueing_notifier_term'),
               now() + make_interval(secs => %(lease)s)
        WHERE NOT EXISTS (SELECT 1 FROM queueing_notifierstatus WHERE id = 1)
        ON CONFLICT (id) DO NOTHING
        RETURNING term
    )
    SELECT term, now() AS now FROM taken
    UNION ALL
    SELECT term, now() AS now FROM created
"""

# Renew the lease, only under our own term (a lapsed lease nobody took is still ours:
# no one else can have written, since every other writer would have a newer term).
LEADER_RENEW = """
    UPDATE queueing_notifierstatus
    SET lease_expires_at = now() + make_interval(secs => %(lease)s), leader = %(leader)s
    WHERE id = 1 AND term = %(term)s
    RETURNING term, now() AS now
"""

# Who holds the lease now (for the log line of a notifier that lost it).
LEADER_CURRENT = """
    SELECT leader, term, lease_expires_at > now() AS valid
    FROM queueing_notifierstatus WHERE id = 1
"""

# Give the lease up on a clean stop, so a standby takes over at its next tick.
LEADER_RELEASE = """
    UPDATE queueing_notifierstatus SET lease_expires_at = NULL
    WHERE id = 1 AND term = %(term)s
"""

# The fence of every transaction a tick writes in, run first: matches nothing unless
# this term still holds a live lease. FOR SHARE keeps the lease from being taken
# (LEADER_TAKE waits) until this transaction ends, so no write of an old term can land
# after a newer term began.
LEADER_FENCE = """
    SELECT term FROM queueing_notifierstatus
    WHERE id = 1 AND term = %(term)s AND lease_expires_at > now()
    FOR SHARE
"""

# The leader's last tick, for the operations view; fenced by its own WHERE.
LEADER_TICKED = """
    UPDATE queueing_notifierstatus SET last_tick_at = %(now)s
    WHERE id = 1 AND term = %(term)s AND lease_expires_at > now()
"""

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
        RETURNING id AS event_id
    )
    SELECT event_id FROM ev
"""

DATABASE_NOW = "SELECT now()"

# Outlet state changes run one at a time (see services.outlets._outlet_locked);
# the key is "hearth outlets" as two int4 halves.
OUTLET_CHANGES_SERIALISE = "SELECT pg_advisory_xact_lock(1751478888, 1869900660)"

# Wake every listener (queueing.wake, after commit). It carries nothing: readers read the table.
EVENTS_WAKE = f"NOTIFY {EVENTS_CHANNEL}"

# The waker's session: a NOTIFY takes a transaction id, so its commit would wait for a
# WAL flush of its own; a wake-up lost in a crash costs readers nothing (they read
# the table every few seconds), so it need not wait for the disk.
EVENTS_WAKE_SESSION = "SET synchronous_commit = off"

# --- The live path (queueing.events, queueing.listener) -------------------------

# Each web process's one listening connection.
EVENTS_LISTEN = f"LISTEN {EVENTS_CHANNEL}"

# Where a reader starts: a snapshot of which transactions have committed, as text
# (the cursor), and the newest event id (shown to people; readers never trust it).
EVENTS_CURSOR = """
    SELECT pg_current_snapshot()::text AS cursor,
           (SELECT coalesce(max(id), 0) FROM queueing_orderevent) AS last_event_id
"""

# An event as a screen receives it.
_EVENT_JSON = """json_build_object(
        'id', e.id, 'type', e.type, 'order', o.token, 'number', e.order_id, 'kind', o.kind,
        'state', e.state, 'outlet', ot.slug, 'from_outlet', f.slug, 'fence', e.fence,
        'at', e.at, 'detail', e.detail, 'xid', e.xid::text
    )"""

# The events committed since the snapshot %(cursor)s, and the snapshot they were read
# with (the next cursor), in one statement so that the two agree. An event is new
# exactly when its transaction had not committed in the cursor: its xid is at or
# above the cursor's xmax, or among the cursor's in-progress xids; each side is an
# index lookup, however long an old transaction stays open. The statement's own
# snapshot shows only committed events, so nothing is read before its commit, and
# an event that commits late with a lower id is read by the first reader after it.
# A legacy cursor is a bare event id (%(cursor)s NULL, %(after_id)s the id): id order.
# %(limit)s keeps the newest (by id) of them; %(outlet_id)s / %(order_id)s narrow
# them to one kitchen (its orders, those that left it, its outlet-level events) or
# one order (NULL: everything). Oldest first.
EVENTS_SINCE = f"""
    SELECT pg_current_snapshot()::text AS cursor,
           coalesce((SELECT json_agg(payload ORDER BY id) FROM (
               SELECT e.id, {_EVENT_JSON} AS payload
               FROM queueing_orderevent e
               LEFT JOIN queueing_order o ON o.id = e.order_id
               LEFT JOIN queueing_outlet ot ON ot.id = e.outlet_id
               LEFT JOIN queueing_outlet f ON f.id = e.from_outlet_id
               WHERE (%(cursor)s::pg_snapshot IS NULL
                      OR e.xid >= pg_snapshot_xmax(%(cursor)s::pg_snapshot)
                      OR e.xid IN (SELECT pg_snapshot_xip(%(cursor)s::pg_snapshot)))
                 AND e.id > %(after_id)s
                 AND (%(outlet_id)s::bigint IS NULL
                      OR e.outlet_id = %(outlet_id)s OR e.from_outlet_id = %(outlet_id)s)
                 AND (%(order_id)s::bigint IS NULL OR e.order_id = %(order_id)s)
               ORDER BY e.id DESC LIMIT %(limit)s
           ) newest), '[]')::text AS events
"""

# --- The operations screen's last hour (selectors.outlets_last_hour) ---------------

# Per outlet and %(bucket)s-second bucket (aligned to the clock, so a bucket keeps its
# figures between refreshes; the newest one is still filling), over the last
# %(buckets)s buckets: orders placed there, the median wait from placing to a claim
# there (seconds), and reroutes away from it. Only the window's events are read (the
# BRIN index on ``at``); each claim joins its order by primary key for its placing time.
# Bucket 0 is the oldest. Outlets and buckets with nothing in them have no row.
_LAST_HOUR_START = """(date_bin(make_interval(secs => %(bucket)s), now(), 'epoch'::timestamptz)
               - make_interval(secs => %(bucket)s * (%(buckets)s - 1)))"""
# The start is written out, not joined from a CTE: a stable expression of now() is an
# index condition the BRIN index on ``at`` can use.
OUTLETS_LAST_HOUR = f"""
    WITH recent AS (
        SELECT CASE WHEN e.type = 'rerouted' THEN e.from_outlet_id ELSE e.outlet_id END
                   AS outlet_id,
               e.type,
               -- Only a claim looks up its order (a CASE evaluates its branch only when taken).
               CASE WHEN e.type = 'claimed' THEN extract(epoch FROM e.at - (
                   SELECT o.created_at FROM queueing_order o WHERE o.id = e.order_id
               )) END AS wait,
               floor(extract(epoch FROM e.at - {_LAST_HOUR_START}) / %(bucket)s)::int AS bucket
        FROM queueing_orderevent e
        WHERE e.at >= {_LAST_HOUR_START}
          AND e.type IN ('placed', 'claimed', 'rerouted')
    )
    SELECT outlet_id, bucket,
           count(*) FILTER (WHERE type = 'placed') AS placed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY wait) AS wait_median,
           count(*) FILTER (WHERE type = 'rerouted') AS reroutes
    FROM recent
    WHERE outlet_id IS NOT NULL AND bucket BETWEEN 0 AND %(buckets)s - 1
    GROUP BY outlet_id, bucket
"""
