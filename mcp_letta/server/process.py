"""Settings of the server process itself (not of ``AgentHub``, which lives in whatever process embeds it)."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Move every object made so far (modules, classes, the server's tables, the hub's warm state) out of
    the garbage collector's reach, and return how many are frozen.

    They are never garbage, yet each full collection walked them all again: ~35 ms at a time in the middle
    of a 100-agent broadcast, against ~5 ms with them frozen. Call it once, when start-up is done.
    """
    gc.collect()  # what is garbage already goes first, so nothing collectable is frozen
    gc.freeze()
    return gc.get_freeze_count()
