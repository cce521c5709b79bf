"""The web process's garbage collector: no full collection every few seconds.

CPython 3.11 frees most objects by reference counting; its cyclic collector also runs a
full collection (generation 2, every object the process holds) whenever the objects
promoted since the last one reach a quarter of the old ones. A web process holding
thousands of parked claims and sockets promotes that many every few seconds, and each full
collection stops the event loop, so every woken claim, socket event and heartbeat waits
behind it (measured in docs/benchmarks.md, "The web process's garbage collector").

So the web process, once loaded:

- freezes what it has (``gc.freeze()``): Django, the app, its URLconf and views live as
  long as the process and are never scanned again;
- runs a full collection only after ``HEARTH_GC_FULL_AFTER`` collections of the middle
  generation (Python's default is 10). The young generations are still collected as
  often as before, so short-lived cycles (an exception and its frames) go at once;
  cycles that lived long enough to be old wait for the next full collection.

From Python 3.14 the collector is incremental (no generation 2 to space out): only the
freeze applies.
"""

from __future__ import annotations

import gc
import sys

INCREMENTAL = sys.version_info >= (3, 14)


def quiet_collector(full_after: int) -> None:
    """Freeze what is loaded and collect everything only every ``full_after`` middle collections.

    ``full_after`` 0 leaves Python's collector as it is.
    """
    if full_after <= 0:
        return
    if not INCREMENTAL:
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, full_after)
    gc.collect()  # what is garbage now is not frozen for good
    gc.freeze()
