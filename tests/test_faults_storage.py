"""Faults under the store: bad database files, read-only files, folders and file systems, a full disk, and
kill -9 in the middle of writes. Each refusal is one clear message (on stderr with a non-zero exit at
start-up, on the tool result while serving, and in the doctor's words), nothing is half-written, and no
acknowledged write is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from conftest import dump
from faults import NAMESPACES, NO_NAMESPACES, SEED, RawStdio, in_namespace, server_env, stdio_command

from mcp_letta import AgentHub, Settings, StorageUnavailable
from mcp_letta.doctor import check_database
from mcp_letta.store import latest_schema_version

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

ROOT = os.geteuid() == 0  # root writes through file permissions: read-only needs a read-only mount instead


def start(db_path: Path, command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Start the stdio server the way a host does (stdin closed at once); it must refuse to start."""
    return subprocess.run(command or stdio_command(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=server_env(db_path), timeout=60)  # fmt: skip


def refused_with(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert done.stderr == f"mcp-letta: {message}\n", done.stderr[-3000:]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_database(db_path: Path) -> None:
    async def make() -> None:
        async with AgentHub(Settings(db_path=db_path)) as hub:
            await hub.create_agent("alice", persona="I am Alice.")

    anyio.run(make)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def doctor_says(db_path: Path) -> str:
    check = anyio.run(check_database, Settings(db_path=db_path))
    assert not check.ok
    return f"{check.detail}: {check.hint}"


# -- files that are not ours -------------------------------------------------------------------------------
def test_a_file_that_is_not_sqlite_is_refused_at_start_up_and_left_alone(db_path: Path) -> None:
    db_path.write_bytes(b"these are my notes, not a database\n" * 50)
    before = digest(db_path)
    message = (f"{db_path} is not an mcp-letta database (file is not SQLite): point MCP_LETTA_DB (or --db) at an "
               "mcp-letta database, or move this file aside")  # fmt: skip
    refused_with(start(db_path), message)
    assert doctor_says(db_path) == message
    assert digest(db_path) == before


def test_another_programs_sqlite_database_is_refused_and_left_alone(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    before = digest(db_path)
    message = (f"{db_path} is not an mcp-letta database (a SQLite database of another program, with tables "
               "invoices): point MCP_LETTA_DB (or --db) at an mcp-letta database, or move this file aside")  # fmt: skip
    refused_with(start(db_path), message)
    assert doctor_says(db_path) == message
    assert digest(db_path) == before and not db_path.with_name(db_path.name + "-wal").exists()


def test_a_database_from_a_newer_mcp_letta_is_refused_and_never_written(db_path: Path) -> None:
    make_database(db_path)
    newer = latest_schema_version() + 3
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version={newer}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before, rows = digest(db_path), dump(db_path)
    message = (f"{db_path} has schema version {newer}, from a newer mcp-letta; this one knows versions up to "
               f"{latest_schema_version()}: upgrade mcp-letta (pip install -U mcp-letta) to open it (nothing was "
               "written to it)")  # fmt: skip
    refused_with(start(db_path), message)
    assert doctor_says(db_path) == message

    async def open_in_process() -> None:
        with pytest.raises(StorageUnavailable) as refused:
            async with AgentHub(Settings(db_path=db_path)):
                pass
        assert refused.value.reason == "newer_schema" and str(refused.value) == message

    anyio.run(open_in_process)
    assert digest(db_path) == before and dump(db_path) == rows


# -- read-only ---------------------------------------------------------------------------------------------
def read_only_start(db_path: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """Start the server with ``target`` (the database or its folder) read-only: by permissions for a normal
    user, by a read-only bind mount for root (whom permissions do not stop)."""
    if not ROOT:
        mode = target.stat().st_mode
        target.chmod(0o555 if target.is_dir() else 0o444)
        try:
            return start(db_path)
        finally:
            target.chmod(mode)
    if not NAMESPACES:
        pytest.skip(NO_NAMESPACES)
    setup = f"mount --bind {target} {target}; mount -o remount,bind,ro {target}"
    return start(db_path, in_namespace(setup, stdio_command()))


def test_a_read_only_database_file_is_refused_with_what_to_do(db_path: Path) -> None:
    make_database(db_path)
    before = digest(db_path)
    refused_with(read_only_start(db_path, db_path),
                 f"{db_path} is read-only: make it writable (chmod u+w {db_path}), or set MCP_LETTA_DB to another "
                 "file")  # fmt: skip
    assert digest(db_path) == before


def test_a_read_only_folder_is_refused_with_what_to_do(db_path: Path) -> None:
    make_database(db_path)
    if ROOT:
        expected = (f"the file system holding {db_path} is read-only: mount it read-write, or set MCP_LETTA_DB to a "
                    "file elsewhere")  # fmt: skip
    else:
        expected = (f"the folder {db_path.parent} is read-only (the database keeps its journal files beside "
                    f"{db_path.name}): make the folder writable, or set MCP_LETTA_DB to a file in a folder you can "
                    "write")  # fmt: skip
    refused_with(read_only_start(db_path, db_path.parent), expected)


# -- a full disk -------------------------------------------------------------------------------------------
needs_tmpfs = pytest.mark.skipif(not NAMESPACES, reason=NO_NAMESPACES)


@needs_tmpfs
@pytest.mark.parametrize("existing", [False, True], ids=["new database", "existing database"])
def test_start_up_on_a_full_disk_says_so(tmp_path: Path, existing: bool) -> None:
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    db_path = disk / "agents.db"
    setup = f"mount -t tmpfs -o size=512k tmpfs {disk}"
    if existing:
        make_database(kept / "agents.db")
        setup += f"; cp {kept}/agents.db {disk}/"
    setup += f"; head -c 1M /dev/zero > {disk}/filler 2>/dev/null || true"
    refused_with(start(db_path, in_namespace(setup, stdio_command())),
                 f"the disk holding {db_path} is full: nothing was written; free space and retry")  # fmt: skip


@needs_tmpfs
def test_a_full_disk_refuses_writes_clearly_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    disk, out = tmp_path / "disk", tmp_path / "copied"
    disk.mkdir()
    out.mkdir()
    db_path = disk / "agents.db"
    command = in_namespace(f"mount -t tmpfs -o size=1m tmpfs {disk}", stdio_command(), after=f"cp -a {disk}/. {out}/")
    server = RawStdio(command, server_env(db_path))
    server.handshake()
    assert server.call(1, "create_agent", {"name": "alice"})["result"]["isError"] is False
    block = {"label": "log", "value": "", "limit": 1_000_000, "attach_to": ["alice"]}
    assert server.call(2, "create_block", block)["result"]["isError"] is False
    stored: list[str] = []
    appended: list[str] = []
    full = f"the disk holding {db_path} is full: nothing was written; free space and retry"
    refusals = 0
    for n in range(3, 200):
        if n % 2:
            text = f"passage {n} " + "p" * 40_000
            tool, args = "archival_memory_insert", {"agent": "alice", "content": text}
        else:
            text = f"[line {n}]" + "l" * 20_000
            tool, args = "append_to_block", {"block": "log", "text": text}
        result = server.call(n, tool, args)["result"]
        if not result["isError"]:
            (stored if tool == "archival_memory_insert" else appended).append(text)
            continue
        assert result["content"][0]["text"] == f"Error executing tool {tool}: {full}"
        refusals += 1
        if refusals >= 6:
            break
    assert refusals >= 6 and stored and appended
    # A burst written at once shares group commits: small writes may fit, big ones do not, none half-written.
    burst = {n: f"burst {n} " + "b" * (50 if n % 3 else 30_000) for n in range(300, 340)}
    server.send_in_background([json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
        "name": "archival_memory_insert", "arguments": {"agent": "alice", "content": text}}})
        for n, text in burst.items()])  # fmt: skip
    server.wait_for(set(burst))
    for n, text in burst.items():
        result = server.answers[n]["result"]
        if result["isError"]:
            assert result["content"][0]["text"] == f"Error executing tool archival_memory_insert: {full}"
        else:
            stored.append(text)
    listed = server.call("list", "list_agents", {})["result"]  # reading goes on
    assert listed["isError"] is False
    code, stderr = server.close()
    assert code == 0, stderr[-2000:]
    copy = out / "agents.db"
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        passages = [row[0] for row in conn.execute("SELECT text FROM passages ORDER BY rowid")]
        value = conn.execute("SELECT value FROM blocks WHERE label = 'log'").fetchone()[0]
    assert sorted(passages) == sorted(stored)  # every acknowledged insert, and nothing of a refused one
    assert value == "\n".join(appended)


# -- kill -9 in the middle of writes -----------------------------------------------------------------------
def test_kill_9_in_the_middle_of_writes_loses_nothing_acknowledged(db_path: Path) -> None:
    make_database(db_path)
    rng = random.Random(SEED)
    acknowledged: list[str] = []
    for round_ in range(3):
        server = RawStdio(stdio_command(), server_env(db_path))
        server.handshake()
        insert = {"name": "archival_memory_insert", "arguments": {"agent": "alice"}}
        requests = [{"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
            **insert, "arguments": {"agent": "alice", "content": f"r{round_} n{n} " + "x" * 500}}}
            for n in range(300)]  # fmt: skip
        writer = server.send_in_background([json.dumps(r) for r in requests])
        stop_after = rng.randrange(20, 200)  # kill while the rest are queued, mid-commit or in flight
        server.wait_for(set(), count=1 + stop_after)
        server.proc.kill()
        server.proc.wait(timeout=30)
        writer.join(timeout=30)
        assert len(server.answers) < 1 + len(requests), "the kill came after the last write"
        for n, answer in server.answers.items():
            if n != "init" and answer.get("result", {}).get("isError") is False:
                acknowledged.append(requests[n]["params"]["arguments"]["content"])
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        found = [row[0] for row in conn.execute("SELECT text FROM passages")]
    assert len(acknowledged) >= 60
    assert not set(acknowledged) - set(found), "an acknowledged write was lost"
    assert len(found) == len(set(found)), "a write was stored twice"
    # And the next process starts on the same file as if nothing happened.
    done = subprocess.run([sys.executable, "-m", "mcp_letta", "agents", "list"], capture_output=True, text=True,
                          env=server_env(db_path), timeout=60)  # fmt: skip
    assert done.returncode == 0 and "alice" in done.stdout, done.stderr[-2000:]
