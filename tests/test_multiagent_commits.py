"""The runtime's writes share transactions (group commit), so a fan-out to many agents is not paced by one
fsync per write. On a real SQLite file: many concurrent writes take few commits, a failing write rolls
back only itself, a write cancelled before its turn never runs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mcp_letta import AgentHub
from mcp_letta.runtime.context import compile_system, memory_of
from mcp_letta.runtime.runner import RunContext
from mcp_letta.store import Tx
from mcp_letta.store.sqlite import SQLiteTx
from mcp_letta.store.sqlite.db import Conn, Database

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "commits.db")
    await anyio.to_thread.run_sync(database.open)
    await database.write(lambda c: c.execute("CREATE TABLE notes (n INTEGER PRIMARY KEY)"))
    try:
        yield database
    finally:
        database.close()


def note(conn: Conn, n: int) -> int:
    """Insert note ``n``; returns how many writes this transaction made before it (0: it was first)."""
    before = len(conn.changes)
    conn.execute("INSERT INTO notes(n) VALUES (?)", (n,))
    conn.log_change("note", str(n))
    return before


def failing_note(conn: Conn, n: int) -> int:
    note(conn, n)
    raise ValueError(f"note {n} is refused")


async def notes(db: Database) -> list[int]:
    return await db.read(lambda c: [r[0] for r in c.execute("SELECT n FROM notes ORDER BY n")])


async def test_concurrent_writes_share_a_few_transactions_and_all_commit(db: Database) -> None:
    writes = db
    seen: dict[int, int] = {}

    async def one(n: int) -> None:
        seen[n] = await writes.write(note, n)

    async with anyio.create_task_group() as tg:
        for n in range(100):
            tg.start_soon(one, n)
    assert await notes(db) == list(range(100))
    transactions = sum(1 for before in seen.values() if before == 0)
    assert transactions < 20  # one per write would be 100 fsyncs


async def test_a_failing_write_rolls_back_only_itself(db: Database) -> None:
    writes = db
    outcomes: dict[int, object] = {}

    async def one(n: int) -> None:
        try:
            outcomes[n] = await writes.write(failing_note if n == 5 else note, n)
        except ValueError as exc:
            outcomes[n] = exc

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(one, n)
    assert await notes(db) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert isinstance(outcomes[5], ValueError) and str(outcomes[5]) == "note 5 is refused"
    assert sorted(outcomes[n] for n in range(10) if n != 5)[0] == 0


async def test_a_write_cancelled_before_its_turn_never_runs(db: Database) -> None:
    writes = db
    started = anyio.Event()

    def slow_note(conn: Conn, n: int) -> int:
        anyio.from_thread.run_sync(started.set)
        time.sleep(0.2)  # holds the batch being committed, so the next write must queue
        return note(conn, n)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writes.write, slow_note, 1)
        await started.wait()
        with anyio.move_on_after(0.05):
            await writes.write(note, 2)
    assert await notes(db) == [1]


def keep_the_event_loop_busy(seconds: float) -> float:
    """Block the calling (event loop) thread, as a burst of work would; returns when it is free again."""
    time.sleep(seconds)
    return time.monotonic()


async def test_writes_queued_while_a_batch_commits_are_committed_even_if_the_event_loop_is_busy(db: Database) -> None:
    # A hundred agents' answers arriving at once keep the event loop busy; the disk must not wait for it.
    writes = db
    started, ran_at = anyio.Event(), {}

    def slow_note(conn: Conn, n: int) -> int:
        anyio.from_thread.run_sync(started.set)
        time.sleep(0.1)  # the batch in progress while the others queue
        return note(conn, n)

    def timed_note(conn: Conn, n: int) -> int:
        ran_at[n] = time.monotonic()
        return note(conn, n)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writes.write, slow_note, 0)
        await started.wait()
        for n in range(1, 11):
            tg.start_soon(writes.write, timed_note, n)
        await anyio.lowlevel.checkpoint()  # let them queue
        await anyio.lowlevel.checkpoint()
        loop_free_at = keep_the_event_loop_busy(0.5)
    assert await notes(db) == list(range(11))
    assert sorted(ran_at) == list(range(1, 11)) and max(ran_at.values()) < loop_free_at


def without_clock(system: str) -> str:
    return "\n".join(line for line in system.splitlines() if "System prompt last recompiled" not in line)


async def test_starting_many_agents_at_once_matches_starting_each(hub: AgentHub) -> None:
    # Starting many agents at once (a broadcast's recipients) must make exactly the decisions one by one makes.
    runner = hub._scheduler.runner
    for name in ("solo", "busy", "foreign"):
        await hub.create_agent(name, persona=f"I am {name}.")
    await hub.archival_insert("solo", "a fact to count")
    ids = {a.name: a.id for a in await hub.list_agents()}

    def scene(tx: Tx) -> tuple[list[Any], list[Any]]:
        assert isinstance(tx, SQLiteTx)
        conn = tx.conn
        rows = {name: tx.resolve_agent(name) for name in ids}
        mine = runner.owner.id
        conn.execute(  # another live process (this pid, fresh heartbeat) owns the foreign agent's run
            "INSERT INTO processes(id, pid, host, started_at, heartbeat) VALUES ('other', ?, ?, 't', ?)",
            (runner.owner.pid, runner.owner.host, time.time()),
        )
        for name, owner in (("solo", mine), ("busy", mine), ("busy", mine), ("foreign", "other")):
            tx.insert_run(rows[name], f"hello {name}", role="user", sender=None, parent_run_id=None, owner=owner)
        many = runner.claim(tx, [ids["solo"], ids["busy"], ids["foreign"]])
        one_by_one = compile_system(rows["solo"].system, memory_of(tx, ids["solo"]))
        again = [runner.claim(tx, [ids[name]])[0] for name in ("solo", "busy", "foreign")]
        return many, [one_by_one, *again]

    many, (one_by_one, *again) = await hub._store.write(scene)
    solo, busy, foreign = many
    assert isinstance(solo, RunContext) and isinstance(busy, RunContext)
    if runner.owner.shares_queue:  # replicas on PostgreSQL: any of them starts any queued run
        assert isinstance(foreign, RunContext) and foreign.run.input == "hello foreign"
    else:  # processes on one SQLite file: a live process's queued run is left to it
        assert foreign == "blocked"
    assert (solo.more_queued, busy.more_queued) == (False, True)
    assert solo.window.chat[-1] == {"role": "user", "content": "hello solo"}
    assert "I am solo." in solo.system and "1 total memories you created" in solo.system
    assert without_clock(solo.system) == without_clock(one_by_one)  # the same prompt as the single claim builds
    # Once started, each agent is busy: claiming it again (one by one) starts nothing more.
    assert again == ["blocked", "blocked", "blocked"]
