"""The cyclic garbage collector held off while a batch builds a large, acyclic state.

CPython's collector walks every tracked object of a generation each time that
generation has grown enough, and the oldest generation each time it has grown by
a quarter. A full compile builds millions of small, long-lived containers (index
entries, peer-set members, rule-set parts) on top of the parsed objects, so the
collector walks that growing heap again and again while none of it can be
garbage: the compiler's structures hold no reference cycles, and what it discards
goes as soon as its last reference does. At Antrea's scale (100,000 pods) those
walks were more than half of a full compile. The controller takes the oldest
generation over for the same reason (``GcPacer``, see docs/performance.md).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic collector off for the block; it runs again after, as before.

    Nested or already disabled, it leaves the collector as it found it. Cyclic
    garbage made inside the block (none from the compiler) waits for the next
    collection after it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            # What the block made is long-lived: straight to the oldest generation
            # (freeze, then unfreeze, moves every tracked object there and resets the
            # young counts), or the first young collection after it walks it all.
            gc.freeze()
            gc.unfreeze()
            gc.enable()
