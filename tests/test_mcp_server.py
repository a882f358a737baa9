"""The MCP surface through a real in-process ``Client``, in both protocol eras (2025-11-25 and 2026-07-28)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from conftest import client, dump, ok
from mcp import Client

from mcp_letta import AgentHub
from mcp_letta.server.app import LettaServer

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

BUILTIN_TOOLS = {
    "list_agents", "create_agent", "get_agent", "update_agent", "delete_agent", "create_block", "list_blocks",
    "read_block", "write_block", "append_to_block", "replace_in_block", "attach_block", "detach_block",
    "delete_block", "block_history", "update_block", "archival_memory_insert", "archival_memory_search",
    "archival_memory_list", "archival_memory_delete", "get_messages",
    "conversation_search", "send_message", "get_run", "list_runs", "cancel_run",
    "send_message_to_agent_and_wait_for_reply", "send_message_to_agent_async", "send_message_to_agents_matching_tags",
    "send_message_to_agents_matching_all_tags", "check_replies", "run_pipeline", "get_metrics", "attach_agent_tool",
    "detach_agent_tool",
}  # fmt: skip
# The MCP Apps views (tests/test_apps.py): words for clients without the extension, so no output schema.
VIEW_TOOLS = {"show_traffic", "show_agent", "show_run"}


async def fails(c: Client, tool: str, **args: Any) -> str:
    result = await c.call_tool(tool, args)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    return result.content[0].text


async def test_tools_are_documented_typed_and_annotated(server: LettaServer, mode: str) -> None:
    async with client(server, mode) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == BUILTIN_TOOLS | VIEW_TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 20, tool.name
        assert (tool.output_schema is None) == (tool.name in VIEW_TOOLS), tool.name
        assert "title" not in str(tool.input_schema), tool.name  # compacted: no pydantic titles
    # Hints equal to the spec's defaults (readOnly false, destructive true, idempotent false, openWorld true)
    # are left out; what is sent must say the truth.
    assert tools["read_block"].annotations.read_only_hint is True
    assert tools["read_block"].annotations.open_world_hint is False
    assert tools["delete_agent"].annotations.destructive_hint in (True, None)
    assert tools["write_block"].annotations.idempotent_hint is True
    assert tools["append_to_block"].annotations.idempotent_hint in (False, None)
    assert tools["append_to_block"].annotations.destructive_hint is False


async def test_handshake_advertises_list_changed_and_subscribe(server: LettaServer) -> None:
    async with Client(server.mcp, mode="legacy") as c:
        caps = c.server_capabilities
        assert caps.tools.list_changed is True
        assert caps.resources.subscribe is True


async def test_agents_and_shared_blocks_through_mcp(server: LettaServer, mode: str) -> None:
    async with client(server, mode) as c:
        team = await ok(c, "create_block", label="team", value="Team notes.", description="Shared notes")
        alice = await ok(c, "create_agent", name="alice", persona="I am Alice", shared_blocks=["team"], tags=["w"])
        await ok(c, "create_agent", name="bob", shared_blocks=[team["id"]], tags=["w", "eu"])
        assert [b["label"] for b in alice["blocks"]] == ["team", "persona", "human"]
        listed = await ok(c, "list_agents", tags=["w", "eu"], match_all_tags=True)
        assert [a["name"] for a in listed["agents"]] == ["bob"]
        appended = await ok(c, "append_to_block", block="team", text="Bob joined")
        assert appended["value"] == "Team notes.\nBob joined" and appended["version"] == 2
        assert appended["agents"] == ["alice", "bob"]
        memory = await c.read_resource("letta://agents/bob/memory")
        assert "Bob joined" in memory.contents[0].text
        block = json.loads((await c.read_resource(f"letta://blocks/{team['id']}")).contents[0].text)
        assert block["version"] == 2
        history = await ok(c, "block_history", block="team")
        assert [h["op"] for h in history["changes"]] == ["append", "create"]
        replaced = await ok(c, "replace_in_block", block="persona", agent="alice", old="Alice", new="Alice B.")
        assert replaced["value"] == "I am Alice B."
        await ok(c, "detach_block", agent="bob", block="team")
        assert (await ok(c, "read_block", block="team"))["agents"] == ["alice"]
        deleted = await ok(c, "delete_agent", agent="alice")
        assert deleted["name"] == "alice"
        assert [a["name"] for a in (await ok(c, "list_agents"))["agents"]] == ["bob"]


async def test_stale_compare_and_set_write_reports_current_version(server: LettaServer, mode: str) -> None:
    async with client(server, mode) as c:
        await ok(c, "create_block", label="plan", value="v1")
        await ok(c, "write_block", block="plan", value="newer", expected_version=1)
        text = await fails(c, "write_block", block="plan", value="stale", expected_version=1)
        assert "is at version 2, you wrote against 1" in text
        assert "Current value (version 2):\nnewer" in text
        assert (await ok(c, "read_block", block="plan"))["value"] == "newer"


async def test_edit_past_the_limit_changes_nothing(server: LettaServer, mode: str, db_path: Path) -> None:
    async with client(server, mode) as c:
        await ok(c, "create_block", label="small", value="x" * 4990)
        before = dump(db_path)
        text = await fails(c, "append_to_block", block="small", text="y" * 219)
        assert "Edit failed: Exceeds 5000 character limit (requested 5210)" in text
        assert dump(db_path) == before


async def test_bad_references_name_near_matches(server: LettaServer, mode: str, db_path: Path) -> None:
    async with client(server, mode) as c:
        await ok(c, "create_agent", name="researcher")
        await ok(c, "create_block", label="project_memory")
        before = dump(db_path)
        assert "did you mean 'researcher'" in await fails(c, "get_agent", agent="reseacher")
        assert "did you mean 'project_memory'" in await fails(c, "read_block", block="project_mem")
        assert "did you mean 'researcher'" in await fails(c, "archival_memory_insert", agent="reserch", content="x")
        assert "(list_agents shows them)" in await fails(c, "get_agent", agent="reseacher")
        assert "(list_blocks shows them)" in await fails(c, "read_block", block="project_mem")
        assert "(list_runs shows them)" in await fails(c, "get_run", run_id="run-nope")
        assert "not allowed" in await fails(c, "create_agent", name="bad name!")
        assert "limit" in await fails(c, "archival_memory_search", agent="researcher", query="x", limit=-1)
        with pytest.raises(Exception, match="not found"):
            await c.read_resource("letta://agents/nobody/memory")
        assert dump(db_path) == before


async def test_archival_and_history_tools(server: LettaServer, mode: str, hub: AgentHub) -> None:
    from mcp_letta.models import NewMessage

    async with client(server, mode) as c:
        await ok(c, "create_agent", name="r")
        await ok(c, "archival_memory_insert", agent="r", content="The deploy key rotates monthly", tags=["ops"])
        await ok(c, "archival_memory_insert", agent="r", content="Lunch is at noon", tags=["life"])
        found = await ok(c, "archival_memory_search", agent="r", query="deploy key", tags=["ops"])
        assert [p["text"] for p in found["passages"]] == ["The deploy key rotates monthly"]
        await hub.append_messages("r", [NewMessage(role="user", content="remember the blue door")])
        assert (await ok(c, "get_messages", agent="r"))["messages"][0]["content"] == "remember the blue door"
        hits = await ok(c, "conversation_search", agent="r", query="door")
        assert hits["count"] == 1
        listed = await ok(c, "archival_memory_list", agent="r")
        assert [p["text"] for p in listed["passages"]] == ["Lunch is at noon", "The deploy key rotates monthly"]
        first = await ok(c, "archival_memory_list", agent="r", limit=1)
        assert [p["text"] for p in first["passages"]] == ["Lunch is at noon"] and first["more"] == 1
        older = await ok(c, "archival_memory_list", agent="r", limit=1, cursor=first["next_cursor"])
        assert [p["text"] for p in older["passages"]] == ["The deploy key rotates monthly"]
        assert (older["more"], older["next_cursor"]) == (0, None)
        await ok(c, "archival_memory_delete", agent="r", passage_id=older["passages"][0]["id"])
        assert [p.text for p in await hub.archival_list("r")] == ["Lunch is at noon"]
        assert "not found" in await fails(c, "archival_memory_delete", agent="r", passage_id="passage-gone")


async def test_block_settings_change_without_touching_the_value(server: LettaServer, mode: str, hub: AgentHub) -> None:
    async with client(server, mode) as c:
        await ok(c, "create_block", label="notes", value="twelve chars")
        changed = await ok(c, "update_block", block="notes", limit=20, description="what we noted", read_only=True)
        assert (changed["limit"], changed["description"], changed["read_only"]) == (20, "what we noted", True)
        assert changed["value"] == "twelve chars"
        assert "cannot be less than" in await fails(c, "update_block", block="notes", limit=5)
        assert (await hub.read_block("notes")).limit == 20  # the refused change changed nothing


WRITER = """
import anyio, sys
from mcp_letta import AgentHub, Settings
async def main():
    async with AgentHub(Settings(db_path=sys.argv[1])) as hub:
        await hub.append_to_block("team", "written by another process")
