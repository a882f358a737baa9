"""Submitting runs to the scheduler: one or many in one transaction, claimed at once for agents idle here,
and a broadcast's early first requests (see ``runtime/requests.py``). ``Scheduler`` inherits it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from mcp_letta.errors import LettaError
from mcp_letta.models import Run, StepEvent
from mcp_letta.runtime.requests import Early
from mcp_letta.runtime.runner import Claimed, Runner
from mcp_letta.store.db import Conn

log = logging.getLogger("mcp_letta.scheduler")

SHUTDOWN_ERROR = (
    "the process running this run shut down before the run finished; the input is in the agent's history: "
    "send the message again if you still need an answer"
)

OnStep = Callable[[StepEvent], Awaitable[None]]
ClaimResult = Claimed | Run | str  # see Runner.claim


class Worker:
    """An agent's worker task: ``again`` is set when more work may have arrived. It is also the borrower
    of the worker's concurrency slot, so a slot taken in ``submit`` can be handed to the task; ``holding``
    says whether it has the slot now (a run waiting on other agents lends it out, see ``lend_slot``)."""

    __slots__ = ("again", "holding")

    def __init__(self, *, again: bool = True) -> None:
        self.again = again
        self.holding = False


class Preview(NamedTuple):
    """What a run about to be submitted will be: its agent, and the role and text of its input."""

    agent_id: str
    role: str
    content: str


class _EarlyStart:
    """A run's early request in its agent's worker task, and what the submitting transaction decided: the
    claim (``first``, None when nothing was claimed) and whether it took the early request."""

    __slots__ = ("decided", "early", "first", "scope", "worker")

    def __init__(self, early: Early, worker: Worker) -> None:
        self.early = early
        self.worker = worker
        self.scope = anyio.CancelScope()  # cancelled when the request will not be used
        self.decided = anyio.Event()
        self.first: ClaimResult | None = None

    def decide(self, first: ClaimResult | None, taken: bool = False) -> None:
        """Hand the worker its claim; an early request not taken is abandoned."""
        if not taken:
            self.scope.cancel()
        self.first = first
        self.decided.set()


class Submitting:
    """How runs enter the scheduler (``Scheduler`` provides the attributes declared here)."""

    runner: Runner
    _limiter: anyio.CapacityLimiter
    _tg: TaskGroup | None
    _workers: dict[str, Worker]
    _workers_lock: threading.Lock
    _listeners: dict[str, list[OnStep]]
    _give_back: Callable[[Worker], None]
    _unreserve: Callable[[str, Worker], None]
    wake: Callable[[str], None]
    _drain: Callable[[str, Worker, ClaimResult | None], Awaitable[None]]
    _end: Callable[[str, str, str, str], Awaitable[Run | None]]

    async def submit(self, create: Callable[[Conn], Run], on_step: OnStep | None = None) -> Run:
        """Persist a queued run with ``create(conn)`` (in a write transaction), then schedule it.

        When the agent is idle here and a concurrency slot is free, the run is claimed in that same
        transaction (one commit fewer on the common path): ``submit_many`` for one run.
        """
        [made] = await self.submit_many([create])
        if isinstance(made, LettaError):
            raise made
        if on_step is not None:  # in time: the run's worker task has not run yet (no checkpoint since)
            self._listeners.setdefault(made.id, []).append(on_step)
        return made

    async def submit_many(
        self, creates: Sequence[Callable[[Conn], Run]], previews: Sequence[Preview | None] = ()
    ) -> list[Run | LettaError]:
        """``submit`` for many runs in one transaction, each ``create`` in its own savepoint: one that
        raises a ``LettaError`` (e.g. a refused wait) leaves nothing and its error takes its place.

        A broadcast's runs are stored, and those whose agents are idle here claimed, as free concurrency
        slots allow, all in one commit: one transaction, not one per recipient queued behind the first.
        ``previews`` (aligned with ``creates``: the agent id, role and text each will store) let a run whose
        agent this process ran before send its first request before the transaction (``Runner.plan_early``).
        """
        workers: list[Worker] = []
        while len(workers) < len(creates) and self._tg is not None:
            worker = Worker(again=False)
            try:
                self._limiter.acquire_on_behalf_of_nowait(worker)
            except anyio.WouldBlock:
                break
            worker.holding = True
            workers.append(worker)
        starts = self._send_early(previews, workers)
        if starts:  # let the early requests go out before the transaction takes the GIL's other half
            await anyio.lowlevel.cancel_shielded_checkpoint()
        # Shielded: were the caller cancelled once the runs are stored (and maybe claimed, their workers
        # reserved), nobody would execute them; a sent message goes on, like one sent just before.
        with anyio.CancelScope(shield=True):
            try:
                made, spare = await self.runner.write(self._create_and_claim_many, creates, workers, starts)
            except BaseException:  # nothing was stored (the transaction failed as a whole)
                early_workers = {id(start.worker) for start in starts.values()}
                for worker in workers:
                    self._give_back(worker)
                    if id(worker) not in early_workers:  # (an early start's task ends its worker as any does)
                        self._unreserve_worker(worker)
                for start in starts.values():
                    start.decide(None)
                raise
        for worker in spare:
            self._give_back(worker)
        out: list[Run | LettaError] = []
        for index, (outcome, worker, first) in enumerate(made):
            out.append(outcome)
            if (start := starts.get(index)) is not None:
                if first is None:
                    self._give_back(start.worker)
                start.decide(first, isinstance(first, Claimed) and self._takes_early(first, start.early))
                continue
            if isinstance(outcome, LettaError):
                continue
            if worker is None or first is None or self._tg is None:
                if worker is not None:
                    self._give_back(worker)
                    self._unreserve(outcome.agent_id, worker)
                self.wake(outcome.agent_id)
            else:
                self._tg.start_soon(
                    self._drain, outcome.agent_id, worker, first, name=f"agent-worker-{outcome.agent_id}"
                )
        return out

    def _takes_early(self, claimed: Claimed, early: Early) -> bool:
        try:
            return self.runner.takes_early(claimed, early)
        except Exception:  # sending early only saves time: a bug in it must not strand the run
            log.exception("could not compare the early request of run %s; asking again", claimed.run.id)
            return False

    def _send_early(self, previews: Sequence[Preview | None], workers: list[Worker]) -> dict[int, _EarlyStart]:
        """Start the first requests of the previewed runs whose agents are idle here and remembered (see
        ``Runner.plan_early``), each in its agent's worker task, which then waits for the transaction."""
        starts: dict[int, _EarlyStart] = {}
        for index, preview in enumerate(previews):
            if preview is None or len(starts) == len(workers) or self._tg is None:
                continue
            try:
                early = self.runner.plan_early(preview.agent_id, preview.role, preview.content)
            except Exception:  # sending early only saves time: a bug in it must not fail the broadcast
                log.exception("could not build an early request for agent %s", preview.agent_id)
                continue
            if early is None:
                continue
            worker = workers[len(starts)]
            with self._workers_lock:  # (checked and taken at once: another submit's transaction may claim it)
                if preview.agent_id in self._workers:
                    continue  # the agent has a worker here: its runs go in turn, as any run's do
                self._workers[preview.agent_id] = worker
            start = starts[index] = _EarlyStart(early, worker)
            self._tg.start_soon(self._drain_early, preview.agent_id, start, name=f"agent-worker-{preview.agent_id}")
        return starts

    async def _drain_early(self, agent_id: str, start: _EarlyStart) -> None:
        """The agent's worker, from its early request: then its run (first step answered if the start took
        the request), or whatever the transaction left it."""
        early = start.early
        try:
            with start.scope:
                try:
                    early.answer = await early.client.chat(early.request)
                except Exception as exc:  # the run's first step fails the same way, if the start takes it
                    early.answer = exc
            if not start.decided.is_set():
                await start.decided.wait()
        except anyio.get_cancelled_exc_class():  # the hub is closing
            with anyio.CancelScope(shield=True):
                await start.decided.wait()
                if isinstance(start.first, Claimed):
                    await self._end(start.first.run.id, "interrupted", SHUTDOWN_ERROR, "interrupted")
                self._give_back(start.worker)
                self._unreserve(agent_id, start.worker)
            raise
        await self._drain(agent_id, start.worker, start.first)

    def _create_and_claim_many(
        self,
        conn: Conn,
        creates: Sequence[Callable[[Conn], Run]],
        workers: list[Worker],
        starts: dict[int, _EarlyStart],
    ) -> tuple[list[tuple[Run | LettaError, Worker | None, Any]], list[Worker]]:
        """(In the write transaction.) Each create in a savepoint; claim for the idle agents while workers last
        (an early start's agent has its worker already)."""
        taken = {id(start.worker) for start in starts.values()}
        spare: list[Worker] = [worker for worker in workers if id(worker) not in taken]
        made: list[tuple[Run | LettaError, Worker | None, Any]] = []
        for index, create in enumerate(creates):
            mark = len(conn.changes)
            conn.execute("SAVEPOINT submit_one")
            try:
                run = create(conn)
            except LettaError as exc:
                conn.execute("ROLLBACK TO submit_one")
                conn.execute("RELEASE submit_one")
                del conn.changes[mark:]
                made.append((exc, None, None))
                continue
            conn.execute("RELEASE submit_one")
            if (start := starts.get(index)) is not None:
                made.append((run, start.worker, None))
                continue
            worker = spare.pop() if spare else None
            if worker is not None:
                with self._workers_lock:
                    if run.agent_id in self._workers:
                        spare.append(worker)  # the agent's worker here will take this run in turn
                        worker = None
                    else:
                        self._workers[run.agent_id] = worker
            made.append((run, worker, None))
        # The idle agents' runs start together: one query each for what every start reads.
        reserved = [i for i, (_, worker, _) in enumerate(made) if worker is not None]
        compiled_at = {start.early.agent_id: start.early.compiled_at for start in starts.values()}
        claims = self.runner.claim_many(conn, [made[i][0].agent_id for i in reserved], compiled_at)  # type: ignore[union-attr]
        for i, first in zip(reserved, claims, strict=True):
            made[i] = (made[i][0], made[i][1], first)
        return made, spare

    def _unreserve_worker(self, worker: Worker) -> None:
        with self._workers_lock:
            for agent_id in [a for a, w in self._workers.items() if w is worker]:
                del self._workers[agent_id]
