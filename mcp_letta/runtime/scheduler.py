"""The run queue: FIFO and one run at a time per agent, many agents in parallel up to a global cap, across
every process sharing the database; waiting on runs, step progress, cancellation, recovery after a crash.

The queue is the store's runs. Each agent with work has one worker task (owned by the hub's task group)
that claims the agent's next run in a write transaction (``Tx.claim_many``) and executes it. A running run
holds a lease this process renews with its heartbeat. A run whose process stopped goes back to the queue
and is resumed from its last committed step: at once when the process closes cleanly (``stop``), or once
a live process sees the old one is dead or its lease passed (``Tx.recover``, at start and every
heartbeat); the queued runs it left are adopted the same way. ``wind_down`` gives the runs in flight a
grace period first. Other processes' changes arrive through the store's change feed, which wakes waiters,
blocked agents and cancellations.

When the store shares its queue (``Store.shares_queue``: replicas on one PostgreSQL database), any process
may start any queued run, and no worker lines up for a run there is no free slot for: it waits in the
queue, and the change feed tells every process so (``Tx.announce_waiting``). A process with an idle slot
looks for work when told (and at start and every heartbeat): in one write transaction it claims the next
runs of agents that run nowhere, oldest first, as many as it has idle slots (``Tx.startable_agents`` locks
those agents and passes over the ones another process is claiming right now, so processes looking at
once take different runs). A look that filled every idle slot is followed by another at the next idle
slot. A run is executed wherever there was room; its waiters, wherever they are, hear of its end through
the change feed.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from mcp_letta.errors import LettaError, NotFound, StorageUnavailable, Timeout
from mcp_letta.models import Run, StepEvent
from mcp_letta.runtime.runner import CancelRequested, ClaimResult, RunContext, RunLost, Runner
from mcp_letta.store import Change, Store, Tx

log = logging.getLogger("mcp_letta.scheduler")

QUIET_HEARTBEATS = 2  # after a failed heartbeat, this many take nothing over (see ``_keep_alive``)
HEARTBEAT_S = 5.0  # a process renews its leases this often...
LEASE_S = 30.0  # ...and a lease (or heartbeat) this old means the process is gone
CANCEL_SETTLE_S = 10.0  # how long cancel_run waits for a running run to stop before returning it

OnStep = Callable[[StepEvent], Awaitable[None]]


class Worker:
    """An agent's worker task: ``again`` is set when more work may have arrived. It is also the borrower of
    the worker's concurrency slot, so a slot taken in ``submit_many`` can be handed to the task; ``holding``
    says whether it has the slot now (a run waiting on other agents lends it out, see ``lend_slot``)."""

    __slots__ = ("again", "holding")

    def __init__(self, *, again: bool = True) -> None:
        self.again = again
        self.holding = False


class _Watch:
    """Wakes the waiters of one run at its next change; carries the run when this process finished it."""

    __slots__ = ("event", "run")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.run: Run | None = None


class Scheduler:
    """Executes runs for one process; see the module docstring. Start it with the hub, stop it before."""

    def __init__(self, store: Store, runner: Runner, *, max_concurrency: int, heartbeat_s: float = HEARTBEAT_S):
        self.store = store
        self.runner = runner
        self.owner = runner.owner
        self.heartbeat_s = heartbeat_s
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._workers: dict[str, Worker] = {}
        self._workers_lock = threading.Lock()  # also taken in the store's thread (see _create_and_claim)
        self._blocked: set[str] = set()  # agents with local queued runs waiting on another process
        self._scopes: dict[str, anyio.CancelScope] = {}  # runs executing here
        self._executing: dict[str, Worker] = {}  # run id -> the worker executing it here
        self._cancel_asked: set[str] = set()  # cancelled between claim and scope registration
        self._stopped_why: dict[str, str] = {}  # runs stopped here because their agent was deleted: why
        self._watches: dict[str, _Watch] = {}  # run id -> woken at its next change
        self._listeners: dict[str, list[OnStep]] = {}
        self._relayed: dict[str, int] = {}  # run id -> steps its listeners heard of (run executing elsewhere)
        self._tg: TaskGroup | None = None
        self._foreign_runs: set[str] = set()  # other processes' run changes not yet read (``_on_foreign_runs``)
        self._reading_foreign_runs = False
        self._missed_queued = False  # another process queued runs this one had no idle slot for
        self._looking_for_work = False
        self._stopping = False
        self._winding_down = False  # no new run starts here; those in flight may finish
        self.leaving = False  # the process is stopping (``leave``, ``wind_down`` or ``stop`` was called)
        self._all_stopped: anyio.Event | None = None  # set when no run executes here (while winding down)
        store.add_listener(self._on_changes)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self, task_group: TaskGroup, *, takes_runs: bool = True) -> None:
        """Register this process, take over (and resume) what dead processes left, start the background tasks;
        with a shared queue, take the queued runs it has room for. Without ``takes_runs`` (a process that
        only looks and edits, such as ``mcp-letta doctor``) it starts, resumes and takes no run: the runs it
        sends wait for a process that runs agents, and waiting on runs works as usual."""
        self._tg, self._stopping, self._winding_down, self.leaving = task_group, False, not takes_runs, False
        if not takes_runs:
            return
        agents = await self.store.write(functools.partial(self._heartbeat_and_recover, executing=[]))
        task_group.start_soon(self._keep_alive)
        for agent_id in agents:
            self.wake(agent_id)
        self._missed_queued = self.owner.shares_queue  # runs queued before we started: take what we have room for
        self._look_for_work()

    def leave(self) -> None:
        """The process is stopping: start no more runs here (those executing go on)."""
        self._winding_down = self.leaving = True

    async def wind_down(self, grace_s: float) -> None:
        """Start no more runs here, and give the runs executing here up to ``grace_s`` seconds to finish.

        Runs sent meanwhile are stored and stay queued. Call ``stop`` after: it hands back what is left.
        """
        self.leave()
        if self._executing:
            await self._runs_ended(grace_s)

    async def _runs_ended(self, within_s: float) -> None:
        """Wait until no run executes here, or ``within_s`` seconds. Waits that overlap (``stop`` during
        ``wind_down``) share one event, set when the last run ends."""
        if self._all_stopped is None or self._all_stopped.is_set():
            self._all_stopped = anyio.Event()
        with anyio.move_on_after(within_s):
            await self._all_stopped.wait()

    async def stop(self) -> None:
        """Stop the runs executing here and hand them back: they go back to the queue, to be resumed from
        their last committed step by the next process (another one at once, or this one when it starts
        again); leave the process table, so others adopt them and our queued runs without waiting.
        Waiters on runs in this process get each run as it is then. Once stopped, nothing more happens."""
        if self._stopping:
            return
        self._tg, self._stopping, self._winding_down, self.leaving = None, True, True, True
        with anyio.CancelScope(shield=True):  # even when closing because we are cancelled (Ctrl-C)
            if self._executing:
                for scope in self._scopes.values():
                    scope.cancel()
                await self._runs_ended(CANCEL_SETTLE_S)
            try:
                await self.store.write(lambda tx: tx.forget_process(self.owner))
            except Exception:  # shutting down must go on even if the file is gone or busy
                if self.store.refusal is None:  # (else it was said when the store stopped)
                    log.exception("could not hand back this process's runs; others take them over when its lease "
                                  "passes")  # fmt: skip
            runs: list[Run] = []
            if self._watches:
                try:
                    runs = await self.store.read(lambda tx: tx.get_runs(sorted(self._watches)))
                except Exception:
                    log.exception("could not read the runs waited on here")
        for run in runs:
            self._signal(run.id, run)

    def _heartbeat_and_recover(self, tx: Tx, executing: list[str], recovering: bool = True) -> list[str]:
        if self._stopping:  # a heartbeat after forget_process would make us look alive for a lease
            return []
        self.owner.clock.follow(tx.server_time)  # before anything is compared with other processes' times
        tx.heartbeat(self.owner, executing)
        if self._winding_down or not recovering:  # take nothing over: it would only be handed back
            return []
        return tx.recover(self.owner)

    async def _keep_alive(self) -> None:
        quiet = 0  # heartbeats left that take nothing over (see below)
        while True:
            await anyio.sleep(self.heartbeat_s)
            executing = sorted(self._executing)  # (read here, on the event loop that changes it)
            try:
                agents = await self.store.write(
                    functools.partial(self._heartbeat_and_recover, executing=executing, recovering=quiet == 0)
                )
            except Exception as exc:  # a busy or briefly unavailable database must not end the heartbeat
                if self.store.refusal is not None:  # a newer mcp-letta migrated it: others take our runs over
                    return
                if isinstance(exc, StorageUnavailable):
                    log.warning("heartbeat failed (%s); retrying", exc)
                else:
                    log.exception("heartbeat failed; retrying")
                # When the database was out of reach for everyone, every lease may have passed meanwhile: give the
                # other live processes two heartbeats to renew theirs before taking over what looks abandoned.
                quiet = QUIET_HEARTBEATS
                continue
            quiet = max(0, quiet - 1)
            for agent_id in {*agents, *self._blocked}:
                self.wake(agent_id)
            self._missed_queued = self.owner.shares_queue  # what the feed may not have told: a look now and then
            self._look_for_work()
            try:
                await self._recheck_waited()
            except Exception:
                log.exception("reading the runs waited on here failed; retrying at the next heartbeat")

    async def _recheck_waited(self) -> None:
        """Wake the waiters of runs executing elsewhere that ended: interrupted by the recovery, or a change the
        feed missed. One read for all of them."""
        waited = sorted(run_id for run_id in self._watches if run_id not in self._scopes)
        if waited:
            runs = await self.store.read(lambda tx: tx.get_runs(waited))
            self._signal_ended(waited, runs)

    # -- submitting and executing ------------------------------------------------------------------
    async def submit(self, create: Callable[[Tx], Run], on_step: OnStep | None = None) -> Run:
        """Persist a queued run with ``create(tx)`` (in a write transaction), then schedule it: ``submit_many``
        for one run. ``on_step`` hears of each of its steps."""
        [made] = await self.submit_many([create])
        if isinstance(made, LettaError):
            raise made
        if on_step is not None:  # in time: the run's worker task has not run yet (no checkpoint since)
            self._listeners.setdefault(made.id, []).append(on_step)
        return made

    async def submit_many(self, creates: Sequence[Callable[[Tx], Run]]) -> list[Run | LettaError]:
        """Store many runs in one transaction, each ``create`` in its own savepoint: one that raises a
        ``LettaError`` (e.g. a refused wait) leaves nothing and its error takes its place. The runs whose
        agents are idle here are started in the same transaction, as free concurrency slots allow."""
        workers = self._spare_slots(len(creates))
        # Shielded: were the caller cancelled once the runs are stored (and maybe started, their workers
        # reserved), nobody would execute them; a sent message goes on, like one sent just before.
        with anyio.CancelScope(shield=True):
            try:
                made = await self.store.write(lambda tx: self._create_and_claim(tx, creates, workers))
            except BaseException:  # nothing was stored (the transaction failed as a whole)
                self._release(workers)
                raise
        self._start_workers(workers, [(o.agent_id, w, first) for o, w, first in made if isinstance(o, Run) and w])
        for outcome, worker, _ in made:
            if isinstance(outcome, Run) and worker is None:
                self._queued(outcome.agent_id)
        return [outcome for outcome, _, _ in made]

    def _spare_slots(self, wanted: int) -> list[Worker]:
        """Up to ``wanted`` workers, each holding a concurrency slot that was free."""
        workers: list[Worker] = []
        while len(workers) < wanted and self._tg is not None and not self._winding_down:
            worker = Worker(again=False)
            try:
                self._limiter.acquire_on_behalf_of_nowait(worker)
            except anyio.WouldBlock:
                break
            worker.holding = True
            workers.append(worker)
        return workers

    def _start_workers(self, workers: list[Worker], started: Sequence[tuple[str, Worker, ClaimResult | None]]) -> None:
        """Run each agent's worker task, with the claim made for it; give back the slots nobody used."""
        used = {id(worker) for _, worker, _ in started}
        for worker in workers:
            if id(worker) not in used:
                self._give_back(worker)
        for agent_id, worker, first in started:
            if self._tg is None:
                self._give_back(worker)
                self._unreserve(agent_id, worker)
                continue
            self._tg.start_soon(self._drain, agent_id, worker, first, name=f"agent-worker-{agent_id}")

    def _queued(self, agent_id: str) -> None:
        """A run of this agent was stored with no slot free for it here. Its worker here takes it in turn. Without
        one, a shared queue leaves it to whichever process has an idle slot first (this one looks at its next);
        else a worker waits here for a slot."""
        if self.owner.shares_queue and agent_id not in self._workers:
            self._missed_queued = True
            self._look_for_work()
        else:
            self.wake(agent_id)

    def _create_and_claim(
        self, tx: Tx, creates: Sequence[Callable[[Tx], Run]], workers: list[Worker]
    ) -> list[tuple[Run | LettaError, Worker | None, ClaimResult | None]]:
        """(In the write transaction.) Each create in a savepoint; then start the runs of the agents idle here
        while workers last."""
        spare = list(workers)
        made: list[tuple[Run | LettaError, Worker | None, ClaimResult | None]] = []
        for create in creates:
            try:
                with tx.savepoint():
                    run = create(tx)
            except LettaError as exc:
                made.append((exc, None, None))
                continue
            worker = None
            if spare:
                with self._workers_lock:
                    if run.agent_id not in self._workers:  # else the agent's worker here takes it in turn
                        worker = self._workers[run.agent_id] = spare.pop()
            made.append((run, worker, None))
        reserved = [i for i, (_, worker, _) in enumerate(made) if worker is not None]
        claims = self.runner.claim(tx, [made[i][0].agent_id for i in reserved])  # type: ignore[union-attr]
        for i, first in zip(reserved, claims, strict=True):
            made[i] = (made[i][0], made[i][1], first)
        if self.owner.shares_queue:  # the runs left waiting: for whichever process has an idle slot
            waiting = [o.agent_id for o, _, first in made if isinstance(o, Run) and not isinstance(first, RunContext)]
            tx.announce_waiting(waiting)
        return made

    def _release(self, workers: list[Worker]) -> None:
        """Undo ``_spare_slots`` after a transaction that claimed nothing: give back the workers' slots and the
        agents reserved for them."""
        for worker in workers:
            self._give_back(worker)
        released = {id(worker) for worker in workers}
        with self._workers_lock:
            for agent_id in [a for a, w in self._workers.items() if id(w) in released]:
                del self._workers[agent_id]

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
        self._look_for_work()  # (shared queue) the runs waited on may be queued for want of a slot
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
                self._relayed.pop(run_id, None)

    def wake(self, agent_id: str) -> None:
        """Make sure a worker will look at the agent's queue (idempotent and cheap)."""
        with self._workers_lock:
            worker = self._workers.get(agent_id)
            if worker is not None:
                worker.again = True
                return
            if self._tg is None or self._winding_down:
                return  # stopping: the run stays queued for the next process
            worker = self._workers[agent_id] = Worker()
        self._tg.start_soon(self._drain, agent_id, worker, None, name=f"agent-worker-{agent_id}")

    async def _drain(self, agent_id: str, worker: Worker, first: ClaimResult | None) -> None:
        """Execute the agent's runs one at a time, in order, while it has any this process may run.

        ``first`` is a claim already made on the worker's behalf (its concurrency slot is held).
        """
        try:
            while first is not None or (worker.again and not self._winding_down):
                if first is None:
                    worker.again = False
                    await self._take(worker)
                    if self._winding_down:  # (it waited for the slot as the process began to stop)
                        self._give_back(worker)
                        break
                try:
                    if first is not None:
                        claimed, first = first, None
                    else:
                        [claimed] = await self.store.write(lambda tx: self.runner.claim(tx, [agent_id]))
                    if isinstance(claimed, RunContext):
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
                    self._signal(claimed.id, claimed if claimed.done else None)
                    worker.again = True
                elif claimed == "blocked":
                    self._blocked.add(agent_id)
                    # (Shared queue.) Another process took this run just now: more may wait for room.
                    self._missed_queued = self.owner.shares_queue
                else:
                    self._blocked.discard(agent_id)
        finally:
            self._unreserve(agent_id, worker)
            self._look_for_work()

    async def _execute(self, claimed: RunContext, worker: Worker) -> None:
        run_id = claimed.run.id
        if self._stopping:  # claimed as stop() ran: hand it back untouched
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.write(lambda tx: tx.forget_process(self.owner))
                except Exception:
                    log.exception("could not hand back run %s", run_id)
            return
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
                    finished = await self.runner.run(claimed, on_step)
            except CancelRequested:
                scope.cancel()
            if scope.cancel_called and not self._stopping:  # stopping: stop() hands the run back
                why = self._stopped_why.pop(run_id, None)
                with anyio.CancelScope(shield=True):
                    if why is not None:
                        finished = await self._end(run_id, "failed", why, "error")
                    else:
                        finished = await self._end(run_id, "cancelled", "cancelled while running", "cancelled")
        except RunLost:
            log.warning("run %s was taken over by another process (its lease had expired)", run_id)
        except StorageUnavailable as exc:  # its lease is no longer renewed: recovery resumes it
            log.warning("run %s stopped unfinished (%s); it resumes from its last step once the database answers "
                        "and its lease has passed", run_id, exc)  # fmt: skip
        finally:
            self._scopes.pop(run_id, None)
            self._executing.pop(run_id, None)
            self._cancel_asked.discard(run_id)
            self._listeners.pop(run_id, None)
            self._relayed.pop(run_id, None)
            if not self._stopping:  # else its waiters hear from stop(), once the run is handed back
                self._signal(run_id, finished if finished is not None and finished.done else None)
            if not self._executing and self._all_stopped is not None:
                self._all_stopped.set()

    async def _end(self, run_id: str, status: str, error: str, stop_reason: str) -> Run | None:
        """Finish a run that stopped early (unless it finished meanwhile); the run as it now is."""

        def end(tx: Tx) -> Run:
            tx.finish_run(run_id, status=status, error=error, stop_reason=stop_reason, owner=self.owner)
            return tx.get_run(run_id)

        try:
            return await self.store.write(end)
        except Exception:  # the lease runs out and another process takes the run over instead
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

    def _signal_ended(self, run_ids: Iterable[str], runs: list[Run]) -> None:
        """Given ``runs`` as just read of ``run_ids``: wake the waiters of those that ended, with the run (final,
        so no later read can be older), and of those no longer stored (their waiters find out)."""
        found = {run.id for run in runs}
        for run_id in run_ids:
            if run_id not in found:
                self._signal(run_id)
        for run in runs:
            if run.done:
                self._signal(run.id, run)

    async def get(self, run_id: str) -> Run:
        """The run as stored now."""
        return await self.store.read(lambda tx: tx.get_run(run_id))

    async def wait(self, run_id: str, wait_s: float | None, *, current: Run | None = None) -> Run:
        """The run once it has finished, or as it is when ``wait_s`` seconds pass (``None``: no bound) or this
        process stops (a run it was executing is then back in the queue, to be resumed).

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
                if current.done or self._stopping:
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
        outcomes = await self.store.write(lambda tx: tx.cancel_with_waited(run_id))
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

    def agent_deleted(self, running: Sequence[Run], ended: Sequence[Run]) -> None:
        """An agent was deleted with these runs of its unfinished: stop those executing here at once (they fail
        saying so; one executing in another process fails at its next commit), and wake the waiters of those
        the deletion ``ended`` (they were queued)."""
        for run in running:
            scope = self._scopes.get(run.id)
            if scope is not None:
                self._stopped_why[run.id] = f"agent {run.agent_name!r} was deleted while this run was going"
                scope.cancel()
        for run in ended:
            self._signal(run.id, run)

    # -- other processes ---------------------------------------------------------------------------
    def _on_changes(self, changes: list[Change]) -> None:
        """(The store's listener, on the event loop.) Wake agents that were sent replies here, and act on other
        processes' run changes: wake waiters, honour cancellations, unblock agents."""
        # Local run changes need nothing here: this process signals its own runs' ends directly. "queued" says
        # an agent has a run waiting: a reply delivered to it, a run handed back, or (shared queue) a run
        # stored where no slot was free.
        shared = self.owner.shares_queue  # then another process's queued run is ours to take too
        for agent_id in {change.ref for change in changes if change.kind == "queued" and (change.local or shared)}:
            self._queued(agent_id)
        foreign = {change.ref for change in changes if change.kind == "run" and not change.local}
        # Read here: runs executing here (a cancel), waited on here (their end) or heard of here (their steps,
        # ``_relay_steps``), and every changed run while agents here are blocked.
        if not self._blocked:
            foreign = {r for r in foreign if r in self._scopes or r in self._watches or r in self._listeners}
        foreign |= {c.ref for c in changes if c.kind == "step" and not c.local and c.ref in self._listeners}
        if foreign and self._tg is not None:
            # One reader at a time: what other processes change meanwhile is read together in its next turn,
            # so a busy replica does not read each of the others' run changes (nor each waiter its run) alone.
            self._foreign_runs |= foreign
            if not self._reading_foreign_runs:
                self._reading_foreign_runs = True
                self._tg.start_soon(self._on_foreign_runs)

    async def _on_foreign_runs(self) -> None:
        try:
            while self._foreign_runs:
                run_ids, self._foreign_runs = self._foreign_runs, set()
                await self._act_on_foreign_runs(run_ids)
        finally:
            self._reading_foreign_runs = False

    async def _act_on_foreign_runs(self, run_ids: set[str]) -> None:
        try:
            runs = await self.store.read(lambda tx: tx.get_runs(sorted(run_ids)))
        except Exception:  # the heartbeat catches up on anything missed here
            log.exception("handling other processes' run changes failed")
            return
        self._signal_ended(run_ids, runs)
        for run in runs:
            scope = self._scopes.get(run.id)
            if scope is not None and run.cancel_requested:
                scope.cancel()
            if run.status == "queued" and self.owner.shares_queue:  # queued by another process
                if run.agent_id in self._workers:
                    self.wake(run.agent_id)  # its worker here looks again (it needs no other slot)
            elif run.agent_id in self._blocked and run.status != "running":
                self.wake(run.agent_id)
            if run.id in self._listeners and run.id not in self._scopes and not run.done:
                await self._relay_steps(run)

    def _room(self) -> int:
        """Concurrency slots free here that no worker waits for."""
        stats = self._limiter.statistics()
        return int(stats.total_tokens - stats.borrowed_tokens) - stats.tasks_waiting

    def _look_for_work(self) -> None:
        """(Shared queue.) If runs were queued anywhere that this process had no idle slot for, and it has one
        now, take the oldest of them (one look at a time)."""
        if self._missed_queued and not self._looking_for_work and self._tg is not None and not self._winding_down:
            if self._room() > 0:
                self._looking_for_work = True
                self._tg.start_soon(self._take_queued_work)

    async def _take_queued_work(self) -> None:
        workers = self._spare_slots(self._room())
        try:
            if not workers:  # the idle slot was taken meanwhile: look at the next one
                return
            self._missed_queued = False
            with anyio.CancelScope(shield=True):  # what it claims must be executed (as in submit_many)
                started = await self.store.write(lambda tx: self._claim_startable(tx, workers))
        except Exception:  # the heartbeat looks again
            log.exception("looking for queued runs failed")
            self._release(workers)
            self._missed_queued = True
            return
        finally:
            self._looking_for_work = False
        self._start_workers(workers, started)
        # A look that filled every idle slot may have left more behind: look again at the next idle slot (now,
        # if one went idle meanwhile), until a look finds less than it has room for.
        self._missed_queued = self._missed_queued or len(started) == len(workers)
        self._look_for_work()

    def _claim_startable(self, tx: Tx, workers: list[Worker]) -> list[tuple[str, Worker, ClaimResult]]:
        """(In the write transaction.) Claim the next runs of the agents whose runs may start now, one per
        worker: the oldest such runs that no other process is claiming (``Tx.startable_agents`` locks them)."""
        with self._workers_lock:
            here = list(self._workers)
        reserved: list[tuple[str, Worker]] = []
        for agent_id in tx.startable_agents(len(workers), besides=here):
            with self._workers_lock:
                if agent_id not in self._workers:  # (its run may have been sent here meanwhile)
                    worker = self._workers[agent_id] = workers[len(reserved)]
                    reserved.append((agent_id, worker))
        claims = self.runner.claim(tx, [agent_id for agent_id, _ in reserved])
        return [(agent_id, worker, claim) for (agent_id, worker), claim in zip(reserved, claims, strict=True)]

    async def _relay_steps(self, run: Run) -> None:
        """Tell the listeners here of the steps of a run another process executes that they have not heard of
        (its end reaches their caller as the run's result)."""
        heard = self._relayed.get(run.id, 0)
        emit = self._on_step_of(run.id)
        for step in run.steps:
            if step.index >= heard:
                await emit(StepEvent(run_id=run.id, agent_id=run.agent_id, agent_name=run.agent_name, step=step))
                heard = step.index + 1
        if run.id in self._listeners:
            self._relayed[run.id] = heard
