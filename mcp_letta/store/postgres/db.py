"""The PostgreSQL server under the store: a bounded connection pool, transactions, migrations and the change
feed (LISTEN/NOTIFY over the change log).

The engine reuses most of the SQLite engine's statements: those are standard SQL apart from a few
spellings that ``translate`` rewrites once per statement text (``?`` placeholders, ``INSERT OR IGNORE``,
an empty ``IN ()``, SQLite's case-blind ``LIKE``). What differs in substance is here and in ``memory``:
the schema, full-text search, locking and the change feed.

Write transactions run side by side (``READ COMMITTED``, each write its own transaction on a pooled
connection, in any replica); what must not interleave is locked where it is read, and each lock is held
until commit:

- a block's row (``FOR NO KEY UPDATE``) before an edit, compare-and-set or settings change: edits of one
  block take turns, each on the value the previous one committed (``blocks.locked``);
- an agent's row (``FOR NO KEY UPDATE SKIP LOCKED``) before claiming its next run: claims of one agent
  take turns, so it runs one message at a time, oldest first, across replicas; an agent another
  transaction is claiming right now is passed over as "blocked" (``PgConn.lock_claims``);
- the running runs recovery releases and the queued runs it adopts (``FOR NO KEY UPDATE SKIP LOCKED``);
  a run's row before cancelling it; unread host replies before marking them read (``SKIP LOCKED``);
- the wait-for graph (an advisory lock) before checking a new wait, until the edge is stored.

Nothing else is serialised, the change feed included. A transaction writes its change rows (each with its
transaction id) with its COMMIT, then NOTIFYs in a transaction of its own: PostgreSQL commits notifying
transactions one at a time, and that one writes nothing to flush. A follower reads the change rows whose
transaction may still have been running at its previous read (``_foreign_changes``), since ids can commit
out of order.

Unique and foreign-key violations from writes racing on one name or row become ``Conflict`` and
``NotFound``. Reads take a ``REPEATABLE READ READ ONLY`` snapshot and never wait on writers.

With the server on another machine, a round trip is what a statement costs most, so only a statement
whose answer is needed pays one: BEGIN, savepoints and writes that return nothing wait and go
with the next statement that needs an answer, or with the COMMIT (``PgConn._send``), and a connection the
pool lends is checked by looking at its socket (``_closed_while_idle``), not by a query.

When the server goes away (a lost connection, one it closed while idle), calls fail at once with the
driver's reason, each first trying a connection of its own (``_reconnect``); the first that gets through
replaces the pool, whose own reconnection attempts back off for ever longer.
"""

from __future__ import annotations

import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from mcp_letta.errors import Conflict, Invalid, LettaError, NotFound, StorageUnavailable
from mcp_letta.store import failures, migrations
from mcp_letta.store.sqlite.db import CHANGE_LOG_KEEP_S, _Write
from mcp_letta.store.sqlite.db import Database as _SQLiteDatabase

log = logging.getLogger("mcp_letta.store")

T = TypeVar("T")

INSTALL_HINT = "pip install 'mcp-letta[postgres]'"
CHANNEL = "mcp_letta_changes"  # NOTIFY channel: payload is the committing process's origin
MIGRATION_LOCK = 0x6D63706D  # held while migrating, so replicas starting together migrate once
WAIT_GRAPH_LOCK = 0x6D637077  # held from a wait's cycle check until its edge commits ('mcpw')
DEFAULT_POOL_SIZE = 10
LEND_TIMEOUT_S = 30.0  # how long a call waits for a pooled connection (all busy) before it fails
IDLE_IN_TRANSACTION_S = 30  # a lease: no transaction of ours waits on this process between statements so long
PROBE_TIMEOUT_S = 5  # how long a connection of its own may take, for a call that checks the server is back
UPGRADE = "pip install -U 'mcp-letta[postgres]' on every replica"  # what installs a newer mcp-letta here
OLDEST_SERVER = 13  # the oldest PostgreSQL major version mcp-letta runs on
NOTIFY_CHECK_S = 5.0  # at start, how long a notification may take to reach a listener through the URL
FOLLOWER_CONNECTIONS = 2  # beside the pool, ``follow``'s: one LISTENs, one reads the change log
# A follower reads the change log at most this often: in a busy cluster the notifications between two reads
# are told by one, so what following costs each replica (and the server) stops growing with the number of
# replicas x their messages. A quiet cluster's change is read at once.
FEED_READ_GAP_S = 0.02
# libpq's TCP settings for every connection whose URL does not choose its own (see ``conninfo``): a network
# that drops packets without a word (a NAT or firewall that forgot the connection, a cable pulled between
# machines) would otherwise leave a statement waiting for TCP's own retries, about 15 minutes, and a
# connection attempt about 2. Idle connections are probed, which also keeps them alive through NATs and
# firewalls that drop quiet ones.
TCP_LIVENESS: dict[str, int] = {
    "connect_timeout": 10,  # seconds a connection attempt may take
    "keepalives": 1,
    "keepalives_idle": 10,  # an idle connection is probed after 10 s of quiet, then every 5 s
    "keepalives_interval": 5,
    "tcp_user_timeout": 30_000,  # ms: given up once sent data or probes go unanswered this long (a lease)
}


