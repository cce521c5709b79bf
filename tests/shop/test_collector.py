"""The web process's garbage collector (shop.collector): frozen once loaded, full collections rare."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shop.collector import INCREMENTAL
from tests.processes import PROJECT_DIR, process_env

pytestmark = pytest.mark.django_db  # process_env names the test database

GC_STATE = (
    "import gc, json, shop.asgi; "
    "print(json.dumps({'threshold': gc.get_threshold(), 'frozen': gc.get_freeze_count()}))"
)

# After quiet_collector: a cycle dropped by the code is still freed by the young collections
# (no explicit gc.collect), and a full collection comes after `full_after` middle ones.
CYCLES = """
import gc, json, weakref
from shop.collector import quiet_collector
quiet_collector(3)
class Node: pass
a = Node(); a.me = a
alive = weakref.ref(a)
del a
keep = [[] for _ in range(50_000)]  # allocations: the young generation is collected
fulls = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and fulls.append(1))
for _ in range(400_000):
    keep.append([])
    if len(keep) > 60_000:
        del keep[:10_000]
print(json.dumps({"freed": alive() is None, "fulls": len(fulls), "middle": gc.get_stats()[1]["collections"]}))
"""


def python(code: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env=process_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


PYTHONS_OWN = "import gc, json; print(json.dumps({'threshold': gc.get_threshold()}))"


def test_web_process__loaded__freezes_what_it_loaded_and_collects_everything_rarely() -> None:
    state = python(GC_STATE)
    if not INCREMENTAL:
        assert state["threshold"][2] == 1000
    assert state["frozen"] > 10_000  # Django, the app's modules, its URLconf and views


def test_web_process__with_full_after_0__keeps_pythons_collector() -> None:
    state = python(GC_STATE, HEARTH_GC_FULL_AFTER="0")
    assert state["threshold"] == python(PYTHONS_OWN)["threshold"]
    assert state["frozen"] == 0


def test_quiet_collector__cycles_still_freed_and_full_collections_still_come() -> None:
    state = python(CYCLES)
    assert state["freed"]
    assert state["middle"] >= 3 * 2  # enough middle collections for two full ones
    assert state["fulls"] >= 1
