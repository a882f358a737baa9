"""The run queue: FIFO and one run at a time per agent, many agents in parallel up to a global cap, across
every process sharing the database; waiting on runs, step progress, cancellation, recovery after a crash.

The queue is the ``runs`` table. Each agent with work has one worker task (owned by the hub's task group)
that claims the agent's next run in a ``BEGIN IMMEDIATE`` transaction and executes it. A running run
holds a lease this process renews with its heartbeat; a run whose process died is marked interrupted,
and the queued runs it left are adopted by a live process. Other processes' changes arrive through the
hub's change feed (``PRAGMA data_version``), which wakes waiters, blocked agents and cancellations.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
from anyio.abc import ObjectReceiveStream, TaskGroup

from mcp_letta.errors import NotFound, Timeout
from mcp_letta.models import Run, StepEvent
from mcp_letta.runtime.runner import CancelRequested, Claimed, RunLost, Runner
from mcp_letta.runtime.submitting import SHUTDOWN_ERROR, ClaimResult, OnStep, Submitting, Worker
from mcp_letta.store import runs as runs_sql
from mcp_letta.store.db import Conn, Database

log = logging.getLogger("mcp_letta.scheduler")

HEARTBEAT_S = 5.0  # a process renews its leases this often...
LEASE_S = 30.0  # ...and a lease (or heartbeat) this old means the process is gone
CANCEL_SETTLE_S = 10.0  # how long cancel_run waits for a running run to stop before returning it


class ChangeLike(Protocol):
    """What the scheduler reads from the hub's change feed."""

    kind: str
    ref: str
    local: bool


class _Watch:
    """Wakes the waiters of one run at its next change; carries the run when this process finished it."""

    __slots__ = ("callbacks", "event", "run")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.run: Run | None = None
        self.callbacks: list[Callable[[str, Run | None], None]] = []