class DatabaseUnavailable(LettaError):
    """The PostgreSQL server cannot be reached or the database cannot be prepared (the message says why)."""


def is_postgres_url(target: object) -> bool:
    """Whether a database target is a PostgreSQL URL rather than a SQLite file path."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def require_driver() -> Any:
    """The ``psycopg`` module; ``Invalid`` with the install command when the extra is missing."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise Invalid(
            f"MCP_LETTA_DB is a postgresql:// URL but the PostgreSQL driver is not installed: run {INSTALL_HINT}"
        ) from None
    return psycopg


def _reason(exc: BaseException) -> str:
    """A driver error's message on one line."""
    return " ".join(str(exc).split()).rstrip(".?") or type(exc).__name__


def connection_hint(reason: str) -> str:
    """What to do when a connection to the server failed for ``reason`` (the driver's words)."""
    if "too many clients" in reason or "connection slots are reserved" in reason:
        return ("every connection the server allows is in use: raise its max_connections, or lower "
                "MCP_LETTA_PG_POOL_SIZE on the replicas (mcp-letta doctor counts them)")  # fmt: skip
    return "start PostgreSQL, or fix the user, password, host, port or database in the URL (MCP_LETTA_DB)"


def _cause(exc: BaseException) -> str:
    """What went wrong, from inside a task group's exception group: the first error's message on one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return _reason(exc)


def conninfo(url: str) -> str:
    """The connection string for ``url``: the URL's own settings, plus ``TCP_LIVENESS``'s for those it leaves
    out (``?tcp_user_timeout=0`` in the URL, say, turns that one off)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    given = conninfo_to_dict(url)
    return make_conninfo(url, **{key: value for key, value in TCP_LIVENESS.items() if key not in given})


def redact(url: str) -> str:
    """The URL without its password (after the user name, or a ``password`` parameter), for messages and logs."""
    url = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


# -- SQL shared with the SQLite engine -------------------------------------------------------------------
_RETURNING_KEY = {"passages": "pk", "messages": "seq"}  # tables whose callers read ``lastrowid``
_INSERT_INTO = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)


@lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, bool]:
    """A statement of the shared modules in PostgreSQL's spelling, and whether it now returns the new row's
    key (so ``lastrowid`` can be read)."""
    parts = sql.split("'")
    for i in range(0, len(parts), 2):  # outside string literals
        part = parts[i].replace("%", "%%").replace("?", "%s")
        part = re.sub(r"\bIN \(\)", "IN (NULL)", part)
        part = re.sub(r"\bLIKE\b", "ILIKE", part)  # SQLite's LIKE ignores ASCII case
        parts[i] = part
    for i in range(1, len(parts), 2):
        parts[i] = parts[i].replace("%", "%%")
    out = "'".join(parts)
    if re.match(r"^\s*INSERT OR IGNORE INTO", out, re.IGNORECASE):
        out = re.sub(r"INSERT OR IGNORE INTO", "INSERT INTO", out, count=1, flags=re.IGNORECASE)
        out += " ON CONFLICT DO NOTHING"
    returning = False
    match = _INSERT_INTO.match(out)
    if match and match.group(1) in _RETURNING_KEY and "RETURNING" not in out.upper():
        out += f" RETURNING {_RETURNING_KEY[match.group(1)]}"
        returning = True
    return out, returning


def _configure(raw: Any) -> None:
    """A new pooled connection's session: should this process stall inside a transaction (a frozen VM, a
    stopped process), the server ends the session after a lease, and the rows it locked are free again."""
    raw.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S}s'")


def _prepared_out_of_step(exc: BaseException) -> bool:
    """Whether a statement failed because the session's prepared statements are not what psycopg thinks: one
    it made is missing, or one it makes exists already (a pooler in transaction mode lends other sessions;
    once, under heavy load, psycopg itself lost track after a pipeline that a racing write aborted)."""
    state = getattr(exc, "sqlstate", None)
    detail = getattr(getattr(exc, "diag", None), "message_primary", None) or ""
    return state in ("42P05", "26000") and '"_pg3_' in detail


def _replace_if_out_of_step(raw: Any, exc: BaseException) -> None:
    """Close the connection after ``_prepared_out_of_step``: it would fail that statement every time, and the
    pool replaces it."""
    if _prepared_out_of_step(exc):
        raw.close()


