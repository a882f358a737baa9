"""Group commit for the runtime's writes: whatever many agents' runs want to write while one transaction
commits is written together in the next one, each in its own savepoint.

A run writes a few times (start, each step, the reply), and each commit is an fsync (WAL with
``synchronous=FULL``). One transaction per write made 100 concurrent agents queue behind 200 fsyncs,
so the disk, not the agents, set the pace. Here one batch is committed at a time, in arrival order, and
while writes keep arriving the next batch follows on the database's thread without a trip through the
event loop; a write that raises rolls back only its own savepoint and its caller gets the exception,
while the others commit. Every caller resumes only after its batch is durable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from mcp_letta.store.db import Chained, Conn, Database

T = TypeVar("T")
MAX_BATCH = 256  # writes per transaction: bounds how long one commit holds SQLite's write lock
MAX_CHAIN = 8  # transactions back to back before the waiting writers hear back


class _Write:
    """One queued write: ``fn(conn, *args)``, and its outcome once its batch has committed (or failed)."""

    __slots__ = ("args", "done", "error", "fn", "result", "taken")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.taken = False  # part of a batch being committed: it will run, whatever happens to its caller
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Writes to ``db`` in shared transactions, one batch at a time (see the module docstring)."""

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[_Write] = []
        self._lock = threading.Lock()  # the queue is taken from on the database's worker thread
        self._committing = False
        self._turn = anyio.Event()  # set when a chain of batches ends, then replaced

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a write transaction (perhaps shared) and return its result or raise."""
        write = _Write(fn, args)
        with self._lock:
            self._queue.append(write)
        try:
            while not write.taken:
                if self._committing:
                    await self._turn.wait()
                else:
                    await self._commit_batches()
            await write.done.wait()
        except anyio.get_cancelled_exc_class():
            with self._lock:
                if not write.taken:
                    self._queue.remove(write)  # it never ran
                    raise
            with anyio.CancelScope(shield=True):  # it is being written: the caller learns of it as before
                await write.done.wait()
            raise
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[no-any-return]

    def _take(self) -> list[_Write] | None:
        """(On the database's thread.) The next batch, or None when nothing waits."""
        with self._lock:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            for write in batch:
                write.taken = True
        return batch or None

    async def _commit_batches(self) -> None:
        # Batch after batch on the database's thread while writes keep coming: were each next batch
        # started from the event loop, a loop busy with a hundred agents' answers would leave it idle.
        self._committing = True
        taken: list[list[_Write]] = []

        def take() -> list[_Write] | None:
            batch = self._take() if len(taken) < MAX_CHAIN else None
            if batch is not None:
                taken.append(batch)
            return batch

        done: list[Chained[list[_Write], None]] = []
        try:
            with anyio.CancelScope(shield=True):  # a batch taken is written even if its leader is cancelled
                done = await self.db.write_chain(_run_batch, take)
        except Exception as exc:  # the chain broke off: what it took cannot be known to be stored
            for batch in taken:
                for write in batch:
                    write.result, write.error = None, exc
        finally:
            for chained in done:
                if chained.error is not None:  # the transaction failed as a whole: nothing of it was stored
                    for write in chained.item:
                        write.result, write.error = None, chained.error
            for batch in taken:
                for write in batch:
                    write.done.set()
            self._committing = False
            turn, self._turn = self._turn, anyio.Event()
            turn.set()


def _run_batch(conn: Conn, batch: list[_Write]) -> None:
    """(In the write transaction.) Each write in a savepoint, so a failed one leaves no trace."""
    for write in batch:
        mark = len(conn.changes)
        conn.execute("SAVEPOINT group_write")
        try:
            write.result = write.fn(conn, *write.args)
        except Exception as exc:
            conn.execute("ROLLBACK TO group_write")
            del conn.changes[mark:]
            write.error = exc
        conn.execute("RELEASE group_write")
