"""One MCP tool per agent and the messaging tools, through a real MCP client and the scripted loopback LLM."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from conftest import Gate, client
from mcp import Client

from mcp_letta import AgentHub
from mcp_letta.server.app import LettaServer, build_server
from mcp_letta.testing import ScriptedLLM

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture
def server(llm_server: LettaServer) -> LettaServer:
    return llm_server


async def tool_names(c: Client) -> set[str]:
    return {t.name for t in (await c.list_tools()).tools}


async def test_a_reply_flows_through_the_agents_own_tool(
    server: LettaServer, mode: str, scripted_llm: ScriptedLLM
) -> None:
    await server.hub.create_agent("alice", description="Knows the team's plans", persona="I am Alice.")
    scripted_llm.on("I am Alice.", "Hello from Alice")
    await server.agent_tools.sync()
    async with client(server, mode) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert "Knows the team's plans" in tools["ask_alice"].description
        assert set(tools["ask_alice"].input_schema["properties"]) == {"message", "timeout_s"}
        result = await c.call_tool("ask_alice", {"message": "hi"})
    assert not result.is_error, result.content
    reply = result.structured_content
    assert (reply["agent"], reply["status"], reply["reply"]) == ("alice", "completed", "Hello from Alice")
    assert reply["steps"] == 1
    assert reply["usage"]["total_tokens"] > 0
    assert scripted_llm.requests[-1].body["messages"][-1]["content"] == "hi"


async def test_tools_follow_agents_created_renamed_and_deleted_in_both_eras(server: LettaServer) -> None:
    legacy_changes = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            legacy_changes.set()

    async with Client(server.mcp, mode="legacy", message_handler=on_message) as legacy, Client(server.mcp) as modern:
        async with modern.listen(tools_list_changed=True) as sub:
            await legacy.list_tools()  # the connection is remembered from its first request
            await server.hub.create_agent("bob")
            with anyio.fail_after(10):
                await legacy_changes.wait()
                await sub.__anext__()
            assert "ask_bob" in await tool_names(legacy)
            assert "ask_bob" in await tool_names(modern)
            legacy_changes = anyio.Event()
            await server.hub.update_agent("bob", name="robert")
            with anyio.fail_after(10):
                await legacy_changes.wait()
            names = await tool_names(legacy)
            assert "ask_robert" in names and "ask_bob" not in names
            legacy_changes = anyio.Event()
            await server.hub.delete_agent("robert")
            with anyio.fail_after(10):
                await legacy_changes.wait()
            assert not any(n.startswith("ask_") for n in await tool_names(modern))


CREATOR = """
import anyio, sys
from mcp_letta import AgentHub, Settings
async def main():
    async with AgentHub(Settings(db_path=sys.argv[1])) as hub:
        await hub.create_agent("from_afar", description="made by another process")
