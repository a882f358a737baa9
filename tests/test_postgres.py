"""The PostgreSQL engine's own behaviour: choosing it without its driver, ``doctor`` against a real server,
``mcp-letta migrate`` from a SQLite file (history and all), and a server restart under a running hub."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from faults import MOUNT_NAMESPACES, NETWORK_NAMESPACES, NO_MOUNT_NAMESPACES, NO_NETWORK_NAMESPACES
from pg_server import PgBouncer, PgServer

from mcp_letta import AgentHub, Settings, StorageUnavailable
from mcp_letta.doctor import check_database, run_doctor
from mcp_letta.models import NewMessage
from mcp_letta.store.postgres.db import DatabaseUnavailable, PgDatabase
from mcp_letta.store.postgres.db import latest_schema_version as pg_schema_version
from mcp_letta.testing import ScriptedLLM

pytestmark = [pytest.mark.anyio, pytest.mark.postgres_only]
SCRIPT = Path(sys.executable).parent / "mcp-letta"

WITHOUT_DRIVER = """
import sys
sys.modules["psycopg"] = None  # as if the postgres extra were not installed
from mcp_letta.cli import main
sys.exit(main(["--db", "postgresql://someone@127.0.0.1:1/agents", "serve"]))
"""


def test_a_postgresql_url_without_the_driver_fails_at_start_with_the_install_command() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_DRIVER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "pip install 'mcp-letta[postgres]'" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "url",
    ["postgresql://letta:s3cret-pw@127.0.0.1:1/agents", "postgresql://letta@127.0.0.1:1/agents?password=s3cret-pw"],
)
def test_a_password_in_the_url_is_never_shown(url: str) -> None:
    for command in ("serve", "doctor"):  # nothing listens on port 1: both say they cannot connect, and where
        done = subprocess.run([str(SCRIPT), "--db", url, command], capture_output=True, text=True, timeout=120)
        said = done.stdout + done.stderr
        assert "cannot connect" in said and "127.0.0.1:1/agents" in said, said
        assert "s3cret-pw" not in said and "***" in said, said


async def test_doctor_reports_the_server_schema_what_it_holds_and_connections(db_path: str) -> None:
    import psycopg

    async with AgentHub(Settings(db_path=db_path)) as hub:  # more than a page of each
        for i in range(23):
            await hub.create_block(f"notes_{i:02d}", "")
        for i in range(25):
            await hub.create_agent(f"agent_{i:02d}")
    out = io.StringIO()
    await run_doctor(Settings(db_path=db_path), out)
    [line] = [line for line in out.getvalue().splitlines() if "database" in line]
    assert line.split()[0] == "ok", out.getvalue()
    assert "PostgreSQL 15" in line or "PostgreSQL 1" in line
    with psycopg.connect(db_path) as conn:  # (agents have blocks of their own too)
        blocks = conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
    assert blocks > 23
    assert f"schema {pg_schema_version()}, 25 agents, {blocks} blocks;" in line and "connections in use" in line


DOCTOR_ON_A_FAST_CLOCK = """
import sys, time
machine_time = time.time
time.time = lambda: machine_time() + 60  # this machine's clock runs a minute fast
from mcp_letta.cli import main
sys.exit(main(["--db", sys.argv[1], "doctor"]))
"""


def test_doctor_says_how_far_this_machines_clock_is_from_the_servers(db_path: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", DOCTOR_ON_A_FAST_CLOCK, db_path], capture_output=True, text=True, timeout=120
    )
    [line] = [line for line in done.stdout.splitlines() if "database" in line]
    assert line.split()[0] == "ok", done.stdout  # leases follow the server's clock: nothing is broken
    ahead = re.search(r"this machine's clock is (\d+) s ahead of the server's", line)
    assert ahead is not None and 58 <= int(ahead[1]) <= 62, line
    assert "set up NTP" in line


async def test_doctor_says_what_to_do_when_the_server_is_unreachable() -> None:
    out = io.StringIO()
    assert await run_doctor(Settings(db_path="postgresql://nobody@127.0.0.1:1/none"), out) == 1
    assert "cannot connect" in out.getvalue() and "start PostgreSQL" in out.getvalue()


def contents(url: str) -> dict[str, str]:
    """Each table of the URL's schema (its ``search_path``) and a digest of its rows."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        )]  # fmt: skip
        return {
            table: conn.execute(
                f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t"
            ).fetchone()[0]
            for table in tables
        }


