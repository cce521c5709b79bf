"""The in-process channel layer (shop.live.ProcessChannelLayer): Channels' layer API, no expiry walk."""

from __future__ import annotations

import asyncio

from shop.live import EVENTS_MESSAGE, ProcessChannelLayer, event_groups


def test_layer__group_send_reaches_members_in_order_and_leaving_stops_it() -> None:
    async def scenario() -> None:
        layer = ProcessChannelLayer(capacity=10)
        a, b = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("kitchen.north", a)
        await layer.group_add("kitchen.north", b)
        for n in range(3):
            await layer.group_send("kitchen.north", {"type": EVENTS_MESSAGE, "n": n})
        assert [(await layer.receive(a))["n"] for _ in range(3)] == [0, 1, 2]
        await layer.group_discard("kitchen.north", b)
        assert "kitchen.north" in layer.groups and b not in layer.groups["kitchen.north"]
        await layer.group_discard("kitchen.north", a)
        assert layer.groups == {}

    asyncio.run(scenario())


def test_layer__a_member_that_takes_nothing_is_dropped_once_its_queue_is_full() -> None:
    async def scenario() -> None:
        layer = ProcessChannelLayer(capacity=2, expiry=1)
        gone, alive = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("ops", gone)
        await layer.group_add("order.x", gone)
        await layer.group_add("ops", alive)
        for n in range(2):
            await layer.group_send("ops", {"type": EVENTS_MESSAGE, "n": n})
            assert (await layer.receive(alive))["n"] == n
        await layer.group_send("ops", {"type": EVENTS_MESSAGE, "n": 2})  # full, but not for long
        assert layer.groups["ops"] == {gone, alive}
        await asyncio.sleep(1.1)  # the expiry itself is what this waits for
        await layer.group_send("ops", {"type": EVENTS_MESSAGE, "n": 3})
        # The last message found the queue full and nothing taken for longer than the
        # expiry: the consumer is gone, and so are all its memberships.
        assert layer.groups == {"ops": {alive}}
        assert gone not in layer.channels

    asyncio.run(scenario())


def test_event_groups__ops_both_kitchens_and_the_order() -> None:
    event = {"outlet": "south", "from_outlet": "north", "order": "tok"}
    assert event_groups(event) == ["ops", "kitchen.south", "kitchen.north", "order.tok"]
    assert event_groups({"outlet": "north", "from_outlet": None, "order": None}) == [
        "ops",
        "kitchen.north",
    ]