def server_condition(where: str, exc: BaseException) -> StorageUnavailable | None:
    """The error for a statement the server refused for a condition of its own, not of the statement (a full
    disk, a standby that takes no writes, a lock or statement timeout set on the server, ...), by its
    SQLSTATE; None for any other."""
    state = getattr(exc, "sqlstate", None) or ""
    detail = getattr(getattr(exc, "diag", None), "message_primary", None) or _reason(exc)  # (without its CONTEXT)
    database = f"the database at {where}"
    if state == "53100":
        return failures.disk_full(database, detail)
    if state == "25006":
        return failures.read_only(
            f"{database} takes no writes ({detail})",
            f"point {failures.SETTING} at the primary server (with several hosts in the URL, add "
            "target_session_attrs=read-write), or turn default_transaction_read_only off for its database and user",
        )
    if state.startswith("58"):
        return failures.io_error(database, detail)
    if state in ("XX001", "XX002"):
        return failures.damaged(database, detail)
    if _prepared_out_of_step(exc):
        return failures.pooled(database, f"the server sessions it lends do not keep prepared statements ({detail})")
    if state.startswith("53") or state in ("55P03", "57014"):  # out of memory or connections; lock or statement
        return failures.gave_up(database, detail)  # timeouts (set on the server), a cancel from an administrator
    return None


def _closed_while_idle(raw: Any) -> bool:
    """Whether the server closed a pooled connection while it sat idle: a round trip only if the server sent
    something meanwhile (closing says so; a healthy idle connection hears nothing)."""
    poller = select.poll()
    poller.register(raw.fileno(), select.POLLIN)
    if not poller.poll(0):
        return False
    from psycopg_pool import ConnectionPool

    try:
        ConnectionPool.check_connection(raw)
    except Exception:
        return True
    return False


@lru_cache(maxsize=4096)
def _writes_only(text: str) -> bool:
    """Whether a statement (PostgreSQL spelling) writes and returns nothing: its answer is only its row count."""
    return text.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE") and "RETURNING" not in text.upper()


class Row(tuple):  # type: ignore[type-arg]
    """A result row readable by position and by column name, as ``sqlite3.Row`` is."""

    _index: dict[str, int] = {}  # noqa: RUF012  (set per result by ``_row_class``)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._index)


@lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"_index": {name: i for i, name in enumerate(names)}})


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    # The names straight from the result: ``cursor.description`` builds an object per column, each time.
    result = cursor.pgresult
    if result is None or not result.nfields:
        return tuple
    return _row_class(tuple(result.fname(i).decode() for i in range(result.nfields)))


class Result:
    """What ``PgConn.execute`` returns: the rows, ``rowcount`` and (for the inserts that need it) ``lastrowid``.
    A write that returns nothing is sent with the next statement that needs an answer (see ``PgConn``):
    asking for its ``rowcount`` sends it now."""

    __slots__ = ("_conn", "_cursor", "lastrowid")

    def __init__(self, conn: PgConn, cursor: Any, returning: bool) -> None:
        self._conn = conn
        self._cursor = cursor
        self.lastrowid = cursor.fetchone()[0] if returning else None

    @property
    def rowcount(self) -> int:
        """How many rows the statement wrote (or returned)."""
        self._conn.flush()
        return self._cursor.rowcount  # type: ignore[no-any-return]

    def fetchone(self) -> Any:
        """The next row, or None."""
        self._conn.flush()
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        self._conn.flush()
        return self._cursor.fetchall()  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


def _raced(exc: Exception) -> LettaError | None:
    """The error a write racing another one on the same name or row gets, else None: a unique violation is
    a ``Conflict``, a foreign-key violation (what it refers to was deleted) a ``NotFound``, a deadlock
    (PostgreSQL broke a cycle of lock waits by failing this write) a ``Conflict`` to retry."""
    state = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    detail = (getattr(diag, "message_detail", None) or str(exc)).strip().rstrip(".")
    if state == "23505":
        found = re.match(r"Key \((.+?)\)=\((.+)\) already exists", detail)
        if found and found.group(1) == "name" and getattr(diag, "table_name", None) == "agents":
            return Conflict(f"an agent named {found.group(2)!r} already exists (created at the same moment by "
                            "another request): pick another name")  # fmt: skip
        what = f"{found.group(1)} = {found.group(2)}" if found else detail
        return Conflict(
            f"{what} already exists in {getattr(diag, 'table_name', None) or 'the database'}: another request "
            "wrote it at the same moment; read it again and retry"
        )
    if state == "23503":
        return NotFound(f"what this write refers to was deleted at the same moment ({detail}): read it again")
    if state == "40P01":
        return Conflict("this write waited on others that waited on it and was given up: retry it")
    return None


