"""The installed ``mcp-letta`` console script as a real stdio subprocess, the way MCP hosts launch it."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import Client, StdioServerParameters

from mcp_letta import AgentHub, Settings
from mcp_letta.server.app import freeze_startup_heap
from mcp_letta.server.stdio import HostLink

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

SCRIPT = Path(sys.executable).parent / "mcp-letta"
CHECKOUT = str(Path(__file__).resolve().parent.parent)  # the server imports this checkout's mcp_letta


def server_params(db_path: Path) -> StdioServerParameters:
    env = {"MCP_LETTA_DB": str(db_path), "MCP_LETTA_WATCH_INTERVAL": "0.05", "PATH": os.environ.get("PATH", ""),
           "PYTHONPATH": CHECKOUT}  # fmt: skip
    return StdioServerParameters(command=str(SCRIPT), args=[], env=env)


async def test_console_script_serves_tools_over_stdio(db_path: Path) -> None:
    assert SCRIPT.exists(), "install the package (pip install -e .) so the console script exists"
    async with Client(server_params(db_path), mode="legacy") as c:
        assert c.server_capabilities.tools.list_changed is True
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"create_agent", "write_block", "archival_memory_search"} <= names
        created = await c.call_tool("create_agent", {"name": "stdio_agent", "persona": "over a pipe"})
        assert not created.is_error
        appended = await c.call_tool("append_to_block", {"block": "persona", "agent": "stdio_agent", "text": "hi"})
        assert appended.structured_content["value"] == "over a pipe\nhi"
    async with AgentHub(Settings(db_path=db_path)) as hub:  # the write is durable once acknowledged
        assert (await hub.read_block("persona", agent="stdio_agent")).version == 2


async def test_stdio_subscriber_hears_writes_from_this_process(db_path: Path) -> None:
    got = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification) and str(message.params.uri) == "letta://blocks/log":
            got.set()

    async with AgentHub(Settings(db_path=db_path)) as hub:
        await hub.create_block("log", "")
        async with Client(server_params(db_path), mode="legacy", message_handler=on_message) as c:
            await c.subscribe_resource("letta://blocks/log")
            await hub.append_to_block("log", "from the test process")
            with anyio.fail_after(15):
                await got.wait()


def test_stdout_carries_only_protocol_messages(db_path: Path) -> None:
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "get_agent", "arguments": {"agent": "x"}}},
    ]  # fmt: skip
    proc = subprocess.Popen(
        [str(SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MCP_LETTA_DB": str(db_path)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
    proc.stdin.flush()
    watchdog = threading.Timer(60, proc.kill)  # a hung server fails the test instead of hanging it
    watchdog.start()
    seen: list[str] = []
    while not any('"id":3' in line.replace(" ", "") for line in seen):  # hosts keep stdin open while waiting
        line = proc.stdout.readline()
        assert line, "the server closed stdout before answering"
        seen.append(line)
    _, stderr = proc.communicate(timeout=60)
    watchdog.cancel()
    lines = [line for line in seen if line.strip()]
    messages = [json.loads(line) for line in lines]  # every line is JSON
    assert all(m.get("jsonrpc") == "2.0" for m in messages)
    assert {m.get("id") for m in messages} >= {1, 2, 3}
    error = next(m for m in messages if m.get("id") == 3)["result"]
    assert error["isError"] is True and "not found" in error["content"][0]["text"]
    assert "input closed: finishing the runs in flight" in stderr  # logs go to stderr


def test_freezing_the_startup_heap_takes_what_exists_out_of_full_collections() -> None:
    before = gc.get_freeze_count()
    kept = [{"a": i} for i in range(1000)]  # long-lived objects made at start-up
    try:
        frozen = freeze_startup_heap()
        assert frozen >= before + len(kept)
        walked = {id(o) for o in gc.get_objects()}  # what a full collection goes through
        assert not any(id(k) in walked for k in kept)
    finally:
        gc.unfreeze()  # leave the test process as it was


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_ends_a_server_whose_host_keeps_its_input_open(db_path: Path, sent: int, code: int) -> None:
    """`kill` (or Ctrl-C where it runs in a terminal) ends the server though its input stays open: nothing waits
    on a line from the host that will never come."""
    proc = subprocess.Popen(
        [str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "MCP_LETTA_DB": str(db_path), "PYTHONPATH": CHECKOUT},
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        client = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": client}
        proc.stdin.write(json.dumps(initialize) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1  # serving, its input open
        proc.send_signal(sent)
        assert proc.wait(timeout=60) == code
    finally:
        proc.kill()
        proc.stdin.close()


def test_a_host_that_stops_reading_our_output_ends_the_server_quietly(db_path: Path) -> None:
    """A host that closes our output but not our input has gone away all the same: the server ends as when its
    window closes, with a line in the log, not a traceback."""
    proc = subprocess.Popen(
        [str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MCP_LETTA_DB": str(db_path), "PYTHONPATH": CHECKOUT},
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        client = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": client}) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1
        proc.stdout.close()
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}) + "\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
        log = proc.stderr.read()
    finally:
        proc.kill()
        proc.stdin.close()
    assert "the host stopped reading our output" in log and "Traceback" not in log


async def test_a_stopping_server_does_not_wait_for_answers_to_requests_the_host_cancelled() -> None:
    """At SIGTERM the server waits until every request read has its answer on the way; a request the host
    cancelled gets none (nor does a notification naming a request that never was), so it is not waited on."""
    host = HostLink()
    for line in (
        '{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}',
        '{"jsonrpc": "2.0", "id": "call-2", "method": "tools/call", "params": {"name": "send_message"}}',
        '{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "call-2"}}',
        '{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"not": "an id"}}}',
    ):
        host.asked(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    host.answered(types.JSONRPCResponse(jsonrpc="2.0", id=1, result={"tools": []}))
    with anyio.fail_after(60):
        await host.answers_sent(within_s=3600)


async def test_a_stopping_server_waiting_for_answers_sees_a_request_read_meanwhile_answered() -> None:
    """The input is still read while a stopping server waits for the answers: a request read meanwhile is
    waited on too, and the wait ends once it is answered as well."""
    host = HostLink()
    host.asked(types.JSONRPCRequest(jsonrpc="2.0", id=1, method="ping"))
    ended = anyio.Event()

    async def wait() -> None:
        await host.answers_sent(within_s=3600)
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        host.asked(types.JSONRPCRequest(jsonrpc="2.0", id=2, method="ping"))
        host.answered(types.JSONRPCResponse(jsonrpc="2.0", id=1, result={}))
        await anyio.wait_all_tasks_blocked()
        assert not ended.is_set()  # request 2 still has no answer
        host.answered(types.JSONRPCResponse(jsonrpc="2.0", id=2, result={}))
        with anyio.fail_after(60):
            await ended.wait()
