"""Runs outlive the process that started them: real ``mcp-letta`` stdio servers killed with SIGKILL in the
middle of a step, or whose input closes mid-run, and a second process on the same database that finishes
their runs. The reply arrives exactly once (the host inbox, the sending agent's history, a waiting parent)
and the agents' histories hold each step once.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from conftest import fetch_sql

from mcp_letta import AgentHub, Settings
from mcp_letta.errors import Invalid
from mcp_letta.testing import Response, ScriptedLLM

pytestmark = pytest.mark.anyio

CHECKOUT = str(Path(__file__).resolve().parent.parent)  # the server imports this checkout's mcp_letta
SAFETY_S = 60  # a safety net only: a hung server fails the test instead of hanging the suite


class StdioServer:
    """A real ``python -m mcp_letta`` stdio server, spoken to over its pipes by hand, so a test can SIGKILL it
    or close its input at any moment."""

    def __init__(self, process: Process, log_path: Path) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.log_path = log_path
        self._out = BufferedByteReceiveStream(process.stdout)
        self._next_id = 0

    @classmethod
    async def start(cls, db_path: Path, llm: ScriptedLLM, **env: str) -> StdioServer:
        """Launch a server on ``db_path`` whose agents think with ``llm``, and initialize a session."""
        environment = {
            "PATH": os.environ.get("PATH", ""), "PYTHONPATH": CHECKOUT, "MCP_LETTA_DB": str(db_path),
            "MCP_LETTA_LLM_BASE_URL": llm.base_url, "MCP_LETTA_MODEL": "scripted-model",
            "MCP_LETTA_LLM_MAX_RETRIES": "1", "MCP_LETTA_WATCH_INTERVAL": "0.05", **env,
        }  # fmt: skip
        handle, name = tempfile.mkstemp(prefix="mcp-letta-stdio-", suffix=".log")
        log_path = Path(name)
        try:
            process = await anyio.open_process([sys.executable, "-m", "mcp_letta"], env=environment, stderr=handle)
        finally:
            os.close(handle)
        server = cls(process, log_path)
        await server.request(
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
        )
        await server._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return server

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its result (notifications in between are skipped)."""
        self._next_id += 1
        await self._send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        with anyio.fail_after(SAFETY_S):
            while True:
                message = json.loads(await self._out.receive_until(b"\n", 1 << 24))
                if message.get("id") == self._next_id:
                    assert "error" not in message, message
                    return message["result"]

    def log(self) -> str:
        """What the server has logged so far (its stderr)."""
        return self.log_path.read_text()

    async def begin_call(self, tool: str, **args: Any) -> None:
        """Send a tools/call and return at once, without its answer (a host waiting on it)."""
        self._next_id += 1
        params = {"name": tool, "arguments": args}
        await self._send({"jsonrpc": "2.0", "id": self._next_id, "method": "tools/call", "params": params})

    async def answer(self) -> dict[str, Any]:
        """The structured result of the call ``begin_call`` sent (notifications before it are skipped)."""
        with anyio.fail_after(SAFETY_S):
            while True:
                message = json.loads(await self._out.receive_until(b"\n", 1 << 24))
                if message.get("id") == self._next_id:
                    assert "error" not in message and not message["result"].get("isError"), message
                    return message["result"]["structuredContent"]

    async def call(self, tool: str, **args: Any) -> dict[str, Any]:
        """Call a tool that must succeed; its structured result."""
        result = await self.request("tools/call", {"name": tool, "arguments": args})
        assert not result.get("isError"), result
        return result["structuredContent"]

    async def kill(self) -> None:
        """SIGKILL: no clean shutdown, nothing handed back."""
        self.process.kill()
        await self.process.wait()

    async def close_input(self) -> int:
        """Close the server's stdin, as a host does when its window closes; its exit code."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with anyio.fail_after(SAFETY_S):
            return await self.process.wait()

    async def aclose(self) -> None:
        """End the server if it is still running."""
        try:
            if self.process.returncode is None:
                await self.close_input()
        finally:  # one that does not end (a failing test) must not outlive the test
            if self.process.returncode is None:
                await self.kill()
            self.log_path.unlink(missing_ok=True)
        await self.process.aclose()


def run_row(db_path: Path, run_id: str) -> tuple[str, int]:
    """(status, resumes) of a run as stored, read without starting anything that would resume it."""
    [row] = fetch_sql(db_path, "SELECT status, resumes FROM runs WHERE id = ?", (run_id,))
    return row


async def make_agents(settings: Settings, *names: str, **options: Any) -> None:
    async with AgentHub(settings) as hub:
        for name in names:
            await hub.create_agent(name, persona=f"{name} persona", **options.get(name, {}))


async def finish_with_a_second_server(db_path: Path, llm: ScriptedLLM, run_id: str) -> tuple[dict, list[dict]]:
    """A second server on the same database: the run once finished, and what check_replies hands out
    (then checked to be empty: a reply is read once)."""
    second = await StdioServer.start(db_path, llm)
    try:
        done = await second.call("get_run", run_id=run_id, wait_s=30)
        replies = (await second.call("check_replies"))["runs"]
        assert (await second.call("check_replies"))["count"] == 0
    finally:
        await second.aclose()
    return done, replies


# -- the host's async message ----------------------------------------------------------------------------
async def test_a_run_killed_while_the_llm_holds_its_request_is_resumed_and_replies_once(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    await make_agents(llm_settings, "researcher")
    scripted_llm.on("find the answer", Response(content="never delivered", delay_s=SAFETY_S), where="any")
    scripted_llm.reply("forty-two")  # the request sent again by the second process
    first = await StdioServer.start(db_path, scripted_llm)
    try:
        sent = await first.call("send_message_to_agent_async", agent="researcher", message="find the answer")
        await scripted_llm.wait_for_requests_async(1, within_s=SAFETY_S)
        await first.kill()
    finally:
        await first.aclose()
    assert run_row(db_path, sent["run_id"]) == ("running", 0)  # as the killed process left it
    done, replies = await finish_with_a_second_server(db_path, scripted_llm, sent["run_id"])
    assert (done["status"], done["reply"]) == ("completed", "forty-two")
    assert [(r["run_id"], r["reply"]) for r in replies] == [(sent["run_id"], "forty-two")]
    async with AgentHub(llm_settings) as hub:
        history = await hub.get_messages("researcher")
        run = await hub.get_run(sent["run_id"])
    assert [(m.role, m.content) for m in history] == [("user", "find the answer"), ("assistant", "forty-two")]
    assert (run.resumes, len(run.steps)) == (1, 1)
    first_request, resent = (r.body["messages"] for r in scripted_llm.requests)
    assert resent[1:] == first_request[1:]  # the request in flight sent again: the same history, no input twice


async def test_closing_stdin_mid_run_leaves_the_run_queued_for_the_next_process(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    await make_agents(llm_settings, "researcher")
    scripted_llm.on("find the answer", Response(content="never delivered", delay_s=SAFETY_S), where="any")
    scripted_llm.reply("forty-two")
    first = await StdioServer.start(db_path, scripted_llm, MCP_LETTA_SHUTDOWN_GRACE_S="0.2")
    try:
        sent = await first.call("send_message_to_agent_async", agent="researcher", message="find the answer")
        await scripted_llm.wait_for_requests_async(1, within_s=SAFETY_S)
        assert await first.close_input() == 0
    finally:
        await first.aclose()
    assert run_row(db_path, sent["run_id"]) == ("queued", 1)  # handed back, not interrupted
    done, replies = await finish_with_a_second_server(db_path, scripted_llm, sent["run_id"])
    assert (done["status"], done["reply"]) == ("completed", "forty-two")
    assert [r["reply"] for r in replies] == ["forty-two"]
    async with AgentHub(llm_settings) as hub:
        history = await hub.get_messages("researcher")
    assert [(m.role, m.content) for m in history] == [("user", "find the answer"), ("assistant", "forty-two")]


async def test_closing_stdin_gives_the_run_in_flight_its_grace_period_and_starts_nothing_new(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    await make_agents(llm_settings, "researcher")
    scripted_llm.reply("forty-two", delay_s=1.0)  # answered while the server winds down
    first = await StdioServer.start(db_path, scripted_llm, MCP_LETTA_SHUTDOWN_GRACE_S=str(SAFETY_S))
    try:
        sent = await first.call("send_message_to_agent_async", agent="researcher", message="find the answer")
        later = await first.call("send_message_to_agent_async", agent="researcher", message="and one more")
        await scripted_llm.wait_for_requests_async(1, within_s=SAFETY_S)
        assert await first.close_input() == 0
    finally:
        await first.aclose()
    assert run_row(db_path, sent["run_id"]) == ("completed", 0)  # finished by the process that started it
    assert run_row(db_path, later["run_id"]) == ("queued", 0)  # not started while winding down
    assert len(scripted_llm.requests) == 1
    scripted_llm.reply("that too")
    async with AgentHub(llm_settings) as hub:  # the next process starts it
        done = await hub.get_run(later["run_id"], wait_s=30)
        replies = await hub.check_replies()
    assert (done.status, done.reply, done.resumes) == ("completed", "that too", 0)
    assert [(r.id, r.reply) for r in replies] == [(sent["run_id"], "forty-two"), (later["run_id"], "that too")]


async def test_sigterm_ends_the_grace_period_and_hands_the_run_back(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    await make_agents(llm_settings, "researcher")
    scripted_llm.on("find the answer", Response(content="never delivered", delay_s=SAFETY_S), where="any")
    scripted_llm.reply("forty-two")
    first = await StdioServer.start(db_path, scripted_llm, MCP_LETTA_SHUTDOWN_GRACE_S="3600")
    try:
        sent = await first.call("send_message_to_agent_async", agent="researcher", message="find the answer")
        await scripted_llm.wait_for_requests_async(1, within_s=SAFETY_S)
        assert first.process.stdin is not None
        await first.process.stdin.aclose()  # the window closed: the grace period starts...
        with anyio.fail_after(SAFETY_S):
            while "finishing the runs in flight" not in first.log():  # noqa: ASYNC110
                await anyio.sleep(0.05)
        first.process.terminate()  # ...and the host will not wait for it
        with anyio.fail_after(SAFETY_S):
            assert await first.process.wait() == 0
    finally:
        await first.aclose()
    assert run_row(db_path, sent["run_id"]) == ("queued", 1)
    done, replies = await finish_with_a_second_server(db_path, scripted_llm, sent["run_id"])
    assert (done["status"], [r["reply"] for r in replies]) == ("completed", ["forty-two"])


@pytest.mark.parametrize("stop", ["window closed", "SIGTERM"])
async def test_a_run_the_host_waits_on_is_handed_back_not_cancelled_when_its_server_stops(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path, stop: str
) -> None:
    """The host waits on send_message when the server stops: the run goes back to the queue for the next
    process, as every run in flight does. The server stopping is not the caller cancelling."""
    await make_agents(llm_settings, "researcher")
    scripted_llm.on("find the answer", Response(content="never delivered", delay_s=SAFETY_S), where="any")
    scripted_llm.reply("forty-two")
    first = await StdioServer.start(db_path, scripted_llm, MCP_LETTA_SHUTDOWN_GRACE_S="0.2")
    try:
        await first.begin_call("send_message", agent="researcher", message="find the answer", timeout_s=600)
        await scripted_llm.wait_for_requests_async(1, within_s=SAFETY_S)
        if stop == "SIGTERM":  # a host that signals before it closes our input, or `kill` from a terminal
            first.process.terminate()
        else:  # the input ends; a host that still reads our output (a pipe) gets the answer too
            assert first.process.stdin is not None
            await first.process.stdin.aclose()
        answer = await first.answer()  # the call it waits on is answered: its run and how it stands
        with anyio.fail_after(SAFETY_S):
            assert await first.process.wait() == 0  # and the process ends (after SIGTERM, though its input is open)
        assert (answer["status"], answer["run_id"]) == ("pending", fetch_sql(db_path, "SELECT id FROM runs")[0][0])
    finally:
        await first.aclose()
    [(run_id,)] = fetch_sql(db_path, "SELECT id FROM runs")
    assert run_row(db_path, run_id) == ("queued", 1)  # handed back, to be resumed
    done, _ = await finish_with_a_second_server(db_path, scripted_llm, run_id)
    assert (done["status"], done["reply"]) == ("completed", "forty-two")


async def test_the_calls_of_a_piped_batch_are_answered_though_its_input_ends_at_once(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    """`mcp-letta < batch.jsonl`: the input ends right after the last call. Its calls are answered (they were
    cut off with "Connection closed" though they had committed), within the grace period."""
    await make_agents(llm_settings, "researcher")
    scripted_llm.reply("forty-two", delay_s=1.0)
    first = await StdioServer.start(db_path, scripted_llm, MCP_LETTA_SHUTDOWN_GRACE_S=str(SAFETY_S))
    try:
        await first.begin_call("create_agent", name="writer")
        created = first._next_id
        await first.begin_call("send_message", agent="researcher", message="find the answer")
        await scripted_llm.wait_for_requests_async(1, within_s=SAFETY_S)  # (a run not started yet stays queued)
        assert first.process.stdin is not None
        await first.process.stdin.aclose()
        answers: dict[int, Any] = {}
        with anyio.fail_after(SAFETY_S):
            while len(answers) < 2:
                message = json.loads(await first._out.receive_until(b"\n", 1 << 24))
                if "id" in message:
                    answers[message["id"]] = message
            assert await first.process.wait() == 0
    finally:
        await first.aclose()
    assert not answers[created]["result"].get("isError"), answers[created]
    sent = answers[first._next_id]["result"]
    assert not sent.get("isError") and sent["structuredContent"]["reply"] == "forty-two", sent
    assert [name for (name,) in fetch_sql(db_path, "SELECT name FROM agents ORDER BY name")] == ["researcher", "writer"]


async def test_a_server_already_open_takes_over_the_run_of_a_killed_one(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    await make_agents(llm_settings, "researcher")
    scripted_llm.on("find the answer", Response(content="never delivered", delay_s=SAFETY_S), where="any")
    scripted_llm.reply("forty-two")
    first = await StdioServer.start(db_path, scripted_llm)
    other = await StdioServer.start(db_path, scripted_llm)  # another window, open all along
    try:
        sent = await first.call("send_message_to_agent_async", agent="researcher", message="find the answer")
        await scripted_llm.wait_for_requests_async(1, within_s=SAFETY_S)
        await first.kill()
        done = await other.call("get_run", run_id=sent["run_id"], wait_s=30)  # its heartbeat finds the dead one
        replies = (await other.call("check_replies"))["runs"]
    finally:
        await first.aclose()
        await other.aclose()
    assert (done["status"], done["reply"]) == ("completed", "forty-two")
    assert [r["reply"] for r in replies] == ["forty-two"]
    assert run_row(db_path, sent["run_id"]) == ("completed", 1)


# -- agents messaging agents ------------------------------------------------------------------------------
async def test_a_parent_killed_while_it_waits_on_a_child_waits_on_the_same_child_when_resumed(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    await make_agents(llm_settings, "worker")
    await make_agents(llm_settings, "boss", boss={"agent_tools": ["worker"]})
    scripted_llm.on(
        "boss persona",
        Response(calls=[("memory_insert", {"label": "human", "new_string": "asked the worker"}),
                        ("ask_worker", {"message": "dig here"})]),
        Response(content="the worker dug"),
    )  # fmt: skip
    scripted_llm.on("worker persona", Response(content="never delivered", delay_s=SAFETY_S), Response(content="dug"))
    first = await StdioServer.start(db_path, scripted_llm)
    try:
        sent = await first.call("send_message_to_agent_async", agent="boss", message="get it dug")
        await scripted_llm.wait_for_requests_async(2, within_s=SAFETY_S)  # the boss's step, the worker's
        await first.kill()
    finally:
        await first.aclose()
    done, replies = await finish_with_a_second_server(db_path, scripted_llm, sent["run_id"])
    assert (done["status"], done["reply"]) == ("completed", "the worker dug")
    assert [r["reply"] for r in replies] == ["the worker dug"]
    async with AgentHub(llm_settings) as hub:
        [child] = await hub.list_runs("worker")
        boss = [(m.role, m.name or m.content) for m in await hub.get_messages("boss")]
        worker = [(m.role, m.content) for m in await hub.get_messages("worker")]
        human = (await hub.read_block("human", agent="boss")).value
        parent = await hub.get_run(sent["run_id"])
    assert (child.status, child.reply, child.parent_run_id, child.resumes) == ("completed", "dug", parent.id, 1)
    assert boss == [
        ("user", "get it dug"), ("assistant", ""), ("tool", "memory_insert"), ("tool", "ask_worker"),
        ("assistant", "the worker dug"),
    ]  # fmt: skip
    assert [role for role, _ in worker] == ["system", "assistant"] and worker[1][1] == "dug"
    assert human == "asked the worker"  # the store-only call committed before the kill is not repeated
    assert [[c.name for c in s.tool_calls] for s in parent.steps] == [["memory_insert", "ask_worker"], []]
    assert all(c.ok for s in parent.steps for c in s.tool_calls)
    boss_requests = [r for r in scripted_llm.requests if "boss persona" in r.system]
    assert len(boss_requests) == 2  # its tool step was committed: it was finished, not asked again


async def test_an_async_reply_whose_run_was_killed_reaches_the_sender_once(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    await make_agents(llm_settings, "worker")
    await make_agents(llm_settings, "boss", boss={"include_multi_agent_tools": True})
    scripted_llm.on(
        "boss persona",
        Response(calls=[("send_message_to_agent_async", {"other_agent_id": "worker", "message": "dig here"})]),
        Response(content="sent it"),
        Response(content="thanks, worker"),  # the boss's run for the worker's reply
    )
    scripted_llm.on("worker persona", Response(content="never delivered", delay_s=SAFETY_S), Response(content="dug"))
    first = await StdioServer.start(db_path, scripted_llm)
    try:
        asked = await first.call("send_message", agent="boss", message="get it dug", timeout_s=30)
        assert (asked["status"], asked["reply"]) == ("completed", "sent it")
        await scripted_llm.wait_for_requests_async(3, within_s=SAFETY_S)  # boss twice, then the worker
        await first.kill()
    finally:
        await first.aclose()
    async with AgentHub(llm_settings) as hub:
        [child] = await hub.list_runs("worker")
        child = await hub.get_run(child.id, wait_s=30)
        [notice_run, _] = await hub.list_runs("boss")
        notice_run = await hub.get_run(notice_run.id, wait_s=30)
        boss = [m.content for m in await hub.get_messages("boss", limit=100)]
        worker = [(m.role, m.content) for m in await hub.get_messages("worker")]
    assert (child.status, child.reply, child.resumes) == ("completed", "dug", 1)
    assert (notice_run.status, notice_run.reply) == ("completed", "thanks, worker")
    notices = [text for text in boss if text.startswith("[Reply from agent 'worker'")]
    assert len(notices) == 1 and notices[0].endswith("dug")
    assert [role for role, _ in worker] == ["system", "assistant"]


async def test_a_broadcast_resumed_after_its_process_closed_sends_to_no_recipient_twice(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    broadcast = {"message": "report", "match_all": ["team"], "match_some": []}
    scripted_llm.on(
        "boss persona",
        Response(calls=[("send_message_to_agents_matching_tags", broadcast)]),
        Response(content="everyone reported"),
    )
    scripted_llm.on("ann persona", Response(content="ann is fine"))
    scripted_llm.on("ben persona", Response(content="never delivered", delay_s=SAFETY_S), Response(content="ben too"))
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("ann", persona="ann persona", tags=["team"])
        await hub.create_agent("ben", persona="ben persona", tags=["team"])
        await hub.create_agent("boss", persona="boss persona", include_multi_agent_tools=True)
        sent = await hub.send_message("boss", "ask the team")
        await scripted_llm.wait_for_requests_async(3)  # the boss's step, then ann's and ben's requests
        [ann_run] = await hub.list_runs("ann")
        assert (await hub.get_run(ann_run.id, wait_s=10)).reply == "ann is fine"
    async with AgentHub(llm_settings) as hub:  # the boss's run and ben's were handed back: resumed here
        done = await hub.get_run(sent.id, wait_s=30)
        ann_runs, ben_runs = await hub.list_runs("ann"), await hub.list_runs("ben")
        [result] = [m.content for m in await hub.get_messages("boss") if m.role == "tool"]
    assert (done.status, done.reply, done.resumes) == ("completed", "everyone reported", 1)
    assert [r.id for r in ann_runs] == [ann_run.id]  # answered before the close: waited on, not sent again
    assert [(r.reply, r.resumes) for r in ben_runs] == [("ben too", 1)]
    assert "ann is fine" in result and "ben too" in result
    assert len([r for r in scripted_llm.requests if "boss persona" in r.system]) == 2


def test_the_grace_period_setting_is_read_and_checked() -> None:
    assert Settings.from_env({}).shutdown_grace_s == 10.0
    assert Settings.from_env({"MCP_LETTA_SHUTDOWN_GRACE_S": "2.5"}).shutdown_grace_s == 2.5
    for bad, said in (("-1", "MCP_LETTA_SHUTDOWN_GRACE_S=-1 is out of range: use 0 to 3600 seconds, e.g. 10"),
                      ("soon", "MCP_LETTA_SHUTDOWN_GRACE_S='soon' is not a number: set it to e.g. 10.0")):  # fmt: skip
        with pytest.raises(Invalid) as caught:
            Settings.from_env({"MCP_LETTA_SHUTDOWN_GRACE_S": bad})
        assert caught.value.message == said
