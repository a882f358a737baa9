"""Block appends per second: ``AgentHub.append_to_block`` against raw ``sqlite3`` running the same SQL.

The raw side replays, statement for statement, what the store runs for one append (checked at run
time by tracing both). Appends rotate over blocks of ``APPENDS_PER_BLOCK`` so each value stays under
the default 5000-character limit: every append stores the old and new value in ``block_history``,
so one block growing without bound would measure I/O of a value no real block reaches.
Run as ``python -m bench.appends worker ...`` it is one of the parallel writer processes.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import anyio

from mcp_letta.config import Settings
from mcp_letta.hub import AgentHub
from mcp_letta.store.sqlite.db import BUSY_TIMEOUT_S

APPENDS_PER_BLOCK = 120
WRITER = "api"  # AgentHub.append_to_block's default writer
REPO_ROOT = Path(__file__).resolve().parent.parent

# The statements the store runs for AgentHub.append_to_block(<block id>, text), in order
# (db.Database._write_txn, blocks.resolve_block_row, blocks.edit_block, blocks.get_block, then
# Conn.write_change_log just before COMMIT). Kept in step with the store by check_replica().
SELECT_BLOCK = "SELECT * FROM blocks WHERE id = ?"
UPDATE_BLOCK = "UPDATE blocks SET value = ?, version = ?, updated_at = ?, updated_by = ? WHERE id = ?"
INSERT_HISTORY = (
    "INSERT INTO block_history(block_id, version, writer, op, old_value, new_value, at) VALUES (?,?,?,?,?,?,?)"
)
INSERT_CHANGE = "INSERT INTO changes(origin, kind, ref, at) VALUES (?, ?, ?, ?)"
SELECT_AGENT_NAMES = (
    "SELECT ab.block_id, a.name FROM agent_blocks ab JOIN agents a ON a.id = ab.agent_id "
    "WHERE ab.block_id IN (?) ORDER BY a.name"
)


def append_text(worker: int, index: int) -> str:
    """The text of one append (the same for our side and the raw side)."""
    return f"note {index:05d} from worker {worker}"


def _per_block(writers: int) -> int:
    return max(1, APPENDS_PER_BLOCK // writers)


def block_for(index: int, blocks: list[str], writers: int) -> str:
    """Which block the ``index``-th append of one of ``writers`` parallel writers goes to."""
    return blocks[(index // _per_block(writers)) % len(blocks)]


async def _setup(path: Path, block_count: int) -> None:
    async with AgentHub(Settings(db_path=path, watch_interval_s=3600)) as hub:
        await hub.create_agent("bench")
        for i in range(block_count):
            await hub.create_block(f"notes_{i:03d}", attach_to=["bench"])


def create_database(path: Path, appends: int, writers: int = 1) -> None:
    """A fresh database with one agent and enough empty blocks for ``appends`` appends by each of ``writers``."""
    anyio.run(_setup, path, max(1, -(-appends // _per_block(writers))))


def block_ids(path: Path) -> list[str]:
    """The benchmark blocks of a database made by ``create_database``, in order."""
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM blocks WHERE label LIKE 'notes_%' ORDER BY label")]


def appended_count(path: Path) -> int:
    """How many appends the blocks of ``path`` have recorded (versions past the first)."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT coalesce(sum(version - 1), 0) FROM blocks").fetchone()[0])


class RawAppender:
    """Plain ``sqlite3``: the store's pragmas and the store's statements for one append, nothing else."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.origin = uuid.uuid4().hex
        columns = [r[1] for r in self.conn.execute("PRAGMA table_info(blocks)")]
        self._value, self._version, self._limit = (columns.index(c) for c in ("value", "version", "char_limit"))

    def append(self, block_id: str, text: str) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(SELECT_BLOCK, (block_id,)).fetchone()
            old = row[self._value]
            new = text if old == "" else old + "\n" + text
            if len(new) > row[self._limit]:
                raise ValueError(f"block {block_id} is full: raise APPENDS_PER_BLOCK's block count")
            version, now = row[self._version] + 1, datetime.now(UTC).isoformat(timespec="microseconds")
            conn.execute(UPDATE_BLOCK, (new, version, now, WRITER, block_id))
            conn.execute(INSERT_HISTORY, (block_id, version, WRITER, "append", old, new, now))
            conn.execute(SELECT_BLOCK, (block_id,)).fetchone()
            conn.execute(SELECT_AGENT_NAMES, [block_id]).fetchall()
            conn.executemany(INSERT_CHANGE, [(self.origin, "block", block_id, time.time())])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


# -- one process -------------------------------------------------------------------------------------
@dataclass
class Timings:
    """Wall and CPU seconds (all threads of the process) per measured stretch, for each side."""

    wall_s: dict[str, list[float]] = field(default_factory=lambda: {"ours": [], "raw": []})
    cpu_s: dict[str, list[float]] = field(default_factory=lambda: {"ours": [], "raw": []})


async def _interleaved(our_path: Path, raw_path: Path, count: int, chunk: int) -> Timings:
    ours_blocks, raw_blocks = block_ids(our_path), block_ids(raw_path)
    raw = RawAppender(raw_path)
    timings = Timings()
    try:
        async with AgentHub(Settings(db_path=our_path)) as hub:
            for n, first in enumerate(range(0, count, chunk)):
                indexes = range(first, min(count, first + chunk))
                for side in ("raw", "ours") if n % 2 == 0 else ("ours", "raw"):
                    start, cpu = time.perf_counter(), time.process_time()
                    if side == "raw":
                        for i in indexes:
                            raw.append(block_for(i, raw_blocks, 1), append_text(0, i))
                    else:
                        for i in indexes:
                            await hub.append_to_block(block_for(i, ours_blocks, 1), append_text(0, i))
                    timings.wall_s[side].append(time.perf_counter() - start)
                    timings.cpu_s[side].append(time.process_time() - cpu)
    finally:
        raw.close()
    return timings


def interleaved_appends(our_path: Path, raw_path: Path, count: int, chunk: int = 100) -> Timings:
    """``count`` appends per side in this process, ours and raw taking turns every ``chunk`` (own file each).

    Taking turns exposes both sides to the same moments of disk and CPU contention, which on a
    shared machine vary more than the difference being measured.
    """
    return anyio.run(_interleaved, our_path, raw_path, count, chunk)


# -- several processes ---------------------------------------------------------------------------------
def parallel_appends(kind: str, path: Path, processes: int, count: int) -> tuple[float, float]:
    """Wall seconds for ``processes`` writer processes doing ``count`` appends each from a common start,
    and the CPU seconds they spent doing so (summed).

    Each worker opens its connection or hub, says ``ready`` and waits; the clock starts when all are
    released and stops at the last ``done``, so interpreter start-up and shutdown are not counted.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "bench.appends", "worker", kind, str(path), str(count), str(processes)]
    with tempfile.TemporaryFile("w+") as errors:
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": errors}
        workers = [
            subprocess.Popen([*command, str(i)], cwd=REPO_ROOT, env=env, text=True, bufsize=1, **pipes)
            for i in range(processes)
        ]
        try:
            for worker in workers:
                _expect(worker, "ready", errors)
            start = time.perf_counter()
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            cpu = sum(float(_expect(worker, "done", errors)[1]) for worker in workers)
            elapsed = time.perf_counter() - start
        finally:
            for worker in workers:
                if worker.stdin is not None:
                    worker.stdin.close()
                worker.wait(timeout=60)
    return elapsed, cpu