class PgConn:
    """One pooled connection inside a transaction, with the interface the shared modules use on a SQLite
    ``Conn``: ``execute``, ``executemany``, ``savepoint``, ``log_change``, ``before_commit`` hooks and,
    in a write transaction, row locks (``for_update``, ``skip_locked``, ``lock_claims``,
    ``lock_wait_graph``; see the module docstring)."""

    def __init__(self, raw: Any, origin: str, *, begin: str, writing: bool = False) -> None:
        self.raw = raw
        self.origin = origin
        # Statements whose answer nothing waits for go with the next statement that needs one, or with the
        # COMMIT, in one round trip (see ``_send``): the transaction's BEGIN, savepoints, and writes that
        # return nothing. Each is (cursor or None, text, parameters, executemany?).
        self._pending: list[tuple[Any, str, Any, bool]] = [(None, begin, None, False)]
        self._unanswered = 0  # how many of them are statements of the caller's (not BEGIN or savepoints)
        self._began = False  # whether BEGIN went to the server
        self.changes: list[tuple[str, str]] = []
        self._logged: set[tuple[str, str]] = set()
        self.before_commit: dict[str, Callable[[PgConn], None]] = {}
        self._savepoints = 0
        # A read-only snapshot cannot lock rows (nor needs to).
        self.for_update = " FOR NO KEY UPDATE" if writing else ""
        self.skip_locked = " FOR NO KEY UPDATE SKIP LOCKED" if writing else ""
        self.writing = writing

    def _send(self, text: str, params: Sequence[Any] | None = None, *, many: bool = False, answer: bool = True) -> Any:
        """Run a statement (in PostgreSQL's spelling) and return its cursor. A statement whose answer is not
        needed now (``answer=False``) waits to go with the next one; one that is goes at once, with the
        statements waiting before it, in one pipeline (one round trip for all). Errors of writes racing
        others on one name or row become ours (``_raced``), raised by the round trip that sent the write."""
        cursor = self.raw.cursor()
        if answer:
            self._round_trip((cursor, text, params, many))
        else:
            self._pending.append((cursor, text, params, many))
            self._unanswered += 1
        return cursor

    def flush(self) -> None:
        """Send the writes still waiting (and what waits before them) now, raising their errors here."""
        if self._unanswered:
            self._round_trip(None)

    def _round_trip(self, statement: tuple[Any, str, Any, bool] | None) -> None:
        pending, self._pending, self._unanswered = self._pending, [], 0
        if statement is not None:
            pending.append(statement)
        self._began = True  # BEGIN is the first statement ever pending
        try:
            if len(pending) == 1:
                self._run(*pending[0])
            else:
                with self.raw.pipeline():
                    for waiting in pending:
                        self._run(*waiting)
        except Exception as exc:
            mapped = _raced(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def _run(self, cursor: Any, text: str, params: Sequence[Any] | None, many: bool) -> None:
        if cursor is None:
            self.raw.execute(text)
        elif many:
            cursor.executemany(text, params)
        else:
            cursor.execute(text, None if params is None else list(params), prepare=None)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Result:
        """Run one statement (SQLite spelling accepted, see ``translate``). A write that returns nothing
        goes with the next statement that needs an answer (its errors are raised there)."""
        text, returning = translate(sql)
        return Result(self, self._send(text, params, answer=returning or not _writes_only(text)), returning)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row (a write: sent with the next statement that needs an
        answer)."""
        rows = list(rows)
        if rows:
            text = translate(sql)[0]
            self._send(text, rows, many=True, answer=not _writes_only(text))

    def commit(self) -> None:
        """Write the change log, COMMIT and, if anything changed, tell the other processes (``NOTIFY``), in one
        round trip with the statements still waiting; nothing if nothing was written. The NOTIFY is a
        transaction of its own, after the COMMIT: in the writing transaction it would make every writer's
        commit, WAL flush included, wait for the one before it (PostgreSQL commits notifying transactions one
        at a time)."""
        if not self._began and not self._unanswered:
            return
        committed = None
        pending, self._pending, self._unanswered = self._pending, [], 0
        self._began = True
        try:
            with self.raw.pipeline():
                for waiting in pending:
                    self._run(*waiting)
                self.write_change_log()
                committed = self.raw.execute("COMMIT")
                if self.changes:
                    self.raw.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.origin))
        except Exception as exc:
            if committed is None or committed.statusmessage != "COMMIT":
                mapped = _raced(exc)
                if mapped is None:
                    raise
                raise mapped from exc
            # Committed all the same: the other processes find it at their next read of the change log.
            log.warning("committed, but could not notify the other processes (%s)", exc)

    def rollback(self) -> None:
        """Undo the transaction (if it began); the writes still waiting are never sent."""
        self._pending, self._unanswered = [], 0
        if self._began:
            self.raw.execute("ROLLBACK")

    def lock_claims(self, agent_ids: list[str]) -> set[str]:
        """Lock the rows of these agents that no other transaction holds (``SKIP LOCKED``): the agents whose
        next run this transaction may claim. One it passes over is being claimed (or renamed, or deleted)
        by another writer right now; an agent that no longer exists is the claim's to find out about."""
        if not self.writing or not agent_ids:
            return set(agent_ids)
        wanted = sorted(set(agent_ids))
        got = {r[0] for r in self._send(_LOCK_AGENTS, (wanted,))}
        missing = [agent_id for agent_id in wanted if agent_id not in got]
        if missing:
            exist = {r[0] for r in self._send("SELECT id FROM agents WHERE id = ANY(%s)", (missing,))}
            got |= set(missing) - exist
        return got

    def lock_wait_graph(self) -> None:
        """Hold the wait-for graph until commit: checks of new waits take turns across replicas."""
        if self.writing:
            self._send("SELECT pg_advisory_xact_lock(%s)", (WAIT_GRAPH_LOCK,), answer=False)

    def log_change(self, kind: str, ref: str) -> None:
        """Record that ``kind``/``ref`` changed in this transaction (once per transaction)."""
        key = (kind, ref)
        if len(self._logged) != len(self.changes):
            self._logged = set(self.changes)
        if key in self._logged:
            return
        self.changes.append(key)
        self._logged.add(key)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: an exception inside undoes its writes and logged changes, then propagates.
        The writes waiting before it are sent as it opens, and those inside before it closes, so an error of
        a write is raised on the same side of the savepoint as the write."""
        self.flush()
        mark = len(self.changes)
        self._savepoints += 1
        opened = f"SAVEPOINT nested_{self._savepoints}"
        self._pending.append((None, opened, None, False))  # sent with the first statement inside (none: never)
        try:
            yield
            self.flush()
        except BaseException:
            if not self._unsend(opened):  # else nothing inside reached the server: nothing to undo there
                # What still waits was queued inside: never sent. The undo goes with the next statement.
                self._pending = [(None, f"ROLLBACK TO {opened}", None, False), (None, f"RELEASE {opened}", None, False)]
                self._unanswered = 0
            del self.changes[mark:]
            raise
        if not self._unsend(opened):
            self._pending.append((None, f"RELEASE {opened}", None, False))

    def _unsend(self, opened: str) -> bool:
        """Drop a savepoint still waiting to be sent, and what waits after it; whether it was waiting."""
        texts = [text for _, text, _, _ in self._pending]
        if opened not in texts:
            return False
        del self._pending[texts.index(opened) :]
        self._unanswered = sum(1 for cursor, *_ in self._pending if cursor is not None)
        return True

    def write_change_log(self) -> None:
        """(Just before COMMIT.) The transaction's changes into ``changes``, marked with its transaction id."""
        if self.changes:
            kinds, refs = zip(*self.changes, strict=True)
            self.raw.execute(_LOG_CHANGES, (self.origin, list(kinds), list(refs)))


_LOCK_AGENTS = "SELECT id FROM agents WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED"

# The change rows, each with the writing transaction's id (the column's default, ``pg_current_xact_id()``) and
# the server's time (replicas' clocks may disagree; it decides when the row is pruned).
_LOG_CHANGES = (
    "INSERT INTO changes(origin, kind, ref, at) SELECT %s, k, r, extract(epoch FROM clock_timestamp()) "
    "FROM unnest(%s::text[], %s::text[]) AS t(k, r)"
)


class PgDatabase(_SQLiteDatabase):
    """A bounded pool of connections to one PostgreSQL database, with async read and write transactions run
    in threads: the SQLite engine's reads; writes each in their own transaction, side by side (no queue:
    PostgreSQL's row locks, not one writer at a time, keep them apart)."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        super().__init__(":memory:", pool_size=pool_size)
        self.url = url  # as given: for messages (``redact``)
        self.conninfo = url  # what connections are opened with: ``open`` adds ``TCP_LIVENESS``
        self.pool_size = pool_size
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._unreachable: StorageUnavailable | None = None  # set when a call found the server out of reach
        self.feed_trouble: str | None = None  # why ``follow`` cannot hear the other replicas now, if it cannot

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the pool (failing clearly when the server cannot be reached) and apply pending migrations."""
        psycopg = require_driver()

        with self._lock:
            self._closed, self._opened_once = False, True
        try:  # one plain connection first: its error says what is wrong (the pool's only that it timed out)
            self.conninfo = conninfo(self.url)
            with psycopg.connect(self.conninfo) as probe:
                version = probe.info.server_version  # e.g. 150010 for 15.10
        except psycopg.Error as exc:
            reason = _reason(exc)
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {redact(self.url)} ({reason}): {connection_hint(reason)}"
            ) from None
        if version < OLDEST_SERVER * 10_000:  # (the change feed's xid8 transaction ids came in 13)
            raise DatabaseUnavailable(
                f"the server at {redact(self.url)} runs PostgreSQL {version // 10_000}; mcp-letta needs "
                f"PostgreSQL {OLDEST_SERVER} or newer: upgrade the server, or point MCP_LETTA_DB at a newer one"
            )
        with self._pool_lock:
            if self._pool is None:
                try:
                    self._pool = self._new_pool()
                except Exception as exc:
                    reason = _reason(exc)
                    raise DatabaseUnavailable(
                        f"cannot connect to PostgreSQL at {redact(self.url)} ({reason}): {connection_hint(reason)}"
                    ) from None
        try:
            with self._pool.connection() as raw:
                migrate(raw, redact(self.url))
            self._check_notifications()
        except BaseException as exc:
            self.close()
            if isinstance(exc, psycopg.Error):
                condition = server_condition(redact(self.url), exc)
                if condition is not None:  # a standby, a full disk, ...: what to do about it
                    raise condition from None
                raise DatabaseUnavailable(f"cannot prepare the database at {redact(self.url)}: {exc}") from None
            raise

    def _check_notifications(self) -> None:
        """Refuse a URL over which a notification does not reach the session that listens for it (a pooler in
        transaction mode lends a listening session to other clients): replicas would not hear each other."""
        psycopg = require_driver()
        channel = f"mcp_letta_check_{self.origin}"
        with psycopg.connect(self.conninfo, autocommit=True) as listener:
            listener.execute(f"LISTEN {channel}")
            with self._pool.connection() as raw:
                raw.execute("SELECT pg_notify(%s, '')", (channel,))
            for _ in listener.notifies(timeout=NOTIFY_CHECK_S, stop_after=1):
                return
        raise failures.pooled(
            f"the database at {redact(self.url)}",
            f"a notification sent through it did not reach the session listening for it within {NOTIFY_CHECK_S:.0f} s",
        )

    def _new_pool(self) -> Any:
        """An open connection pool (raises when the server cannot be reached)."""
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(
            self.conninfo, min_size=1, max_size=self.pool_size, open=False, name="mcp-letta",
            kwargs={"autocommit": True, "row_factory": _row_factory}, configure=_configure, timeout=LEND_TIMEOUT_S,
        )  # fmt: skip
        try:
            pool.open(wait=True, timeout=15.0)
        except BaseException:
            pool.close()
            raise
        return pool

    def close(self) -> None:
        """Close the pool. Safe to call twice."""
        with self._lock:
            self._closed = True
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection. While the server is out of reach (a call found it so) each call first tries a
        connection of its own, and fails at once with the reason if the server still does not answer."""
        from psycopg_pool import PoolTimeout

        with self._lock:
            if self._closed:
                raise self.not_open()
        if self._unreachable is not None:
            self._reconnect()
        pool = self._pool
        if pool is None:
            raise self.not_open()
        try:
            raw = pool.getconn()
        except PoolTimeout:
            raise self._timed_out() from None
        if _closed_while_idle(raw):  # the server restarted or went away: is it back?
            raw.close()
            pool.putconn(raw)  # (closed: the pool lets it go)
            self._mark_unreachable("the server closed an idle connection")
            with self._connection() as fresh:  # (at once: fails fast if down, else through a new pool)
                yield fresh
            return
        try:
            yield raw
        finally:
            pool.putconn(raw)

    def _reconnect(self) -> None:
        """The server was out of reach: if it answers a connection of our own now, replace the pool with a new
        one (the old one would retry each lost connection after ever longer waits, up to a minute apart),
        else raise ``unreachable`` with the reason."""
        refused = self._probe()
        if refused is not None:
            raise failures.unreachable(redact(self.url), refused)
        with self._pool_lock:
            if self._unreachable is None or self._pool is None:  # another call did it (or the store closed)
                return
            old, self._pool = self._pool, self._new_pool()
            self._unreachable = None
        log.info("PostgreSQL at %s answers again: reconnected", redact(self.url))
        threading.Thread(target=old.close, name="mcp-letta-old-pool", daemon=True).start()

    def _timed_out(self) -> StorageUnavailable:
        """Why no pooled connection came free in time: the server is out of reach, or each connection stayed
        busy (a long transaction, a held lock)."""
        refused = self._probe()
        if refused is not None:
            return self._mark_unreachable(refused)
        return failures.busy(redact(self.url), self.pool_size, LEND_TIMEOUT_S)

    def _probe(self) -> str | None:
        """Whether the server answers a connection of our own now: None if it does, else the driver's reason."""
        psycopg = require_driver()
        try:
            psycopg.connect(self.conninfo, connect_timeout=PROBE_TIMEOUT_S).close()
        except psycopg.Error as exc:
            return _reason(exc)
        return None

    def _mark_unreachable(self, detail: str) -> StorageUnavailable:
        """Note that the server is out of reach (the next calls check it is back first); the error to raise."""
        self._unreachable = failures.unreachable(redact(self.url), detail)
        return self._unreachable

    # -- transactions ------------------------------------------------------------------------------
    def _lost(self, exc: BaseException) -> StorageUnavailable | None:
        """What a call gets when the server broke the connection (``unreachable``: the next calls check it is
        back first) or refused it for a condition of its own (``server_condition``); None for any other
        error."""
        import psycopg

        state = getattr(exc, "sqlstate", None) or ""
        if isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(("08", "57P"))):
            return self._mark_unreachable(_reason(exc))
        return server_condition(redact(self.url), exc)

    @contextmanager
    def _explaining(self) -> Iterator[None]:
        """Raise what the server's failure means (``_lost``) in place of the driver's error."""
        try:
            yield
        except Exception as exc:
            lost = self._lost(exc)
            if lost is None:
                raise
            raise lost from exc

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, ...)`` in a read-only snapshot on a worker thread."""
        with self._explaining():
            return await anyio.to_thread.run_sync(lambda: self.read_sync(fn, *args, **kwargs), limiter=self._limiter)

    def read_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, ...)`` in a read-only snapshot on this thread."""
        with self._connection() as raw:
            conn = PgConn(raw, self.origin, begin="BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                result = fn(conn, *args, **kwargs)
            except BaseException as exc:
                try:
                    conn.rollback()
                except Exception:  # the connection broke (the error says why): the pool discards it
                    pass
                _replace_if_out_of_step(raw, exc)
                raise
            conn.rollback()
            return result

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in its own write transaction and return its result, or raise its error.
        Returns once the write is durable; listeners hear of its changes first. Once its transaction has
        begun it is finished even if the caller is cancelled (the cancel is then let through)."""
        write = _Write(fn, args)
        await anyio.lowlevel.checkpoint_if_cancelled()
        with anyio.CancelScope(shield=True):
            with self._explaining():
                changes = await anyio.to_thread.run_sync(self._write_one, write, limiter=self._limiter)
            self._notify(changes, True)
        await anyio.lowlevel.checkpoint()  # a cancel that came meanwhile
        if write.error is not None:
            with self._explaining():
                raise write.error
        return write.result  # type: ignore[no-any-return]

    def _write_one(self, write: _Write) -> list[tuple[str, str]]:
        """``write`` in a transaction of its own (its error rolls it back, and is kept); the changes it logged."""
        with self._connection() as raw:
            conn = PgConn(raw, self.origin, begin="BEGIN", writing=True)
            try:
                try:
                    write.result = write.fn(conn, *write.args)
                except Exception as exc:
                    write.error = exc
                    try:
                        conn.rollback()
                    except Exception:  # the connection broke (``exc`` says why): the pool discards it
                        pass
                    _replace_if_out_of_step(raw, exc)
                    return []
                while conn.before_commit:
                    hook = next(iter(conn.before_commit))
                    conn.before_commit.pop(hook)(conn)
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except Exception:
                    pass  # a broken connection: the pool discards it
                raise
            return conn.changes

    # -- following other replicas ------------------------------------------------------------------
    async def follow(self, interval_s: float) -> None:
        """Until cancelled: LISTEN on the change channel and, after each notification from another process,
        tell the listeners what it changed (read from the change log, see ``_foreign_changes``). The reads go
        over a connection of their own beside the listening one: one statement each, not a pooled
        transaction. After a lost connection it reconnects and reads the log from where it was, so nothing
        committed meanwhile is missed."""
        psycopg = require_driver()
        position = await self.read(_feed_position)
        pruned = time.monotonic()
        while True:
            try:
                listener = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            except Exception as exc:
                self.feed_trouble = _reason(exc)
                log.warning("cannot LISTEN for other replicas' changes (%s); retrying", self.feed_trouble)
                await anyio.sleep(max(interval_s, 1.0))
                continue
            try:
                async with listener, anyio.create_task_group() as tg:
                    await listener.execute(f"LISTEN {CHANNEL}")
                    wanted = anyio.Event()

                    async def read_changes() -> None:  # one read at a time, for every notification before it
                        nonlocal position, wanted
                        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as reader:
                            self.feed_trouble = None  # both connections are up
                            read_at = -FEED_READ_GAP_S
                            while True:
                                await wanted.wait()
                                await anyio.sleep(max(0.0, read_at + FEED_READ_GAP_S - time.monotonic()))
                                wanted = anyio.Event()
                                read_at = time.monotonic()
                                position = await self._catch_up(reader, position)

                    tg.start_soon(read_changes)
                    while True:  # in turns of at most 30 s, so a quiet database is still pruned
                        wanted.set()  # what committed before LISTEN (or between turns)
                        async for note in listener.notifies(timeout=30.0):
                            if note.payload != self.origin:
                                wanted.set()
                            if time.monotonic() - pruned > 300:
                                break
                        if time.monotonic() - pruned > 300:
                            pruned = time.monotonic()
                            await self.write(_prune_changes)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # the server restarted or the network broke: reconnect and replay
                self.feed_trouble = _cause(exc)
                log.warning("lost the connections that follow other replicas' changes (%s); reconnecting",
                            self.feed_trouble)  # fmt: skip
                await anyio.sleep(min(max(interval_s, 0.2), 2.0))

    async def _catch_up(self, reader: Any, position: FeedPosition) -> FeedPosition:
        cursor = await reader.execute(_FEED_READ_PG, (str(position.horizon),))
        position, foreign = _foreign_changes(position, self.origin, await cursor.fetchone())
        self._notify(foreign, False)
        return position


@dataclass(frozen=True)
class FeedPosition:
    """How far a follower has read the change log. Every transaction below ``horizon`` (the ``xmin`` of the
    snapshot of its last read) had ended by then, so its rows were read; rows of transactions at or above it
    may still commit, possibly with smaller ids than rows already read: those are read again, and ``seen``
    (their ids) keeps each from being told twice."""

    horizon: int
    seen: frozenset[int]


# One statement, so one snapshot: its ``xmin`` and the rows it sees agree.
_FEED_READ = (
    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, coalesce(("
    "SELECT json_agg(json_build_array(id, origin, kind, ref, txid::text) ORDER BY id) "
    "FROM changes WHERE txid >= ?::text::xid8), '[]')"
)
_FEED_READ_PG = translate(_FEED_READ)[0]  # for the follower's own connection


def _feed_position(conn: PgConn) -> FeedPosition:
    """Where a follower starting now begins: after everything committed so far."""
    read = conn.execute(_FEED_READ, ("0",)).fetchone()
    return _foreign_changes(FeedPosition(0, frozenset()), "", read)[0]


def _foreign_changes(
    position: FeedPosition, origin: str, read: tuple[str, list[list[Any]]]
) -> tuple[FeedPosition, list[tuple[str, str]]]:
    """From a read of the change log after ``position`` (``_FEED_READ``): the position after it, and the
    changes committed by processes other than ``origin`` that were not told before.

    Change ids are taken as transactions write and commit in any order, so "after the last id seen" would
    miss a transaction that took a smaller id and committed later. Instead a read takes every row of a
    transaction that might have been running at the previous read (``txid >= position.horizon``), and the
    ids already seen are skipped."""
    xmin, rows = int(read[0]), read[1]
    new = [(kind, ref) for i, who, kind, ref, _ in rows if i not in position.seen and who != origin]
    return FeedPosition(xmin, frozenset(i for i, *_, txid in rows if int(txid) >= xmin)), new


def _prune_changes(conn: PgConn) -> None:
    conn.execute("DELETE FROM changes WHERE at < extract(epoch FROM clock_timestamp()) - ?", (CHANGE_LOG_KEEP_S,))


# -- migrations ------------------------------------------------------------------------------------
def _migrations() -> list[tuple[int, str, str]]:
    return migrations.scripts("mcp_letta.store.postgres")


def latest_schema_version() -> int:
    """The newest PostgreSQL migration this mcp-letta ships."""
    return max((number for number, _, _ in _migrations()), default=0)


def schema_version(raw: Any) -> int:
    """The newest migration applied to this database (0 for an empty one)."""
    exists = raw.execute("SELECT to_regclass('mcp_letta_schema') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return int(raw.execute("SELECT coalesce(max(version), 0) FROM mcp_letta_schema").fetchone()[0])


def check_schema(raw: Any, where: str) -> None:
    """Refuse a database this mcp-letta must not write: one a newer mcp-letta migrated (its schema is past
    every migration shipped here), or one whose schema (the first of the ``search_path``) holds another
    program's tables and none of ours."""
    found, known = schema_version(raw), latest_schema_version()
    if found > known:
        raise failures.newer_schema(where, found, known, UPGRADE)
    if found == 0:
        schema, tables = raw.execute(_OTHER_TABLES).fetchone()
        if tables:
            raise failures.not_ours(
                where,
                f"its schema {schema} holds another program's tables: {', '.join(tables)}",
                "give mcp-letta a schema of its own (CREATE SCHEMA letta, then add "
                "?options=-csearch_path%3Dletta to the URL)",
            )


_OTHER_TABLES = (  # up to three tables of the schema new tables go to, ours apart
    "SELECT current_schema(), array(SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() "
    "AND tablename <> 'mcp_letta_schema' ORDER BY tablename LIMIT 3)"
)


def migrate(raw: Any, where: str) -> int:
    """Apply the numbered migrations newer than the database's version, each in one transaction, holding an
    advisory lock so replicas starting at once migrate once. A database ``check_schema`` refuses is left
    untouched."""
    applied = 0
    raw.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        check_schema(raw, where)
        raw.execute("CREATE TABLE IF NOT EXISTS mcp_letta_schema (version INTEGER PRIMARY KEY, applied_at TEXT)")
        for number, name, script in _migrations():
            version = schema_version(raw)
            if number <= version:
                continue
            if number != version + 1:
                raise RuntimeError(f"migration {name} does not follow schema version {version}")
            with raw.transaction():
                raw.execute(script.encode())
                raw.execute("INSERT INTO mcp_letta_schema(version, applied_at) VALUES (%s, now()::text)", (number,))
            applied += 1
            log.info("applied PostgreSQL migration %s", name)
    finally:
        raw.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied
