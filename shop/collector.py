"""The web process's garbage collector: no full collection every few seconds.

CPython 3.11 frees most objects by reference counting; its cyclic collector also runs a
full collection (generation 2, every object the process holds) whenever the objects
promoted since the last one reach a quarter of the old ones. A web process with 2,000
parked claims holds about 400,000 objects, and claims re-parking 80 a second promote
that many every few seconds: in ``bench idle`` a full collection ran every 3–8 s and
stopped the event loop for 250–300 ms each time (``gc.callbacks``), and it was the p99
of commit → claim (a woken claim, a socket's event, a heartbeat all wait behind it).

So the web process, once loaded:

- freezes what it has (``gc.freeze()``): Django, the app and its modules, about
  100,000 objects that live as long as the process, are never scanned again;
- runs a full collection only after ``HEARTH_GC_FULL_AFTER`` collections of the middle
  generation (Python's default is 10). The young generations are still collected as
  often as before, so short-lived cycles (an exception and its frames) go at once;
  cycles that lived long enough to be old wait for the next full collection.
"""

from __future__ import annotations

import gc


def quiet_collector(full_after: int) -> None:
    """Freeze what is loaded and collect everything only every ``full_after`` middle collections.

    ``full_after`` 0 leaves Python's collector as it is.
    """
    if full_after <= 0:
        return
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, full_after)
    gc.collect()  # what is garbage now is not frozen for good
    gc.freeze()