class Scheduler(Submitting):
    """Executes runs for one process; see the module docstring. Start it with the hub, stop it before."""

    def __init__(
        self,
        db: Database,
        runner: Runner,
        *,
        max_concurrency: int,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.db = db
        self.runner = runner
        self.owner = runner.owner
        self.heartbeat_s = heartbeat_s
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._workers: dict[str, Worker] = {}
        self._workers_lock = threading.Lock()  # also taken in a worker thread (see _create_and_claim)
        self._blocked: set[str] = set()  # agents with local queued runs waiting on another process
        self._scopes: dict[str, anyio.CancelScope] = {}  # runs executing here
        self._executing: dict[str, Worker] = {}  # run id -> the worker executing it here
        self._cancel_asked: set[str] = set()  # cancelled between claim and scope registration
        self._watches: dict[str, _Watch] = {}  # run id -> woken at its next change
        self._listeners: dict[str, list[OnStep]] = {}
        self._tg: TaskGroup | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self, task_group: TaskGroup, changes: ObjectReceiveStream[Any]) -> None:
        """Register this process, recover what dead processes left, and start the background tasks."""
        self._tg = task_group
        agents = await self.runner.write(self._heartbeat_and_recover)
        task_group.start_soon(self._keep_alive)
        task_group.start_soon(self._follow, changes)
        for agent_id in agents:
            self.wake(agent_id)

    async def stop(self) -> None:
        """Leave the process table so others adopt our queued runs at once; running runs end interrupted."""
        self._tg, self._stopping = None, True
        try:
            await self.runner.write(runs_sql.forget_process, self.owner)
        except Exception:  # shutting down must go on even if the file is gone or busy
            log.exception("could not remove this process from the process table")

    def _heartbeat_and_recover(self, conn: Conn) -> list[str]:
        if self._stopping:  # a heartbeat after forget_process would make us look alive for a lease
            return []
        runs_sql.heartbeat(conn, self.owner)
        return runs_sql.recover(conn, self.owner)

    async def _keep_alive(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_s)
            try:
                agents = await self.runner.write(self._heartbeat_and_recover)
            except Exception:  # a busy or briefly unavailable file must not end the heartbeat
                log.exception("heartbeat failed; retrying")
                continue
            for agent_id in {*agents, *self._blocked}:
                self.wake(agent_id)
            for run_id in [r for r in self._watches if r not in self._scopes]:
                self._signal(run_id)  # runs interrupted by the recovery, or a change the feed missed

    # -- submitting and executing ------------------------------------------------------------------
    async def _take(self, worker: Worker) -> None:
        await self._limiter.acquire_on_behalf_of(worker)
        worker.holding = True

    def _give_back(self, worker: Worker) -> None:
        if worker.holding:
            worker.holding = False
            self._limiter.release_on_behalf_of(worker)

    @asynccontextmanager
    async def lend_slot(self, run_id: str | None) -> AsyncIterator[None]:
        """While a run executing here waits on other runs, let them have its concurrency slot.

        The run keeps its agent's turn (nothing else of that agent starts), but holding a global slot
        while blocked would let N orchestrators waiting on N sub-agents deadlock a cap of N. The slot is
        taken back before the run goes on. A no-op for a run not executing in this process.
        """
        worker = self._executing.get(run_id) if run_id is not None else None
        if worker is None or not worker.holding:
            yield
            return
        self._give_back(worker)
        try:
            yield
        finally:
            # If this is cancelled the run is ending anyway, and _drain gives back only a slot it holds.
            await self._take(worker)

    def _unreserve(self, agent_id: str, worker: Worker) -> None:
        with self._workers_lock:
            if self._workers.get(agent_id) is worker:
                del self._workers[agent_id]

    def remove_listener(self, run_id: str, on_step: OnStep) -> None:
        """Stop sending a run's step events to ``on_step``."""
        listeners = self._listeners.get(run_id)
        if listeners and on_step in listeners:
            listeners.remove(on_step)
            if not listeners:
                del self._listeners[run_id]

    def wake(self, agent_id: str) -> None:
        """Make sure a worker will look at the agent's queue (idempotent and cheap)."""
        with self._workers_lock:
            worker = self._workers.get(agent_id)
            if worker is not None:
                worker.again = True
                return
            if self._tg is None:
                return  # stopped: the run stays queued for the next process
            worker = self._workers[agent_id] = Worker()
        self._tg.start_soon(self._drain, agent_id, worker, None, name=f"agent-worker-{agent_id}")

    async def _drain(self, agent_id: str, worker: Worker, first: ClaimResult | None) -> None:
        """Execute the agent's runs one at a time, in order, while it has any this process may run.

        ``first`` is a claim already made on the worker's behalf (its concurrency slot is held).
        """
        try:
            while first is not None or worker.again:
                if first is None:
                    worker.again = False
                    await self._take(worker)
                try:
                    if first is not None:
                        claimed, first = first, None
                    else:
                        claimed = await self.runner.write(self.runner.claim, agent_id)
                    if isinstance(claimed, Claimed):
                        self._blocked.discard(agent_id)
                        await self._execute(claimed, worker)
                        # New local runs wake us anyway; only runs queued before this claim need a look.
                        worker.again = worker.again or claimed.more_queued
                        continue
                except Exception:  # e.g. the file is briefly unwritable: the heartbeat retries the agent
                    log.exception("could not claim a run of agent %s; will retry", agent_id)
                    self._blocked.add(agent_id)
                    return
                finally:
                    self._give_back(worker)
                if isinstance(claimed, Run):  # failed at once (its agent was deleted): take the next
                    self._signal(claimed.id)
                    worker.again = True
                elif claimed == "blocked":
                    self._blocked.add(agent_id)
                else:
                    self._blocked.discard(agent_id)
        finally:
            self._unreserve(agent_id, worker)

    async def _execute(self, claimed: Claimed, worker: Worker) -> None:
        run_id = claimed.run.id
        scope = anyio.CancelScope()
        self._scopes[run_id] = scope
        self._executing[run_id] = worker
        if run_id in self._cancel_asked:
            scope.cancel()
        finished: Run | None = None
        try:
            try:
                with scope:
                    # (listeners are added in submit, before this task runs: none now means none at all)
                    on_step = self._on_step_of(run_id) if run_id in self._listeners else None
                    finished = await self.runner.execute(claimed, on_step)
            except CancelRequested:
                scope.cancel()
            if scope.cancel_called:
                with anyio.CancelScope(shield=True):
                    finished = await self._end(run_id, "cancelled", "cancelled while running", "cancelled")
        except RunLost:
            log.warning("run %s was taken over by another process (its lease had expired)", run_id)
        except anyio.get_cancelled_exc_class():  # the hub is closing
            with anyio.CancelScope(shield=True):
                finished = await self._end(run_id, "interrupted", SHUTDOWN_ERROR, "interrupted")
            raise
        finally:
            self._scopes.pop(run_id, None)
            self._executing.pop(run_id, None)
            self._cancel_asked.discard(run_id)
            self._listeners.pop(run_id, None)
            self._signal(run_id, finished if finished is not None and finished.done else None)

    async def _end(self, run_id: str, status: str, error: str, stop_reason: str) -> Run | None:
        """Finish a run that stopped early (unless it finished meanwhile); the run as it now is."""

        def end(conn: Conn) -> Run:
            runs_sql.finish_run(conn, run_id, status=status, error=error, stop_reason=stop_reason)
            return runs_sql.get_run(conn, run_id)

        try:
            return await self.runner.write(end)
        except Exception:  # the lease runs out and another process marks it interrupted instead
            log.exception("could not mark run %s %s", run_id, status)
            return None

    def _on_step_of(self, run_id: str) -> OnStep:
        async def emit(event: StepEvent) -> None:
            for listener in list(self._listeners.get(run_id, ())):
                try:
                    await listener(event)
                except Exception:  # a broken progress callback must not fail the run
                    log.exception("on_step callback for run %s failed", run_id)

        return emit

    # -- waiting -----------------------------------------------------------------------------------
    def _signal(self, run_id: str, run: Run | None = None) -> None:
        """Wake the run's waiters; pass the run when it is known to be final (saves them a read)."""
        watch = self._watches.pop(run_id, None)
        if watch is not None:
            watch.run = run
            watch.event.set()
            for callback in watch.callbacks:
                callback(run_id, run)

    def on_next_change(self, run_id: str, callback: Callable[[str, Run | None], None]) -> None:
        """Call ``callback(run_id, run)`` at the run's next change, as ``wait`` wakes: with the run when this
        process knows it final, else None (read it to see). Not called if the run is already final."""
        watch = self._watches.get(run_id)
        if watch is None:
            watch = self._watches[run_id] = _Watch()
        watch.callbacks.append(callback)

    async def get(self, run_id: str) -> Run:
        """The run as stored now."""
        return await self.db.read(runs_sql.get_run, run_id)

    async def wait(self, run_id: str, wait_s: float | None, *, current: Run | None = None) -> Run:
        """The run once it has finished, or as it is when ``wait_s`` seconds pass (``None``: no bound).

        ``current`` is the run as the caller just got it (it is not read again first).
        """
        with anyio.move_on_after(wait_s):
            while True:
                watch = self._watches.get(run_id)
                if watch is None:  # made before reading, so no change between the read and the wait is missed
                    watch = self._watches[run_id] = _Watch()
                if current is None:
                    try:
                        current = await self.get(run_id)
                    except NotFound:
                        self._watches.pop(run_id, None)
                        raise
                if current.done:
                    return current
                await watch.event.wait()
                current = watch.run
        return await self.get(run_id)

    async def wait_done(self, run_id: str, wait_s: float | None) -> Run:
        """The run once it has finished; ``Timeout`` (the run goes on) if ``wait_s`` seconds pass first."""
        run = await self.wait(run_id, wait_s)
        if not run.done:
            raise Timeout(
                f"run {run_id} of agent {run.agent_name!r} is still {run.status} after {wait_s}s; it goes on: "
                "call get_run later for its reply, or cancel_run to stop it",
                run_id=run_id,
                status=run.status,
            )
        return run

    # -- cancelling --------------------------------------------------------------------------------
    async def cancel(self, run_id: str) -> Run:
        """Cancel a run, and every run it is waiting on (recursively): a queued one at once, a running one
        here or in another process as soon as it notices.

        Returns the run once it has stopped (or after a short wait, with ``cancel_requested`` set).
        """
        outcomes = await self.runner.write(runs_sql.cancel_with_waited, run_id)
        for ref, outcome in outcomes:
            if outcome == "cancelled":
                self._signal(ref)
            elif outcome == "requested":
                scope = self._scopes.get(ref)
                if scope is not None:
                    scope.cancel()
                else:
                    self._cancel_asked.add(ref)  # claimed but not started here yet, or running elsewhere
        requested = [ref for ref, outcome in outcomes if outcome == "requested"]
        try:
            if outcomes[0][1] == "requested":
                return await self.wait(run_id, CANCEL_SETTLE_S)
        finally:
            for ref in requested:
                if ref not in self._scopes:
                    self._cancel_asked.discard(ref)
        return await self.get(run_id)

    # -- other processes ---------------------------------------------------------------------------
    async def _follow(self, changes: ObjectReceiveStream[Any]) -> None:
        """Act on other processes' run changes: wake waiters, honour cancellations, unblock agents."""
        async with changes:
            async for first in changes:
                batch: list[ChangeLike] = [first]
                while True:
                    try:
                        batch.append(changes.receive_nowait())
                    except anyio.WouldBlock:
                        break
                # Local run changes need nothing here: this process signals its own runs' ends directly. A
                # local "queued" is a run this process queued outside submit (a reply delivered to an agent).
                for agent_id in {change.ref for change in batch if change.kind == "queued" and change.local}:
                    self.wake(agent_id)
                foreign = {change.ref for change in batch if change.kind == "run" and not change.local}
                for run_id in foreign:
                    self._signal(run_id)
                if foreign:
                    try:
                        await self._on_foreign_runs(foreign)
                    except Exception:  # the heartbeat catches up on anything missed here
                        log.exception("handling other processes' run changes failed")

    async def _on_foreign_runs(self, run_ids: set[str]) -> None:
        marks = ",".join("?" * len(run_ids))
        rows = await self.db.read(
            lambda c: c.execute(
                f"SELECT id, agent_id, status, cancel_requested FROM runs WHERE id IN ({marks})", list(run_ids)
            ).fetchall()
        )
        for row in rows:
            scope = self._scopes.get(row["id"])
            if scope is not None and row["cancel_requested"]:
                scope.cancel()
            if row["agent_id"] in self._blocked and row["status"] != "running":
                self.wake(row["agent_id"])
