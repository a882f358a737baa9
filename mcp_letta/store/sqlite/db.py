"""The SQLite file under the store: connections, pragmas, migrations, transactions, the write queue and
the change log.

Every call runs on a worker thread (never on the event loop). Writes take ``BEGIN IMMEDIATE`` so
read-modify-write is atomic across threads and processes; WAL + ``synchronous=FULL`` means an
acknowledged write survives a crash. All of a process's writers share one queue: what queues while one
transaction commits is written together in the next (group commit), each write in its own savepoint.
Each committed change is logged so other processes can follow (``PRAGMA data_version`` says when).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from mcp_letta.store import failures, migrations
from mcp_letta.store.sqlite.failures import explain

log = logging.getLogger("mcp_letta.store")

P = ParamSpec("P")
T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0
CHANGE_LOG_KEEP_S = 600.0


def new_id(kind: str) -> str:
    """A Letta-style id such as ``block-6f1c...`` (``<kind>-<uuid4>``)."""
    return f"{kind}-{uuid.uuid4()}"


def new_ordered_id(kind: str) -> str:
    """An id for rows made by the hundred per transaction (runs, messages): ``<kind>-<uuid>`` as Letta's,
    but a time-ordered UUID (version 7, RFC 9562) instead of a random one.

    The id is a unique key: random ids would put every new row on a random page of its index, so a
    transaction storing many rows would rewrite a page for each; ordered ones share the last page.
    """
    return f"{kind}-{_uuid7()}"


_last_uuid7 = 0
_uuid7_lock = threading.Lock()


def _uuid7() -> uuid.UUID:
    global _last_uuid7
    with _uuid7_lock:
        # 48 bits of milliseconds, then 12 bits counting up within a millisecond (so this process's ids
        # stay ordered), then the version, variant and 62 random bits.
        candidate = time.time_ns() // 1_000_000 << 12
        _last_uuid7 = value = max(candidate, _last_uuid7 + 1)
    ms, sub = value >> 12, value & 0xFFF
    random_bits = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    return uuid.UUID(int=ms << 80 | 0x7 << 76 | sub << 64 | 0b10 << 62 | random_bits)


def now_iso() -> str:
    """The current UTC time as sortable ISO-8601 text (microseconds)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Conn(sqlite3.Connection):
    """A connection that remembers which process it belongs to and what the open transaction changed."""

    origin: str
    changes: list[tuple[str, str]]
    before_commit: dict[str, Callable[[Conn], None]]  # run once each, in order, just before COMMIT
    _logged: set[tuple[str, str]]  # ``changes`` as a set (kept in step by log_change)

    # Row locks, for an engine whose write transactions run side by side (PostgreSQL's ``PgConn``). Here
    # ``BEGIN IMMEDIATE`` lets one write transaction run at a time, so there is nothing to lock.
    for_update = ""  # appended to a SELECT of rows the transaction goes on to change
    skip_locked = ""  # the same, passing over rows another transaction has locked (work split between writers)

    def lock_claims(self, agent_ids: list[str]) -> set[str]:
        """The agents whose runs this transaction may claim: all of them (no other writer runs meanwhile)."""
        return set(agent_ids)

    def lock_wait_graph(self) -> None:
        """Hold the wait-for graph until commit: it already is held (no other writer runs meanwhile)."""

    def log_change(self, kind: str, ref: str) -> None:
        """Record that ``kind``/``ref`` changed in this transaction (local listeners + change log).

        Once per transaction is enough: followers read the log after the commit (a run created and
        claimed in one transaction is one change, not two).
        """
        key = (kind, ref)
        if len(self._logged) != len(self.changes):  # the list was reset, or cut back by a rolled-back savepoint
            self._logged = set(self.changes)
        if key in self._logged:
            return
        self.changes.append(key)
        self._logged.add(key)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: an exception inside undoes what it wrote and the changes it logged, then
        propagates; otherwise its work stays in the enclosing transaction."""
        mark = len(self.changes)
        self.execute("SAVEPOINT nested")
        try:
            yield
        except BaseException:
            if self.in_transaction:  # some errors (a full disk) end the whole transaction, savepoint and all
                self.execute("ROLLBACK TO nested")
                self.execute("RELEASE nested")
            del self.changes[mark:]
            raise
        self.execute("RELEASE nested")

    def write_change_log(self) -> None:
        """(Just before COMMIT.) The transaction's changes into the ``changes`` table, in one statement: what
        a rolled-back savepoint logged is already gone from ``changes``, so it never reaches the table."""
        if self.changes:
            at = time.time()
            self.executemany(
                "INSERT INTO changes(origin, kind, ref, at) VALUES (?, ?, ?, ?)",
                [(self.origin, kind, ref, at) for kind, ref in self.changes],
            )


ChangeListener = Callable[[list[tuple[str, str]], bool], None]
MAX_BATCH = 256  # writes per transaction: bounds how long one commit holds SQLite's write lock
MAX_CHAIN = 8  # transactions back to back before the waiting writers hear back


class _Write:
    """One queued write: ``fn(conn, *args)``, and its outcome once its transaction has committed (or failed)."""

    __slots__ = ("args", "done", "error", "fn", "result", "taken")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.taken = False  # in a batch being committed: it will run, whatever happens to its caller
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Database:
    """A pool of connections to one SQLite file, with async read and write transactions run in threads."""

    def __init__(self, path: Path | str, *, pool_size: int = 8) -> None:
        self.path = Path(path)
        self.feed_trouble: str | None = None  # (reading the file's change log does not lose a connection)
        self.origin = uuid.uuid4().hex
        self._idle: list[Conn] = []
        self._all: list[Conn] = []
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(pool_size)
        self._listeners: list[ChangeListener] = []
        self._watch_conn: Conn | None = None
        self._closed = True  # until ``open``
        self._opened_once = False
        # The write queue. In-process writers wait here rather than inside SQLite, whose busy handler
        # sleep-polls the lock; and one fsync serves every write that queued during the previous one.
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()  # the queue is also taken from on the database's worker thread
        self._committing = False
        self._turn = anyio.Event()  # set when a chain of batches ends, then replaced

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the file and its folder if needed, switch to WAL and apply pending migrations. A closed
        database may be opened again."""
        with self._lock:
            self._closed, self._opened_once = False, True
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                check_schema(conn, str(self.path))  # before anything is written: WAL mode changes the header
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    log.warning("SQLite refused WAL mode for %s (got %s)", self.path, mode)
                migrate(conn)
            finally:
                self._release(conn)
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise self.explained(exc) from None

    def not_open(self) -> RuntimeError:
        """The error of a transaction asked of a store not open (yet, or any more)."""
        if self._opened_once:
            return RuntimeError("the store is closed: its AgentHub was closed (open it again: await hub.open())")
        return RuntimeError(
            "the store is not open yet: open its AgentHub first (async with AgentHub(settings) as hub: ..., or "
            "await hub.open())"
        )

    def explained(self, exc: BaseException) -> BaseException:
        """The storage failure a SQLite or file error stands for (see ``failures``), else the error itself."""
        return explain(exc, self.path) or exc

    def close(self) -> None:
        """Close every connection. Safe to call twice."""
        with self._lock:
            self._closed = True
            conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            conn.close()
        if self._watch_conn is not None:
            self._watch_conn.close()
            self._watch_conn = None

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(changes, local)`` after each commit that logged changes: this process's own
        (``local``, on the event loop) and, while ``follow`` runs, other processes'."""
        self._listeners.append(listener)

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> Conn:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, factory=Conn
        )
        conn.row_factory = sqlite3.Row
        conn.origin = self.origin
        conn.changes = []
        conn._logged = set()
        conn.before_commit = {}
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._all.append(conn)
        return conn

    def _acquire(self) -> Conn:
        with self._lock:
            if self._closed:
                raise self.not_open()
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: Conn) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    # -- transactions ------------------------------------------------------------------------------
    def read_sync(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a read transaction (one consistent snapshot) on this thread."""
        conn = self._acquire()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn, *args, **kwargs)
            finally:
                conn.execute("COMMIT")
        finally:
            self._release(conn)

    def _write_txn(self, batch: list[_Write]) -> list[tuple[str, str]]:
        """One ``BEGIN IMMEDIATE`` transaction holding every write of ``batch``, each in a savepoint (a write
        that raises leaves no trace and keeps its error); the changes it logged."""
        conn = self._acquire()
        try:
            conn.changes, conn.before_commit = [], {}
            conn.execute("BEGIN IMMEDIATE")
            try:
                for write in batch:
                    try:
                        with conn.savepoint():
                            write.result = write.fn(conn, *write.args)
                    except Exception as exc:
                        write.error = exc
                        if not conn.in_transaction:  # SQLite rolled back the whole batch (a full disk, say)
                            raise
                while conn.before_commit:
                    hook = next(iter(conn.before_commit))
                    conn.before_commit.pop(hook)(conn)
                conn.write_change_log()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.changes, conn.before_commit = [], {}
                raise
            changes, conn.changes = conn.changes, []
            return changes
        finally:
            self._release(conn)

    def _notify(self, changes: list[tuple[str, str]], local: bool) -> None:
        if changes:
            for listener in self._listeners:
                listener(changes, local)

    async def read(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a read transaction on a worker thread."""
        try:
            return await anyio.to_thread.run_sync(lambda: self.read_sync(fn, *args, **kwargs), limiter=self._limiter)
        except sqlite3.Error as exc:
            raise self.explained(exc) from exc

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a write transaction (shared with the writes queued meanwhile, each in
        its own savepoint) and return its result, or raise its error. Returns once the write is durable;
        listeners hear of its changes first."""
        write = _Write(fn, args)
        with self._queue_lock:
            self._queue.append(write)
        try:
            while not write.taken:
                if self._committing:
                    await self._turn.wait()
                else:
                    await self._commit_batches()
            await write.done.wait()
        except anyio.get_cancelled_exc_class():
            with self._queue_lock:
                if not write.taken:
                    self._queue.remove(write)  # it never ran
                    raise
            with anyio.CancelScope(shield=True):  # it is being written: wait for it, then let the cancel through
                await write.done.wait()
            raise
        if write.error is not None:
            if isinstance(write.error, sqlite3.Error):
                raise self.explained(write.error) from write.error
            raise write.error
        return write.result  # type: ignore[no-any-return]

    def _take(self, taken: list[list[_Write]]) -> list[_Write] | None:
        """(On the database's thread.) The next batch, or None when nothing waits or the chain is long enough."""
        if len(taken) >= MAX_CHAIN:
            return None
        with self._queue_lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            for write in batch:
                write.taken = True
        if batch:
            taken.append(batch)
        return batch or None

    def _chain(self, taken: list[list[_Write]]) -> list[list[tuple[str, str]]]:
        """Batch after batch on this thread while writes keep coming (a busy event loop cannot leave the disk
        idle); the changes of each committed one. A transaction that fails as a whole fails its writes."""
        committed = []
        while (batch := self._take(taken)) is not None:
            try:
                committed.append(self._write_txn(batch))
            except Exception as exc:
                for write in batch:
                    write.result, write.error = None, exc
        return committed

    async def _commit_batches(self) -> None:
        self._committing = True
        taken: list[list[_Write]] = []
        try:
            with anyio.CancelScope(shield=True):  # a batch taken is written even if its leader is cancelled
                committed = await anyio.to_thread.run_sync(self._chain, taken, limiter=self._limiter)
            for changes in committed:
                self._notify(changes, True)
        except Exception as exc:  # the chain broke off: what it took cannot be known to be stored
            for batch in taken:
                for write in batch:
                    if not write.done.is_set() and write.error is None:
                        write.result, write.error = None, exc
        finally:
            for batch in taken:
                for write in batch:
                    write.done.set()
            self._committing = False
            turn, self._turn = self._turn, anyio.Event()
            turn.set()

    # -- following other processes -----------------------------------------------------------------
    async def follow(self, interval_s: float) -> None:
        """Until cancelled: every ``interval_s`` ask SQLite whether another connection committed (``PRAGMA
        data_version``, a cheap read), and if so tell the listeners what other processes changed."""
        last_id = await self.read(_last_change_id)
        version = await anyio.to_thread.run_sync(self._data_version, limiter=self._limiter)
        prune_every = max(1, int(300 / max(interval_s, 0.01)))
        polls = 0
        while True:
            await anyio.sleep(interval_s)
            polls += 1
            try:
                current = await anyio.to_thread.run_sync(self._data_version, limiter=self._limiter)
                if current != version:
                    version = current
                    last_id, foreign = await self.read(_foreign_changes, last_id, self.origin)
                    self._notify(foreign, False)
                if polls % prune_every == 0:
                    await self.write(_prune_changes)
            except Exception:  # a follower must survive a transient error (busy file, disk hiccup)
                log.exception("following other processes' changes failed; retrying")

    def _data_version(self) -> int:
        if self._watch_conn is None:
            self._watch_conn = self._connect()
            with self._lock:
                self._all.remove(self._watch_conn)
        return int(self._watch_conn.execute("PRAGMA data_version").fetchone()[0])


def _last_change_id(conn: Conn) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0])


