"""Group commit for the runtime's writes: whatever many agents' runs want to write while one transaction
commits is written together in the next one, each in its own savepoint.

A run writes a few times (start, each step, the reply), and each commit is an fsync (WAL with
``synchronous=FULL``). One transaction per write made 100 concurrent agents queue behind 200 fsyncs,
so the disk, not the agents, set the pace. Here one batch is committed at a time, in arrival order;
a write that raises rolls back only its own savepoint and its caller gets the exception, while the
others commit. Every caller resumes only after its batch is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from mcp_letta.store.db import Conn, Database

T = TypeVar("T")
MAX_BATCH = 256  # writes per transaction: bounds how long one commit holds SQLite's write lock


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
        self._committing = False
        self._turn = anyio.Event()  # set when a batch ends, then replaced

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a write transaction (perhaps shared) and return its result or raise."""
        write = _Write(fn, args)
        self._queue.append(write)
        try:
            while not write.taken:
                if self._committing:
                    await self._turn.wait()
                else:
                    await self._commit_next_batch()
            await write.done.wait()
        except anyio.get_cancelled_exc_class():
            if not write.taken:
                self._queue.remove(write)  # it never ran
                raise
            with anyio.CancelScope(shield=True):  # it is being written: the caller learns of it as before
                await write.done.wait()
            raise
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[no-any-return]

    async def _commit_next_batch(self) -> None:
        self._committing = True
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        for write in batch:
            write.taken = True
        try:
            with anyio.CancelScope(shield=True):  # a batch taken is written even if its leader is cancelled
                await self.db.write(_run_batch, batch)
        except Exception as exc:  # the transaction failed as a whole (e.g. the commit): nothing was stored
            for write in batch:
                write.result, write.error = None, exc
        finally:
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
