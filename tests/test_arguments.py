"""Tool arguments: undeclared arguments are refused (with the closest declared one), and a refused call says
which argument, what was expected and what was given, in one or two lines, in both protocol eras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from conftest import client, dump

from mcp_letta import AgentHub
from mcp_letta.server.app import LettaServer

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def refused(c: Any, tool: str, args: dict[str, Any]) -> str:
    result = await c.call_tool(tool, args)
    assert result.is_error, result.content
    message = text(result)
    assert "pydantic" not in message and "validation error for" not in message, message
    assert len(message.splitlines()) <= 2, message
    return message


@pytest.fixture
async def seeded(hub: AgentHub, server: LettaServer) -> LettaServer:
    await hub.create_agent("alice", persona="I am Alice.")
    await hub.create_block("c", "v0")
    await hub.write_block("c", "v1")  # now at a newer version than a caller may think
    await server.agent_tools.sync()
    return server


async def test_a_misspelt_argument_is_refused_and_nothing_is_written(
    seeded: LettaServer, mode: str, db_path: Path
) -> None:
    before = dump(db_path)
    async with client(seeded, mode) as c:
        message = await refused(c, "write_block", {"block": "c", "value": "v", "expected_versoin": 1})
        assert message == (
            "Error executing tool write_block: unknown argument 'expected_versoin'; did you mean 'expected_version'?"
        )
        message = await refused(c, "create_agent", {"name": "x", "zz": 1})
        assert message.startswith("Error executing tool create_agent: unknown argument 'zz'; the arguments are: name,")
        assert "ask_alice" in {t.name for t in (await c.list_tools()).tools}
        message = await refused(c, "ask_alice", {"message": "hi", "timeout_s": 1, "timout": 3})
        assert message == "Error executing tool ask_alice: unknown argument 'timout'; did you mean 'timeout_s'?"
        message = await refused(c, "create_agent", {"name": "y", "blocks": [{"label": "a", "valeu": "b"}]})
        assert message.endswith("unknown field 'valeu' in 'blocks[0]'; did you mean 'value'?")
    assert dump(db_path) == before
    assert (await seeded.hub.read_block("c")).value == "v1"
    assert [a.name for a in await seeded.hub.list_agents()] == ["alice"]


async def test_every_input_schema_forbids_undeclared_arguments(seeded: LettaServer, mode: str) -> None:
    async with client(seeded, mode) as c:
        tools = (await c.list_tools()).tools
    assert len(tools) >= 20 and any(t.name == "ask_alice" for t in tools)
    loose = [t.name for t in tools if t.input_schema.get("additionalProperties") is not False]
    assert not loose


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("replace_in_block", {"block": "c", "old": 1, "new": "x"}, "argument 'old' must be a string; given 1"),
        ("write_block", {"block": "c", "value": "v", "expected_version": "abc"},
         "argument 'expected_version' must be a whole number; given \"abc\""),
        ("write_block", {"block": "c"}, "argument 'value' is required: pass a string"),
        ("list_runs", {"limit": 0}, "argument 'limit' must be a whole number from 1 to 1000; given 0"),
        ("create_agent", {"name": "z", "tags": "a,b"}, "argument 'tags' must be a list of strings; given \"a,b\""),
        ("create_agent", {"name": "z", "blocks": [{"label": 5}]},
         "'blocks[0].label' must be a string; given 5"),
        ("write_block", {"block": "c", "value": "x" * 10_000_000},  # a 10 MB string that is fine: no error
         None),
        ("write_block", {"block": ["x" * 10_000_000]},
         "argument 'block' must be a string; given [\"xxxxxxxx"),
        ("get_agent", {}, "argument 'agent' is required: pass a string"),
        ("no_such_tool", {}, "unknown tool 'no_such_tool'; tools/list shows them"),
        ("write_blok", {}, "unknown tool 'write_blok'; did you mean 'write_block'?"),
    ],
)  # fmt: skip
async def test_argument_errors_say_which_argument_what_was_expected_and_what_was_given(
    seeded: LettaServer, tool: str, args: dict[str, Any], expected: str | None
) -> None:
    async with client(seeded, "legacy") as c:
        if expected is None:
            result = await c.call_tool(tool, args)
            assert "Exceeds 5000 character limit" in text(result)  # the block limit, not an argument error
            return
        message = await refused(c, tool, args)
    assert expected in message, message
    assert len(message) < 300, message


async def test_two_problems_are_two_lines_and_more_are_counted(seeded: LettaServer) -> None:
    async with client(seeded, "modern") as c:
        message = await refused(c, "write_block", {"blok": "c", "valu": 1, "x": 2, "y": 3})
    first, second = message.splitlines()
    assert first == "Error executing tool write_block: argument 'block' is required: pass a string"
    assert second.startswith("argument 'value' is required") and second.endswith("(and 4 more)")