anyio.run(main)
"""


async def write_from_another_process(db_path: Path) -> None:
    done = await anyio.run_process([sys.executable, "-c", WRITER, str(db_path)], check=False)
    assert done.returncode == 0, done.stderr


async def test_legacy_subscriber_is_notified_of_another_process_write(server: LettaServer, db_path: Path) -> None:
    await server.hub.create_block("team", "start")
    await server.hub.create_agent("alice", shared_blocks=["team"])
    updated: set[str] = set()
    got = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.add(str(message.params.uri))
            if {"letta://blocks/team", "letta://agents/alice/memory"} <= updated:
                got.set()

    async with Client(server.mcp, mode="legacy", message_handler=on_message) as c:
        await c.subscribe_resource("letta://blocks/team")
        await c.subscribe_resource("letta://agents/alice/memory")
        await write_from_another_process(db_path)
        with anyio.fail_after(10):
            await got.wait()
        assert "written by another process" in (await c.read_resource("letta://blocks/team")).contents[0].text


async def test_modern_listener_is_notified_of_another_process_write(server: LettaServer, db_path: Path) -> None:
    block = await server.hub.create_block("team", "start")
    async with Client(server.mcp) as c:
        async with c.listen(resource_subscriptions=[f"letta://blocks/{block.id}"]) as sub:
            await write_from_another_process(db_path)
            with anyio.fail_after(10):
                event = await sub.__anext__()
    assert event.uri == f"letta://blocks/{block.id}"


async def test_subscribing_to_nothing_is_refused(server: LettaServer) -> None:
    async with Client(server.mcp, mode="legacy") as c:
        with pytest.raises(Exception, match="not found"):
            await c.subscribe_resource("letta://blocks/nope")
