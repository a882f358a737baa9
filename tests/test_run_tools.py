"""Agents' tools under load and extension: concurrent edits of a shared block lose nothing (Letta loses
most of them), tools the hub attaches to one agent run in order with the built-ins, and compaction never
splits a tool call from its result.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from mcp_letta import AgentHub
from mcp_letta.models import Message, ToolCall
from mcp_letta.runtime.context import choose_eviction
from mcp_letta.runtime.toolbox import Tool, ToolContext
from mcp_letta.testing import Response, ScriptedLLM, message_text

pytestmark = pytest.mark.anyio


def insert_then_reply(request: dict[str, Any]) -> Response:
    """Each message 'note: X' makes the agent memory_insert X into block 'team', then say 'done'."""
    last = request["messages"][-1]
    if last["role"] == "tool":
        return Response(content="done")
    note = message_text(last).removeprefix("note: ")
    return Response(calls=[("memory_insert", {"label": "team", "new_string": note})])


async def test_concurrent_edits_of_a_shared_block_by_four_agents_lose_nothing(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.default = insert_then_reply
    await llm_hub.create_block("team", "", limit=10_000)
    names = [f"agent{i}" for i in range(4)]
    for name in names:
        await llm_hub.create_agent(name, shared_blocks=["team"])
    notes = [f"{name} note {n}" for name in names for n in range(5)]
    async with anyio.create_task_group() as tg:
        for note in notes:
            tg.start_soon(lambda n=note: llm_hub.send_message(n.split()[0], f"note: {n}", wait_s=30))
    runs = await llm_hub.list_runs(limit=100)
    assert len(runs) == 20 and {r.status for r in runs} == {"completed"}
    team = await llm_hub.read_block("team")
    assert sorted(team.value.split("\n")) == sorted(notes)  # Letta 0.16.8 kept 9 of 20
    assert team.version == 21


async def test_a_tool_attached_to_one_agent_is_offered_to_it_only_and_runs_in_order(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    alice = await llm_hub.create_agent("alice")
    await llm_hub.create_agent("bob")
    seen: list[tuple[str, str, str]] = []

    async def weather(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        seen.append((ctx.agent_name, ctx.run_id, args["city"]))
        block = await llm_hub.read_block("human", agent="alice")  # an awaited tool may wait on the hub
        return {"city": args["city"], "forecast": "rain", "human_block_before": block.value}

    llm_hub._toolbox.attach(
        alice.id,
        Tool(
            "get_weather",
            "The forecast for a city.",
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            awaited=weather,
        ),
    )
    scripted_llm.tool_calls(
        [
            ("memory_insert", {"label": "human", "new_string": "Lives in Oslo."}),
            ("get_weather", {"city": "Oslo"}),
        ]
    )
    scripted_llm.reply("Rain in Oslo.")
    run = await llm_hub.send_message("alice", "weather at home?", wait_s=10)
    assert run.reply == "Rain in Oslo."
    assert [(c.name, c.ok) for c in run.steps[0].tool_calls] == [("memory_insert", True), ("get_weather", True)]
    assert seen == [("alice", run.id, "Oslo")]
    forecast = json.loads(scripted_llm.requests[1].body["messages"][-1]["content"])
    assert json.loads(forecast["message"])["human_block_before"] == "Lives in Oslo."  # the insert ran first
    assert "get_weather" in scripted_llm.requests[0].tool_names

    scripted_llm.reply("hi")
    await llm_hub.send_message("bob", "hello", wait_s=10)
    assert "get_weather" not in scripted_llm.requests[2].tool_names


def _message(seq: int, role: str, content: str = "x" * 40, calls: tuple[str, ...] = (), call_id: str | None = None):
    return Message(
        id=f"message-{seq}",
        agent_id="agent-1",
        seq=seq,
        role=role,  # type: ignore[arg-type]
        content=content,
        tool_calls=[ToolCall(id=c, name="memory_insert", arguments="{}") for c in calls],
        tool_call_id=call_id,
        created_at=datetime.now(UTC),
    )


def test_compaction_never_keeps_a_tool_result_without_its_call() -> None:
    history = [
        _message(1, "user"),
        _message(2, "assistant", "", calls=("c1",)),
        _message(3, "tool", call_id="c1"),
        _message(4, "assistant", "", calls=("c2",)),
        _message(5, "tool", call_id="c2"),
        _message(6, "assistant"),
    ]
    for keep in range(0, 200, 5):
        cut = choose_eviction(history, keep)
        assert 1 <= cut < len(history) and history[cut].role != "tool", (keep, cut)