async def refused_everywhere(url: str, message: str, reason: str) -> None:
    """A server start (exit 2, the message on stderr), doctor and the Python API all refuse ``url`` alike."""
    done = await anyio.run_process([str(SCRIPT), "--db", url, "serve"], stdin=subprocess.DEVNULL, check=False)
    assert (done.returncode, done.stderr.decode(), done.stdout) == (2, f"mcp-letta: {message}\n", b"")
    check = await check_database(Settings(db_path=url))
    assert (check.ok, f"{check.detail}: {check.hint}") == (False, message)
    with pytest.raises(StorageUnavailable) as refused:
        async with AgentHub(Settings(db_path=url)):
            pass
    assert (refused.value.reason, str(refused.value)) == (reason, message)


async def test_a_database_a_newer_mcp_letta_migrated_is_refused_and_never_written(db_path: str) -> None:
    import psycopg

    async with AgentHub(Settings(db_path=db_path)) as hub:
        await hub.create_agent("alice", persona="I am Alice.")
    newer = pg_schema_version() + 3
    with psycopg.connect(db_path) as conn:
        conn.execute("INSERT INTO mcp_letta_schema(version, applied_at) VALUES (%s, 'by a newer one')", (newer,))
    before = contents(db_path)
    await refused_everywhere(
        db_path,
        f"{db_path} has schema version {newer}, from a newer mcp-letta; this one knows versions up to "
        f"{pg_schema_version()}: upgrade mcp-letta (pip install -U 'mcp-letta[postgres]' on every replica) to "
        "open it (nothing was written to it)",
        "newer_schema",
    )
    assert contents(db_path) == before


async def test_another_programs_database_is_refused_untouched_and_a_schema_of_its_own_works(
    pg_server: PgServer, scripted_llm: ScriptedLLM
) -> None:
    import psycopg

    name = f"theirs_{os.getpid()}"
    pg_server.sql(f"CREATE DATABASE {name}")
    url = pg_server.url(name)
    try:
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE agents (id serial PRIMARY KEY, who text)")  # a name we use too
            conn.execute("INSERT INTO agents (who) VALUES ('their agent')")
            conn.execute("CREATE TABLE invoices (id integer)")
        before = contents(url)
        await refused_everywhere(
            url,
            f"{url} is not an mcp-letta database (its schema public holds another program's tables: agents, "
            "invoices): point MCP_LETTA_DB (or --db) at an mcp-letta database, or give mcp-letta a schema of its "
            "own (CREATE SCHEMA letta, then add ?options=-csearch_path%3Dletta to the URL)",
            "not_ours",
        )
        assert contents(url) == before

        # what the message says to do works: mcp-letta in a schema of its own, beside theirs
        with psycopg.connect(url) as conn:
            conn.execute("CREATE SCHEMA letta")
        own = url + "?options=-csearch_path%3Dletta"
        settings = Settings(db_path=own, llm_base_url=scripted_llm.base_url, model="m", watch_interval_s=0.05)
        scripted_llm.reply("noted")
        async with AgentHub(settings) as hub, AgentHub(settings) as other:
            feed = other.subscribe_changes()
            await hub.create_agent("alice")
            run = await hub.send_message("alice", "hello", wait_s=60)
            assert (run.status, run.reply) == ("completed", "noted")
            with anyio.fail_after(30):  # the change feed works there too
                async for change in feed:
                    if change.kind == "agent" and not change.local:
                        break
            assert [a.name for a in await other.list_agents()] == ["alice"]
        assert contents(url) == before  # theirs is as it was
        assert "agents" in contents(own) and "mcp_letta_schema" in contents(own)
    finally:
        pg_server.drop(url)