def _foreign_changes(conn: Conn, after_id: int, origin: str) -> tuple[int, list[tuple[str, str]]]:
    """Changes committed by other processes after change-log id ``after_id``, and the newest id seen."""
    last = max(after_id, _last_change_id(conn))
    rows = conn.execute(
        "SELECT kind, ref FROM changes WHERE id > ? AND id <= ? AND origin != ? ORDER BY id", (after_id, last, origin)
    ).fetchall()
    return last, [(kind, ref) for kind, ref in rows]


def _prune_changes(conn: Conn) -> None:
    """Forget change-log rows old enough that every live follower has read them."""
    conn.execute("DELETE FROM changes WHERE at < ?", (time.time() - CHANGE_LOG_KEEP_S,))


# -- migrations ------------------------------------------------------------------------------------
def _migrations() -> list[tuple[int, str, str]]:
    return migrations.scripts("mcp_letta.store.sqlite")


def _statements(script: str) -> list[str]:
    """Split a SQL script into statements (triggers contain ';', so use SQLite's own completeness test)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in migration: {current[:80]!r}")
    return statements


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the numbered migrations newer than ``PRAGMA user_version`` in one transaction each."""
    applied = 0
    for number, name, script in _migrations():
        conn.execute("BEGIN IMMEDIATE")  # another process may be migrating the same file right now
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if number <= version:
                conn.execute("COMMIT")
                continue
            if number != version + 1:
                raise RuntimeError(f"migration {name} does not follow schema version {version}")
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
            applied += 1
            log.info("applied migration %s", name)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return applied