anyio.run(main)
"""


async def test_an_agent_created_by_another_process_gets_a_tool(server: LettaServer, db_path: Path) -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with Client(server.mcp, mode="legacy", message_handler=on_message) as c:
        await c.list_tools()
        done = await anyio.run_process([sys.executable, "-c", CREATOR, str(db_path)], check=False)
        assert done.returncode == 0, done.stderr
        with anyio.fail_after(10):
            await changed.wait()
        assert "ask_from_afar" in await tool_names(c)


async def test_a_slow_run_returns_pending_and_get_run_fetches_the_reply(
    server: LettaServer, mode: str, gate: Gate
) -> None:
    await server.hub.create_agent("slow")
    await server.agent_tools.sync()
    async with client(server, mode) as c:
        first = await c.call_tool("ask_slow", {"message": "take your time", "timeout_s": 0.2})
        pending = first.structured_content
        assert pending["status"] == "pending" and pending["reply"] is None
        gate.open()
        fetched = await c.call_tool("get_run", {"run_id": pending["run_id"], "wait_s": 30})
    assert fetched.structured_content["status"] == "completed"
    assert fetched.structured_content["reply"] == "released"


async def test_send_message_reaches_any_agent_and_reports_progress(
    server: LettaServer, mode: str, scripted_llm: ScriptedLLM
) -> None:
    await server.hub.create_agent("worker", persona="worker persona")
    scripted_llm.on("worker persona").tool_call("memory_insert", {"label": "human", "new_string": "likes tea"})
    scripted_llm.on("worker persona", "noted")
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async with client(server, mode) as c:
        result = await c.call_tool(
            "send_message", {"agent": "worker", "message": "I like tea"}, progress_callback=on_progress
        )
    reply = result.structured_content
    assert reply["status"] == "completed" and reply["reply"] == "noted"
    assert reply["tool_calls"] == [{"name": "memory_insert", "ok": True}]
    assert progress[0] == "worker: memory_insert"
    assert (await server.hub.read_block("human", agent="worker")).value.endswith("likes tea")


async def test_cancelling_the_call_cancels_the_run(server: LettaServer, gate: Gate) -> None:
    await server.hub.create_agent("cancel_me")
    await server.agent_tools.sync()
    async with Client(server.mcp, mode="legacy") as c:
        with anyio.move_on_after(0.5):
            await c.call_tool("ask_cancel_me", {"message": "never mind"})
        (run,) = await server.hub.list_runs("cancel_me")
        ended = await server.hub.wait_run(run.id, wait_s=10)
    gate.open()
    assert ended.status == "cancelled" and ended.reply is None


async def test_bad_agent_and_run_references_are_clear_errors(server: LettaServer, mode: str) -> None:
    await server.hub.create_agent("helper")
    async with client(server, mode) as c:
        missing = await c.call_tool("send_message", {"agent": "helpr", "message": "x"})
        assert missing.is_error and "did you mean 'helper'" in missing.content[0].text
        unknown = await c.call_tool("get_run", {"run_id": "run-nope"})
        assert unknown.is_error and "run-nope" in unknown.content[0].text


async def test_expose_tags_and_the_cap_limit_which_agents_get_tools(llm_hub: AgentHub) -> None:
    settings = llm_hub.settings.with_overrides(expose_tags=("public",), max_agent_tools=2)
    for name, tags in [("a1", ["public"]), ("a2", ["public"]), ("a3", ["public"]), ("hidden", [])]:
        await llm_hub.create_agent(name, tags=tags)
    server = build_server(llm_hub, settings)
    async with server.running(), Client(server.mcp, mode="legacy") as c:
        assert sorted(n for n in await tool_names(c) if n.startswith("ask_")) == ["ask_a1", "ask_a2"]
        assert "send_message" in await tool_names(c)  # every agent stays reachable


async def test_core_tier_keeps_the_structured_reply_without_a_schema_per_agent(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("lean", persona="lean persona")
    scripted_llm.on("lean persona", "short answer")
    server = build_server(llm_hub, llm_hub.settings.with_overrides(tools="core"))
    async with server.running(), Client(server.mcp, mode="legacy") as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert tools["ask_lean"].output_schema is None
        assert "create_agent" not in tools and {"list_agents", "send_message", "get_run", "read_block"} <= set(tools)
        result = await c.call_tool("ask_lean", {"message": "hi"})
    assert result.structured_content["reply"] == "short answer"
    assert result.structured_content["status"] == "completed"


# -- a message's outcome: failed, cancelled and interrupted runs are tool errors ---------------------

WAITING_TOOLS = ("ask_target", "send_message", "send_message_to_agent_and_wait_for_reply")


def message_args(tool: str, agent: str, **args: Any) -> dict[str, Any]:
    """The arguments of ``tool`` for a message to ``agent`` (an ask_<agent> tool names it already)."""
    return {"message": "go", **args} if tool.startswith("ask_") else {"agent": agent, "message": "go", **args}


async def test_a_failed_run_is_a_tool_error_with_its_reply_attached(server: LettaServer, mode: str) -> None:
    await server.hub.create_agent("target", persona="target persona")  # unscripted: the LLM answers HTTP 500
    await server.agent_tools.sync()
    async with client(server, mode) as c:
        schemas = {t.name: t.output_schema for t in (await c.list_tools()).tools}
        results = {tool: await c.call_tool(tool, message_args(tool, "target")) for tool in WAITING_TOOLS}
        (run,) = await server.hub.list_runs("target", limit=1)
        looked_up = await c.call_tool("get_run", {"run_id": run.id})
    for tool, result in results.items():
        assert result.is_error, tool
        assert schemas[tool] is not None and "status" in schemas[tool]["properties"]
        reply = result.structured_content
        assert (reply["agent"], reply["status"], reply["reply"]) == ("target", "failed", None), tool
        assert "HTTP 500" in reply["error"] and '"status": "failed"' in result.content[0].text
    # get_run reads a run's record: the read succeeds, and the failure is in its status.
    assert not looked_up.is_error and looked_up.structured_content["status"] == "failed"


async def test_a_run_still_pending_after_the_wait_is_not_an_error(server: LettaServer, mode: str, gate: Gate) -> None:
    await server.hub.create_agent("target", persona="target persona")
    await server.agent_tools.sync()
    async with client(server, mode) as c:
        results = {t: await c.call_tool(t, message_args(t, "target", timeout_s=0)) for t in WAITING_TOOLS}
        listed = await c.call_tool("list_runs", {"status": "pending"})  # the word the replies use filters too
        assert {r["run_id"] for r in listed.structured_content["runs"]} == {
            r.structured_content["run_id"] for r in results.values()
        }
        assert (await c.call_tool("list_runs", {"status": "completed"})).structured_content["runs"] == []
    gate.open()
    for tool, result in results.items():
        assert not result.is_error, tool
        assert result.structured_content["status"] == "pending"
        assert (await server.hub.wait_run(result.structured_content["run_id"], wait_s=30)).status == "completed"


async def test_a_run_cancelled_while_the_host_waits_is_a_tool_error(
    server: LettaServer, mode: str, gate: Gate, scripted_llm: ScriptedLLM
) -> None:
    await server.hub.create_agent("slow", persona="slow persona")
    results: list[types.CallToolResult] = []
    async with client(server, mode) as c, anyio.create_task_group() as tg:

        async def wait_for_reply() -> None:
            results.append(await c.call_tool("send_message", {"agent": "slow", "message": "go", "timeout_s": 60}))

        tg.start_soon(wait_for_reply)
        await scripted_llm.wait_for_requests_async(1)  # the run is at its LLM call, held by the gate
        (run,) = await server.hub.list_runs("slow")
        await server.hub.cancel_run(run.id)
        gate.open()
    [result] = results
    assert result.is_error
    assert (result.structured_content["status"], result.structured_content["run_id"]) == ("cancelled", run.id)


async def test_the_core_tier_agent_tool_reports_a_failed_run_as_an_error(llm_hub: AgentHub) -> None:
    await llm_hub.create_agent("broken", persona="broken persona")
    server = build_server(llm_hub, llm_hub.settings.with_overrides(tools="core"))
    async with server.running(), Client(server.mcp, mode="legacy") as c:
        result = await c.call_tool("ask_broken", {"message": "go"})
    assert result.is_error
    assert result.structured_content["status"] == "failed" and "HTTP 500" in result.structured_content["error"]