async def test_migrate_copies_a_sqlite_database_history_and_all(db_path: str, tmp_path: Path) -> None:
    source = tmp_path / "agents.db"
    async with AgentHub(Settings(db_path=source)) as hub:
        await hub.create_block("project", "goal: ship", description="shared")
        await hub.create_agent("researcher", persona="I research.", shared_blocks=["project"], tags=["team"])
        await hub.create_agent("writer", tags=["team"])
        for i in range(3):
            await hub.append_to_block("project", f"step {i}")
        await hub.archival_insert("researcher", "The launch is planned for March in Lisbon", tags=["plan"])
        await hub.append_messages("researcher", [NewMessage(role="user", content=f"note {i}") for i in range(5)])
        before_history = await hub.block_history("project")
        before_messages = await hub.get_messages("researcher")
        before_agents = await hub.list_agents()

    command = [str(SCRIPT), "migrate", "--from", str(source), "--to", db_path]
    done = await anyio.run_process(command, check=False)
    assert done.returncode == 0, done.stderr
    # 2 blocks of each agent + the shared one created, and 3 appends
    assert "block_history: 8" in done.stdout.decode() and "messages: 5" in done.stdout.decode()

    async with AgentHub(Settings(db_path=db_path)) as hub:
        assert [a.model_dump() for a in await hub.list_agents()] == [a.model_dump() for a in before_agents]
        assert await hub.block_history("project") == before_history
        assert await hub.get_messages("researcher") == before_messages
        [found] = await hub.archival_search("researcher", "Lisbon launch")
        assert found.tags == ["plan"]
        assert "- 1 total memories you created are stored in archival memory" in await hub.core_memory("researcher")
        after = await hub.append_to_block("project", "written after the move")  # sequences go on
        assert after.version == 5
        [added] = await hub.append_messages("researcher", [NewMessage(role="user", content="after")])
        assert added.seq == before_messages[-1].seq + 1

    again = await anyio.run_process(command, check=False)
    assert again.returncode == 2
    assert "already holds data" in again.stderr.decode() and "empty database" in again.stderr.decode()


async def test_a_server_restart_fails_calls_clearly_then_recovers_without_restarting_the_hub(
    db_path: str, pg_server: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        AgentHub(Settings(db_path=db_path, watch_interval_s=0.05)) as hub,
        AgentHub(Settings(db_path=db_path, watch_interval_s=0.05)) as other,
    ):
        await hub.create_block("log", "")
        acknowledged = []
        for i in range(5):
            await hub.append_to_block("log", f"before {i}")
            acknowledged.append(f"before {i}")
        feed = hub.subscribe_changes()
        await anyio.to_thread.run_sync(pg_server.restart)
        failures: list[str] = []
        for i in range(20):
            try:
                await hub.append_to_block("log", f"after {i}")
                acknowledged.append(f"after {i}")
            except Exception as exc:  # a connection the restart broke: said, not hidden
                failures.append(f"{type(exc).__name__}: {exc}")
                await anyio.sleep(0.2)
        assert len([a for a in acknowledged if a.startswith("after")]) >= 15, failures
        where = db_path  # (no password to hide)
        assert all(f.startswith(f"StorageUnavailable: the connection to the database at {where} failed (") and
                   f.endswith("): retry once the server answers again: mcp-letta reconnects by itself, and runs it "
                              "was executing resume from their last step") for f in failures), failures  # fmt: skip
        assert (await hub.read_block("log")).value.split("\n") == acknowledged  # nothing acknowledged is lost

        # the other hub's follower reconnected its LISTEN: a write there reaches this hub's feed
        block = await other.append_to_block("log", "from the other hub")
        with anyio.fail_after(30):
            async for change in feed:
                if change.kind == "block" and change.ref == block.id and not change.local:
                    break
    lost = [r.getMessage() for r in caplog.records if "lost the connections that follow" in r.getMessage()]
    assert lost and not [m for m in lost if "sub-exception" in m], lost  # the driver's reason, not a wrapper's


async def test_while_the_server_is_down_calls_say_why_and_the_first_call_after_it_is_back_works(
    db_path: str, pg_server: PgServer
) -> None:
    async with AgentHub(Settings(db_path=db_path)) as hub:
        await hub.create_block("log", "")
        await hub.append_to_block("log", "before")
        await anyio.to_thread.run_sync(pg_server.stop, "fast")
        try:
            refusals = []
            for call in (hub.append_to_block("log", "lost"), hub.read_block("log"), hub.list_agents()):
                with pytest.raises(StorageUnavailable) as refused:
                    await call
                refusals.append(refused.value)
        finally:
            await anyio.to_thread.run_sync(pg_server.start_again)
        assert all(r.reason == "unreachable" for r in refusals), refusals
        assert all(str(r).startswith(f"the connection to the database at {db_path} failed (") for r in refusals)
        assert "Connection refused" in str(refusals[-1])  # the driver's reason, once the pool is found empty
        after = await hub.append_to_block("log", "after")  # the first call: no waiting out the pool's back-off
        assert after.value == "before\nafter"