def _expect(worker: subprocess.Popen[str], word: str, errors: IO[str]) -> list[str]:
    assert worker.stdout is not None
    line = worker.stdout.readline().split()
    if line[:1] != [word]:
        worker.wait(timeout=60)
        errors.seek(0)
        raise RuntimeError(f"append worker said {line!r} instead of {word!r}:\n{errors.read()}")
    return line


def _worker(kind: str, path: Path, count: int, writers: int, worker: int) -> None:
    blocks = block_ids(path)

    def barrier() -> float:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("no go from the parent")
        return time.process_time()

    if kind == "raw":
        raw = RawAppender(path)
        cpu = barrier()
        for i in range(count):
            raw.append(block_for(i, blocks, writers), append_text(worker, i))
        print("done", time.process_time() - cpu, flush=True)
        raw.close()
        return

    async def run() -> None:
        async with AgentHub(Settings(db_path=path)) as hub:
            cpu = await anyio.to_thread.run_sync(barrier)
            for i in range(count):
                await hub.append_to_block(block_for(i, blocks, writers), append_text(worker, i))
            print("done", time.process_time() - cpu, flush=True)

    anyio.run(run)


# -- faithfulness of the raw side -------------------------------------------------------------------
_LITERAL = re.compile(r"'(?:[^']|'')*'|-?\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b|\bNULL\b")


def statement_shapes(statements: list[str]) -> list[str]:
    """Traced (expanded) SQL with every literal replaced by ``?``, so runs with other values compare equal."""
    # The tracer also reports statements SQLite runs internally (as "-- ..."); only ours count.
    return [" ".join(_LITERAL.sub("?", s).split()) for s in statements if not s.startswith("--")]


async def _trace_ours(path: Path, block_id: str, text: str) -> list[str]:
    traced: list[str] = []
    async with AgentHub(Settings(db_path=path, watch_interval_s=3600)) as hub:
        # The pool hands out its most recently released connection and nothing else runs here, so
        # the connection this installs the tracer on is the one the append below uses.
        await hub._store.db.read(lambda c: c.set_trace_callback(traced.append))
        traced.clear()
        await hub.append_to_block(block_id, text)
        await hub._store.db.read(lambda c: c.set_trace_callback(None))
    return traced[: traced.index("COMMIT") + 1] if "COMMIT" in traced else traced


def check_replica(path: Path) -> tuple[bool, list[str], list[str]]:
    """Trace one append through the store and one through ``RawAppender``; same statements in order?"""
    block_id = block_ids(path)[0]
    ours = statement_shapes(anyio.run(_trace_ours, path, block_id, "traced by the store"))
    raw = RawAppender(path)
    traced: list[str] = []
    raw.conn.set_trace_callback(traced.append)
    raw.append(block_id, "traced by raw sqlite3")
    raw.close()
    theirs = statement_shapes(traced)
    return ours == theirs, ours, theirs


def main(argv: list[str] | None = None) -> None:
    """Entry point of a writer process started by ``parallel_appends``."""
    parser = argparse.ArgumentParser(prog="python -m bench.appends")
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("kind", choices=["ours", "raw"])
    parser.add_argument("db", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("writers", type=int)
    parser.add_argument("worker", type=int)
    args = parser.parse_args(argv)
    _worker(args.kind, args.db, args.count, args.writers, args.worker)


if __name__ == "__main__":
    main()
