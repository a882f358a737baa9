"""The SQLite database under the store: connections, pragmas, migrations, transactions, change log.

Every call runs on a worker thread (never on the event loop). Writes take ``BEGIN IMMEDIATE`` so
read-modify-write is atomic across threads and processes; WAL + ``synchronous=FULL`` means an
acknowledged write survives a crash. Each committed change is logged so other processes can follow.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import anyio
import anyio.to_thread

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

    The id is a unique key: random ids put every new row on a random page of its index, so a broadcast's
    transaction rewrote a page per run and per message (most of its commit); ordered ones share the last.
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

    def write_change_log(self) -> None:
        """(Just before COMMIT.) The transaction's changes into the ``changes`` table, in one statement: what
        a rolled-back savepoint logged is already gone from ``changes``, so it never reaches the table."""
        if self.changes:
            at = time.time()
            self.executemany(
                "INSERT INTO changes(origin, kind, ref, at) VALUES (?, ?, ?, ?)",
                [(self.origin, kind, ref, at) for kind, ref in self.changes],
            )


ChangeListener = Callable[[list[tuple[str, str]]], None]
B = TypeVar("B")


@dataclass(frozen=True)
class Chained(Generic[B, T]):
    """One transaction of ``Database.write_chain``: its item, and its result or the error that undid it."""

    item: B
    result: T | None
    error: Exception | None
    changes: list[tuple[str, str]]


class Database:
    """A pool of connections to one SQLite file, with async read/write transactions run in threads."""

    def __init__(self, path: Path | str, *, pool_size: int = 8) -> None:
        self.path = Path(path)
        self.origin = uuid.uuid4().hex
        self._pool_size = pool_size
        self._idle: list[Conn] = []
        self._all: list[Conn] = []
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(pool_size)
        # In-process writers queue here instead of inside SQLite, whose busy handler sleep-polls the lock
        # (1, 2, 5, 10 ms ...): under load that polling, not the work, would set the pace.
        self._write_gate = anyio.Lock(fast_acquire=True)
        self._listeners: list[ChangeListener] = []
        self._watch_conn: Conn | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the file and its folder if needed, switch to WAL and apply pending migrations."""
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("SQLite refused WAL mode for %s (got %s)", self.path, mode)
            migrate(conn)
        finally:
            self._release(conn)

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
        """Call ``listener(changes)`` after each local commit that logged changes (on the caller's thread)."""
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
                raise RuntimeError("the store is closed")
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

    def _write_txn(
        self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> tuple[T, list[tuple[str, str]]]:
        conn = self._acquire()
        try:
            conn.changes, conn.before_commit = [], {}
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args, **kwargs)
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
            return result, changes
        finally:
            self._release(conn)

    def _notify(self, changes: list[tuple[str, str]]) -> None:
        if changes:
            for listener in self._listeners:
                listener(changes)

    def write_sync(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a ``BEGIN IMMEDIATE`` transaction on this thread; roll back on error."""
        result, changes = self._write_txn(fn, *args, **kwargs)
        self._notify(changes)
        return result

    async def read(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a read transaction on a worker thread."""
        return await anyio.to_thread.run_sync(lambda: self.read_sync(fn, *args, **kwargs), limiter=self._limiter)

    async def write(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a write transaction on a worker thread; listeners run back on the loop."""
        async with self._write_gate:
            result, changes = await anyio.to_thread.run_sync(
                lambda: self._write_txn(fn, *args, **kwargs), limiter=self._limiter
            )
        self._notify(changes)
        return result

    async def write_chain(self, fn: Callable[[Conn, B], T], take: Callable[[], B | None]) -> list[Chained[B, T]]:
        """Write transactions back to back on one worker thread: ``fn(conn, item)`` for each ``item`` that
        ``take()`` (called on that thread) hands out, until it returns None. Each item's outcome is its
        result or the exception that rolled its transaction back; listeners run back on the loop.

        Between two transactions the event loop is not needed, so a busy loop cannot leave the disk idle.
        """
        async with self._write_gate:
            done = await anyio.to_thread.run_sync(self._chain, fn, take, limiter=self._limiter)
        for item in done:
            self._notify(item.changes)
        return done

    def _chain(self, fn: Callable[[Conn, B], T], take: Callable[[], B | None]) -> list[Chained[B, T]]:
        done: list[Chained[B, T]] = []
        while (item := take()) is not None:
            try:
                result, changes = self._write_txn(fn, item)
            except Exception as exc:
                done.append(Chained(item, None, exc, []))
            else:
                done.append(Chained(item, result, None, changes))
        return done

    # -- following other processes -----------------------------------------------------------------
    def data_version_sync(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes whenever another connection commits."""
        if self._watch_conn is None:
            self._watch_conn = self._connect()
            with self._lock:
                self._all.remove(self._watch_conn)
        return int(self._watch_conn.execute("PRAGMA data_version").fetchone()[0])

    def foreign_changes_sync(self, after_id: int) -> tuple[int, list[tuple[str, str]]]:
        """Changes committed by OTHER processes after change-log id ``after_id``, and the newest id seen."""

        def query(conn: Conn) -> tuple[int, list[tuple[str, str]]]:
            # This process's own commits move data_version too: its rows are skipped in SQL, not in Python.
            last = max(after_id, conn.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0])
            rows = conn.execute(
                "SELECT kind, ref FROM changes WHERE id > ? AND id <= ? AND origin != ? ORDER BY id",
                (after_id, last, self.origin),
            ).fetchall()
            return last, [(kind, ref) for kind, ref in rows]

        return self.read_sync(query)

    def last_change_id_sync(self) -> int:
        """The newest change-log id (where a new follower starts)."""
        return self.read_sync(lambda c: int(c.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0]))

    def prune_changes_sync(self) -> None:
        """Forget change-log rows old enough that every live follower has read them."""
        self.write_sync(lambda c: c.execute("DELETE FROM changes WHERE at < ?", (time.time() - CHANGE_LOG_KEEP_S,)))

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run a blocking ``fn()`` that uses this database on a worker thread."""
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)


# -- migrations ------------------------------------------------------------------------------------
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("mcp_letta.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


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


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of the newest migration applied to this database."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def loads_json(text: str | None, default: Any) -> Any:
    """Parse a JSON column, tolerating NULL."""
    return default if text is None else json.loads(text)