def _socket_options(raw: Any) -> tuple[int, int, int]:
    """A connection's TCP settings as the kernel holds them: keepalive on?, idle seconds before the first
    probe, and the user timeout in ms."""
    import socket

    with socket.socket(fileno=os.dup(raw.fileno())) as s:
        return (s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux-only TCP socket options")
def test_connections_give_up_on_a_silent_server_unless_the_url_chooses_otherwise(db_path: str) -> None:
    for url, expected in ((db_path, (1, 10, 30_000)), (f"{db_path}?keepalives_idle=60&tcp_user_timeout=0", (1, 60, 0))):
        db = PgDatabase(url)
        db.open()
        try:
            with db._connection() as raw:
                assert _socket_options(raw) == expected, url
        finally:
            db.close()


CUT_OFF = """
import json, os, threading, time, anyio
from faults import set_loopback
set_loopback(True)  # a new network namespace's loopback starts down
from pg_server import PgServer
from mcp_letta import AgentHub, Settings, StorageUnavailable
from mcp_letta.store.postgres import db

db.TCP_LIVENESS.update(keepalives_idle=1, keepalives_interval=1, tcp_user_timeout=3000)  # 10 s and 30 s, shortened

async def main():
    seen = {}
    async with AgentHub(Settings(db_path=server.url())) as hub:
        await hub.create_block("log", "")
        await hub.append_to_block("log", "before")
        set_loopback(False)  # the network drops every packet from here, without a word
        try:
            for name, call in (("read", hub.read_block("log")), ("write", hub.append_to_block("log", "cut off"))):
                try:
                    await call
                    seen[name] = "answered"
                except StorageUnavailable as refused:
                    seen[name] = [refused.reason, str(refused)]
            while hub.feed_trouble() is None:  # the idle LISTEN connection finds out too
                await anyio.sleep(0.1)
            seen["feed"] = hub.feed_trouble()
        finally:
            set_loopback(True)
        seen["after"] = (await hub.append_to_block("log", "after")).value
        while hub.feed_trouble() is not None:
            await anyio.sleep(0.1)
    print(json.dumps(seen), flush=True)

def watchdog():  # a call that waits on the silent network for good: stop this namespace's server, fail
    time.sleep(240)
    server.cleanup()
    os._exit(3)

server = PgServer().start()
threading.Thread(target=watchdog, daemon=True).start()
try:
    anyio.run(main)
finally:
    set_loopback(True)
    server.cleanup()
"""


@pytest.mark.skipif(not NETWORK_NAMESPACES, reason=NO_NETWORK_NAMESPACES)
def test_calls_and_the_feed_give_up_on_a_network_gone_silent_and_work_again_once_it_is_back() -> None:
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        done = subprocess.run(["unshare", "-n", sys.executable, "-c", CUT_OFF], capture_output=True, text=True,
                              env=env, timeout=300)  # fmt: skip
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"the child hung: {hung.stderr!r}") from None
    assert done.returncode != 3, f"a call waited on the silent network for good: {done.stderr}"
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["read"][0] == seen["write"][0] == "unreachable", seen
    for call in ("read", "write"):
        assert seen[call][1].startswith("the connection to the database at postgresql://"), seen
    assert "timed out" in seen["read"][1], seen  # the first call waited for the timeout; the next, not again
    assert seen["feed"], seen  # it found out (its first reason is a timeout; later reconnects say other things)
    assert seen["after"] == "before\nafter"  # the call that timed out wrote nothing; the first one back works


async def test_a_write_the_server_gives_up_on_says_why_and_changes_nothing(db_path: str, pg_server: PgServer) -> None:
    import psycopg

    async with AgentHub(Settings(db_path=db_path)) as hub:
        await hub.create_block("log", "kept")
    pg_server.sql(f"ALTER DATABASE {db_path.rsplit('/', 1)[1]} SET lock_timeout = '200ms'")  # an administrator's
    with psycopg.connect(db_path) as holder:
        holder.execute("SELECT * FROM blocks FOR UPDATE")  # another session holds the block's row
        async with AgentHub(Settings(db_path=db_path)) as hub:
            with pytest.raises(StorageUnavailable) as refused:
                await hub.append_to_block("log", "lost")
        holder.rollback()
    assert refused.value.reason == "busy"  # it passes: a run that meets it resumes later
    assert str(refused.value).startswith(
        f"the database at {db_path} gave up on this call (canceling statement due to lock timeout); nothing was "
        "written: retry; if it goes on, look at the server's limits and at the settings of mcp-letta's database user"
    )
    async with AgentHub(Settings(db_path=db_path)) as hub:
        assert (await hub.read_block("log")).value == "kept"


