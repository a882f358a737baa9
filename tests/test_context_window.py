"""``AgentHub.context_window``: what the console's context window viewer shows is what the LLM is sent."""

from __future__ import annotations

import json

import pytest

from mcp_letta import AgentHub, NotFound
from mcp_letta.runtime.context import CHARS_PER_TOKEN
from mcp_letta.testing import ScriptedLLM

pytestmark = pytest.mark.anyio


async def test_the_context_window_shows_sections_blocks_tools_and_what_compaction_summarised(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.echo()
    scripted_llm.on("You summarize conversations", *["Ada talked about aardvarks, then badgers."] * 4)
    await llm_hub.create_agent("alice", persona="I am alice", model_settings={"context_window": 4000})
    for animal in ("aardvark", "badger", "chameleon", "dingo"):
        run = await llm_hub.send_message("alice", f"{animal} " + "lorem ipsum " * 160, wait_s=10)
        assert run.status == "completed"
    window = await llm_hub.context_window("alice")
    last = scripted_llm.requests[-1].body
    assert window.context_window == 4000 and window.summarize_at == 3600
    assert [t["function"]["name"] for t in window.tools] == [t["function"]["name"] for t in last["tools"]]
    sent_history = [m["content"] for m in last["messages"][1:]]
    shown_history = [m.content for m in window.messages]
    assert shown_history[: len(sent_history)] == sent_history  # the window's order, summary first
    assert window.summary is not None and "Ada talked about aardvarks" in window.summary
    assert window.messages[0].content == window.summary
    assert window.out_of_context >= 2 and not any(c.startswith("aardvark lorem") for c in shown_history)
    assert {b.label: b.value for b in window.blocks}["persona"] == "I am alice"
    assert "I am alice" in window.memory and window.system in last["messages"][0]["content"]
    sent_tools = json.dumps(last["tools"], separators=(",", ":"), ensure_ascii=False)
    assert window.tools_tokens == len(sent_tools) // CHARS_PER_TOKEN
    assert window.total_tokens == (
        window.system_tokens + window.memory_tokens + window.tools_tokens + window.messages_tokens
    )
    assert window.total_tokens < window.context_window


async def test_the_context_window_of_an_unknown_agent_is_a_clear_error(hub: AgentHub) -> None:
    await hub.create_agent("alice")
    with pytest.raises(NotFound, match="alicee"):
        await hub.context_window("alicee")
