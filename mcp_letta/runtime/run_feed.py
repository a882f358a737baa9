"""Many runs' ends, in the order they happen: what a broadcast waits on instead of a task per recipient.

A broadcast to a hundred agents used to start a waiting task per recipient (spawn, semaphore, cancel
scope, event), all before the first request could go out. Here each run's next change calls back into
one queue that the broadcast reads in a loop.
"""

from __future__ import annotations

import math

import anyio

from mcp_letta.models import Run
from mcp_letta.runtime.scheduler import Scheduler


class RunFeed:
    """Runs added to it come out of ``next()`` once each, as they finish. Close it when done."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, Run | None]](math.inf)
        self._waiting: set[str] = set()
        self._closed = False

    def add(self, run: Run) -> None:
        """Follow ``run`` (as just submitted or read: no checkpoint since, so no change is missed); once the
        feed is closed, nothing (the run is not followed)."""
        if self._closed:
            return
        self._waiting.add(run.id)
        if run.done:
            self._send.send_nowait((run.id, run))
        else:
            self._scheduler.on_next_change(run.id, self._changed)

    @property
    def waiting(self) -> int:
        """How many added runs have not come out yet."""
        return len(self._waiting)

    async def next(self) -> Run:
        """The next added run to finish (waits for it)."""
        while True:
            run_id, run = await self._receive.receive()
            if run_id not in self._waiting:
                continue  # reported already (a change after the one that finished it)
            if run is None or not run.done:
                self._scheduler.on_next_change(run_id, self._changed)  # before reading: no change is missed
                run = await self._scheduler.get(run_id)
                if not run.done:
                    continue
            self._waiting.discard(run_id)
            return run

    def _changed(self, run_id: str, run: Run | None) -> None:
        if run_id in self._waiting:  # (empty once closed)
            self._send.send_nowait((run_id, run))

    def close(self) -> None:
        """Stop following: later changes of runs still going are ignored."""
        self._closed = True
        self._waiting.clear()
        self._send.close()
        self._receive.close()