def test_a_database_that_takes_no_writes_is_refused_at_start_with_what_to_do(db_path: str, pg_server: PgServer) -> None:
    pg_server.sql(f"ALTER DATABASE {db_path.rsplit('/', 1)[1]} SET default_transaction_read_only = on")  # a standby's
    done = subprocess.run([str(SCRIPT), "--db", db_path, "serve"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert f"the database at {db_path} takes no writes (cannot execute " in done.stderr
    assert (
        "in a read-only transaction): point MCP_LETTA_DB at the primary server (with several hosts in the URL, "
        "add target_session_attrs=read-write)" in done.stderr
    )


@pytest.mark.skipif(not Path(PgBouncer.BINARY).exists(), reason="needs pgbouncer (apt-get install pgbouncer)")
async def test_a_pooler_in_transaction_mode_is_refused_at_start_and_one_in_session_mode_works(
    db_path: str, pg_server: PgServer
) -> None:
    name = db_path.rsplit("/", 1)[1]
    with PgBouncer(pg_server, "transaction") as bouncer:
        url = bouncer.url(name)
        for _ in range(2):  # (a later start may also meet the first one's prepared statements in a lent session)
            with pytest.raises(StorageUnavailable) as refused:
                async with AgentHub(Settings(db_path=url)):
                    pass
            assert refused.value.reason == "pooled"
            assert str(refused.value).startswith(
                f"the database at {url} goes through a connection pooler in "
                "transaction mode (such as PgBouncer's pool_mode = transaction): "
            )
            assert str(refused.value).endswith(": point MCP_LETTA_DB at the PostgreSQL server itself, or at a "
                                               "pooler in session mode (pool_mode = session)")  # fmt: skip
    with PgBouncer(pg_server, "session") as bouncer:
        url = bouncer.url(name)
        async with AgentHub(Settings(db_path=url)) as one, AgentHub(Settings(db_path=url)) as other:
            feed = other.subscribe_changes()
            block = await one.create_block("notes", "")
            with anyio.fail_after(60):  # the other replica hears of it
                async for change in feed:
                    if change.kind == "block" and change.ref == block.id and not change.local:
                        break


ON_A_SMALL_DISK = """
import json, secrets, shutil, subprocess, anyio
from pg_server import PgServer
from mcp_letta import AgentHub, Settings, StorageUnavailable

async def main():
    seen = {"stored": [], "names": []}
    async with AgentHub(Settings(db_path=server.url("agents"))) as hub:
        await hub.create_agent("alice")
        for n in range(200):  # about 100 KB each, little of it compressible: the disk is full within 60
            text = f"passage{n} " + " ".join(secrets.token_hex(8) for _ in range(6000))
            try:
                seen["stored"].append((await hub.archival_insert("alice", text)).id)
            except StorageUnavailable as refused:
                seen["refused"] = [refused.reason, str(refused)]
                break
        page = await hub.archival_list("alice", limit=1000)  # reads go on
        seen["listed"] = [passage.id for passage in page]
        seen["found"] = [p.id for p in await hub.archival_search("alice", "passage0")]
        seen["names"] = [agent.name for agent in await hub.list_agents()]
    print(json.dumps(seen), flush=True)

server = PgServer().start()
disk = server.dir / "small"
try:
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)], check=True)  # here only
    if server.as_user:
        shutil.chown(disk, "nobody")
    server.sql(f"CREATE TABLESPACE small LOCATION '{disk}'")  # the database's tables on the small disk, WAL not
    server.sql("CREATE DATABASE agents TABLESPACE small")
    anyio.run(main)
finally:
    server.stop()
    subprocess.run(["umount", str(disk)], check=False)
    server.cleanup()
"""


@pytest.mark.skipif(not MOUNT_NAMESPACES, reason=NO_MOUNT_NAMESPACES)
def test_a_server_whose_disk_is_full_refuses_writes_clearly_and_keeps_answering_reads() -> None:
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = ["unshare", "-m", sys.executable, "-c", ON_A_SMALL_DISK]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    reason, message = seen["refused"]
    assert reason == "disk_full", message
    assert message.startswith("the disk holding the database at postgresql://"), message
    assert "No space left on device" in message and message.endswith("nothing was written; free space and retry")
    assert seen["stored"] and sorted(seen["listed"]) == sorted(seen["stored"])  # every acknowledged one, no other
    assert seen["found"] == [seen["stored"][0]] and seen["names"] == ["alice"]


FROZEN_IN_A_TRANSACTION = """
import sys, time, anyio
from mcp_letta import AgentHub, Settings

async def main():
    async with AgentHub(Settings(db_path=sys.argv[1]), runs_agents=False) as hub:
        def stall(tx):
            tx.update_block("log", agent=None, limit=None, description="mine", read_only=None, metadata=None,
                            writer="frozen")  # its row is locked from here to the commit
            print("holding", flush=True)
            time.sleep(3600)  # as if the process were stopped (SIGSTOP, a paused VM) mid-transaction
        await hub._store.write(stall)

anyio.run(main)
"""


async def test_the_rows_of_a_process_frozen_in_a_transaction_are_freed_after_a_lease(db_path: str) -> None:
    async with AgentHub(Settings(db_path=db_path)) as hub:
        await hub.create_block("log", "")
        command = [sys.executable, "-c", FROZEN_IN_A_TRANSACTION, db_path]
        killed = False
        async with await anyio.open_process(command) as frozen:

            async def safety_net() -> None:  # a write waiting on a row cannot be cancelled: end the holder instead
                nonlocal killed
                await anyio.sleep(240)
                killed = True
                frozen.kill()

            try:
                with anyio.fail_after(60):
                    assert (await frozen.stdout.receive()).startswith(b"holding")  # type: ignore[union-attr]
                async with anyio.create_task_group() as tg:
                    tg.start_soon(safety_net)
                    written = await hub.append_to_block("log", "after the frozen one")  # the server ends it: 30 s
                    tg.cancel_scope.cancel()
            finally:
                frozen.kill()
        assert not killed, "the frozen process's session was never ended by the server"
        assert written.value == "after the frozen one"
        assert (await hub.read_block("log")).description != "mine"  # its transaction never committed


async def test_health_says_when_a_replica_cannot_hear_the_others_and_when_it_can_again() -> None:
    # The server's connections are all taken but two: the replica gets its pool's and the one that
    # LISTENs, not the one that reads the change log. It serves, and says what it is missing.
    import httpx2
    import psycopg

    from mcp_letta.server.app import build_server
    from mcp_letta.server.http import HttpOptions, http_app, running_app

    server = PgServer()
    server.max_connections = 12
    server.start()
    taken: list[Any] = []
    try:
        while True:
            try:
                taken.append(psycopg.connect(server.url()))
            except psycopg.OperationalError as exc:
                assert "too many clients" in str(exc)
                break
        with pytest.raises(DatabaseUnavailable) as refused:  # not one left: it says so at start, and what to do
            async with AgentHub(Settings(db_path=server.url())):
                pass
        assert (
            "too many clients already): every connection the server allows is in use: raise its "
            "max_connections, or lower MCP_LETTA_PG_POOL_SIZE on the replicas" in str(refused.value)
        )
        for conn in taken[-2:]:
            conn.close()
        del taken[-2:]
        async with AgentHub(Settings(db_path=server.url(), pg_pool_size=1)) as hub:
            app = http_app(build_server(hub), HttpOptions(port=0))
            async with running_app(app) as port, httpx2.AsyncClient() as http:

                async def feed() -> str:
                    response = await http.get(f"http://127.0.0.1:{port}/health")
                    assert response.status_code == 200  # it still serves
                    return str(response.json()["feed"])

                with anyio.fail_after(60):
                    while "too many clients" not in (said := await feed()):  # noqa: ASYNC110
                        await anyio.sleep(0.1)
                assert said.startswith("reconnecting: ")
                await hub.create_agent("alice")  # calls work meanwhile
                for conn in taken[-3:]:
                    conn.close()
                with anyio.fail_after(60):
                    while await feed() != "ok":  # noqa: ASYNC110
                        await anyio.sleep(0.1)
    finally:
        for conn in taken:
            conn.close()
        server.cleanup()


async def test_an_edit_waits_for_its_blocks_row_and_not_for_other_writers(db_path: str) -> None:
    # Row locks, not one lock for every write: a transaction holding one block's row holds up edits of that
    # block (which then apply to the value it committed) and nothing else.
    import psycopg

    async with AgentHub(Settings(db_path=db_path)) as hub:
        held, free = await hub.create_block("held", "one"), await hub.create_block("free", "")
        edited = anyio.Event()
        with psycopg.connect(db_path) as other:  # another replica, in the middle of an edit of "held"
            other.execute("SELECT value FROM blocks WHERE id = %s FOR NO KEY UPDATE", (held.id,))
            other.execute("UPDATE blocks SET value = 'one, two', version = version + 1 WHERE id = %s", (held.id,))

            async def append_to_held() -> None:
                await hub.append_to_block("held", "three")
                edited.set()

            with anyio.fail_after(60):  # (one lock for every write would hang here)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(append_to_held)
                    for i in range(5):  # other writes go on meanwhile
                        await hub.append_to_block("free", f"line {i}")
                    await hub.create_agent("bystander")
                    assert not edited.is_set()  # still waiting for the row
                    other.commit()
        after, free_after = await hub.read_block("held"), await hub.read_block("free")
    assert edited.is_set()
    assert (after.value, after.version) == ("one, two\nthree", held.version + 2)
    assert free_after.version == free.version + 5


async def test_two_replicas_creating_one_agent_name_at_once_make_one_agent_and_a_clear_conflict(db_path: str) -> None:
    from mcp_letta.errors import Conflict

    async with AgentHub(Settings(db_path=db_path)) as first, AgentHub(Settings(db_path=db_path)) as second:
        outcomes: list[object] = []

        async def create(hub: AgentHub) -> None:
            try:
                outcomes.append(await hub.create_agent("twin"))
            except Conflict as exc:
                outcomes.append(exc)

        for _ in range(5):  # rounds: in each, ten creates race
            outcomes.clear()
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(create, first if i % 2 else second)
            made = [o for o in outcomes if not isinstance(o, Conflict)]
            refused = [o for o in outcomes if isinstance(o, Conflict)]
            assert len(made) == 1 and len(refused) == 9
            assert all(
                "an agent named 'twin' already exists" in str(e) and "pick another name" in str(e) for e in refused
            )
            assert [a.name for a in (await first.list_agents())] == ["twin"]
            await first.delete_agent("twin")


async def test_searches_are_planned_for_their_agent_never_with_a_cached_generic_plan(db_path: str) -> None:
    # A plan cached while a big agent searched would send a small agent's search through every other
    # agent's matches: each search is planned for its own values.
    async with AgentHub(Settings(db_path=db_path, pg_pool_size=1)) as hub:
        big = (await hub.create_agent("big")).id
        await hub.create_agent("small")
        await hub._store.write(lambda tx: tx.insert_passages(big, [(f"harbour note {i}", []) for i in range(300)]))
        await hub.append_messages("big", [NewMessage(role="user", content=f"harbour talk {i}") for i in range(300)])
        await hub.archival_insert("small", "the harbour of the small agent")
        await hub.append_messages("small", [NewMessage(role="user", content="small harbour talk")])
        for _ in range(12):  # psycopg prepares a statement after 5 runs; PostgreSQL may then go generic
            await hub.archival_search("big", "harbour")
            await hub.search_messages("big", "harbour")
        assert [p.text for p in await hub.archival_search("small", "harbour")] == ["the harbour of the small agent"]
        assert [m.content for m in await hub.search_messages("small", "harbour")] == ["small harbour talk"]
        plans = await hub._store.read(
            lambda tx: tx.conn.execute(  # type: ignore[attr-defined]
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE position('to_tsquery' in statement) > 0"
            ).fetchall()
        )
    assert len(plans) >= 2, plans  # both searches ran often enough to be prepared
    assert [(r["generic_plans"], r["custom_plans"] > 0) for r in plans] == [(0, True)] * len(plans), plans


async def test_a_change_that_commits_after_a_newer_one_still_reaches_the_other_replicas(db_path: str) -> None:
    # Writers commit side by side, so change ids commit out of order: a transaction that wrote its change
    # row first may commit after one that wrote later. A follower that read only "after the newest id
    # seen" would never hear of it.
    import psycopg

    async with (
        AgentHub(Settings(db_path=db_path)) as here,
        AgentHub(Settings(db_path=db_path)) as there,
    ):
        slow = await here.create_block("slow", "one")
        feed = there.subscribe_changes()

        async def heard(block_id: str) -> None:
            with anyio.fail_after(30):
                async for change in feed:
                    if change.kind == "block" and change.ref == block_id and not change.local:
                        return

        with psycopg.connect(db_path) as late:  # another replica's edit of "slow", in the middle of committing
            late.execute("UPDATE blocks SET value = 'one, two', version = version + 1 WHERE id = %s", (slow.id,))
            late.execute(
                "INSERT INTO changes(origin, kind, ref, at) VALUES ('another-replica', 'block', %s, 0)", (slow.id,)
            )
            newer = await here.create_block("newer", "")  # a newer change id, committed first
            await heard(newer.id)
            late.commit()
            late.execute("SELECT pg_notify('mcp_letta_changes', 'another-replica')")
            late.commit()
        await heard(slow.id)
        assert (await there.read_block("slow")).value == "one, two"


@pytest.fixture
async def scratch_db(db_path: str) -> AsyncIterator[PgDatabase]:
    """An open ``PgDatabase`` on a fresh database holding a table ``scratch(x INT UNIQUE)``."""
    import psycopg

    with psycopg.connect(db_path, autocommit=True) as admin:
        admin.execute("CREATE TABLE scratch(x INT UNIQUE)")
    db = PgDatabase(db_path)
    await anyio.to_thread.run_sync(db.open)
    try:
        yield db
    finally:
        await anyio.to_thread.run_sync(db.close)


def scratch_rows(db_path: str) -> list[int]:
    """What ``scratch`` holds, in order, read over a connection of its own."""
    import psycopg

    with psycopg.connect(db_path) as admin:
        return [r[0] for r in admin.execute("SELECT x FROM scratch ORDER BY x")]


async def test_a_failed_statement_in_a_savepoint_is_undone_and_the_transaction_goes_on(
    scratch_db: PgDatabase, db_path: str
) -> None:
    # Savepoints travel with the next statement (no round trip of their own): one that failed must still be
    # rolled back to on the server, and one with nothing inside is never sent.
    from mcp_letta.errors import Conflict

    def work(conn: Any) -> None:
        conn.execute("INSERT INTO scratch VALUES (1)")
        with pytest.raises(Conflict), conn.savepoint():
            conn.execute("INSERT INTO scratch VALUES (2)")
            conn.log_change("scratch", "2")
            conn.execute("INSERT INTO scratch VALUES (1)")  # a unique violation: the savepoint is undone
        with conn.savepoint():
            pass
        with conn.savepoint(), conn.savepoint():
            conn.execute("INSERT INTO scratch VALUES (3)")
        assert conn.changes == []

    await scratch_db.write(work)
    assert scratch_rows(db_path) == [1, 3]


async def test_a_write_that_waits_for_the_commit_still_fails_its_own_transaction_clearly(
    scratch_db: PgDatabase, db_path: str
) -> None:
    # Writes that return nothing travel with the next statement that needs an answer, or with the COMMIT:
    # their errors are still this transaction's, as ours, and their row counts are still right.
    from mcp_letta.errors import Conflict

    def fill(conn: Any) -> int:
        conn.executemany("INSERT INTO scratch VALUES (?)", [(1,), (2,), (3,)])
        return conn.execute("UPDATE scratch SET x = x + 10 WHERE x >= 2").rowcount  # type: ignore[no-any-return]

    assert await scratch_db.write(fill) == 2

    def clash(conn: Any) -> None:
        conn.execute("INSERT INTO scratch VALUES (4)")
        conn.execute("INSERT INTO scratch VALUES (1)")  # a unique violation, found at COMMIT

    with pytest.raises(Conflict, match="x = 1"):
        await scratch_db.write(clash)
    assert scratch_rows(db_path) == [1, 12, 13]  # 4 undone


async def test_connections_the_server_closed_while_idle_in_the_pool_are_not_lent_out(
    db_path: str, pg_server: PgServer
) -> None:
    # The pool checks a connection before lending it, with no round trip unless the server has spoken on it
    # while it sat idle, as it does when it closes it: after a restart, no call gets a dead connection.
    import threading

    db = PgDatabase(db_path, pool_size=3)
    await anyio.to_thread.run_sync(db.open)
    try:
        together = threading.Barrier(3)

        def hold(conn: Any) -> int:
            together.wait(30)  # three connections in use at once: the pool keeps three
            return conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[no-any-return]

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(anyio.to_thread.run_sync, db.read_sync, hold)
        await anyio.to_thread.run_sync(pg_server.restart)

        def count(conn: Any) -> int:
            return conn.execute("SELECT count(*) FROM agents").fetchone()[0]  # type: ignore[no-any-return]

        for _ in range(6):
            assert await anyio.to_thread.run_sync(db.read_sync, count) == 0
    finally:
        await anyio.to_thread.run_sync(db.close)


async def test_a_session_whose_prepared_statements_went_missing_is_replaced_not_kept(db_path: str) -> None:
    """Under heavy load psycopg once lost track of a session's prepared statements: it used one the server
    no longer had. That call fails; the connection would fail the statement every time, so it is replaced,
    and the next call works."""
    async with AgentHub(Settings(db_path=db_path, pg_pool_size=1)) as hub:
        await hub.create_agent("steady")
        for _ in range(8):  # psycopg prepares a statement after its fifth run
            assert (await hub.get_agent("steady")).name == "steady"
        with hub._store.db._pool.connection() as raw:  # the one pooled session, behind psycopg's back
            raw.pgconn.exec_(b"DEALLOCATE ALL")
        with pytest.raises(StorageUnavailable, match="prepared statement"):
            await hub.get_agent("steady")
        for _ in range(8):
            assert (await hub.get_agent("steady")).name == "steady"