def check_schema(conn: sqlite3.Connection, where: str) -> None:
    """Refuse a database this mcp-letta must not write: one from a newer mcp-letta (its schema is past every
    migration shipped here) or another program's SQLite database (tables, but none of our migrations)."""
    found, known = schema_version(conn), latest_schema_version()
    if found > known:
        raise failures.newer_schema(where, found, known)
    if found == 0:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name LIMIT 3"
        )]  # fmt: skip
        if tables:
            raise failures.not_ours(where, f"a SQLite database of another program, with tables {', '.join(tables)}")


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of the newest migration applied to this database."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def latest_schema_version() -> int:
    """The newest migration this mcp-letta ships."""
    return max((number for number, _, _ in _migrations()), default=0)


def file_schema_version(path: Path) -> int:
    """The schema version of an existing database file, read without writing (nothing is migrated); raises
    ``StorageUnavailable`` when the file is not one this mcp-letta may open (not SQLite, another program's,
    from a newer mcp-letta), worded as the server words it at start-up."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            check_schema(conn, str(path))
            return schema_version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise (explain(exc, path) or failures.damaged(str(path), str(exc))) from None


def loads_json(text: str | None, default: Any) -> Any:
    """Parse a JSON column, tolerating NULL."""
    return default if text is None else json.loads(text)
