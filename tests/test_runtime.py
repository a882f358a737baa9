"""The agent loop end to end through the hub and the real loopback LLM: replies, memory tools with Letta's
results and exact errors, the step limit, and summarization when the context window fills up.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from test_multiagent import Agents, make, reply

from mcp_letta import AgentHub, Invalid, Settings
from mcp_letta.models import Message, ToolCall
from mcp_letta.runtime.context import Window, letta_time
from mcp_letta.runtime.memory_tools import DEFAULT_TOOL_NAMES
from mcp_letta.testing import RecordedRequest, Response, ScriptedLLM

pytestmark = pytest.mark.anyio


def messages(request: RecordedRequest) -> list[dict[str, Any]]:
    return request.body["messages"]


def tool_results(request: RecordedRequest) -> list[dict[str, Any]]:
    """The packaged tool results the LLM was shown, newest step last."""
    return [json.loads(m["content"]) for m in messages(request) if m["role"] == "tool"]


async def test_reply_flows_and_the_exchange_is_in_history(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    await llm_hub.create_agent("alice", persona="I am Alice.")
    scripted_llm.reply("Hello! I'm Alice.")
    run = await llm_hub.send_message("alice", "hi there", wait_s=10)
    assert (run.status, run.reply, run.stop_reason) == ("completed", "Hello! I'm Alice.", "end_turn")
    assert len(run.steps) == 1 and run.steps[0].tool_calls == []
    assert run.usage.total_tokens > 0 and run.usage == run.steps[0].usage
    [request] = scripted_llm.requests
    assert request.body["tool_choice"] == "auto" and request.body["parallel_tool_calls"] is False
    assert request.tool_names == list(DEFAULT_TOOL_NAMES)
    assert messages(request)[0]["role"] == "system" and "<persona>" in messages(request)[0]["content"]
    assert messages(request)[1:] == [{"role": "user", "content": "hi there"}]
    history = await llm_hub.get_messages("alice")
    assert [(m.role, m.content, m.run_id) for m in history] == [
        ("user", "hi there", run.id),
        ("assistant", "Hello! I'm Alice.", run.id),
    ]


async def test_memory_edit_by_the_agent_persists_and_is_in_the_next_prompt(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    alice = await llm_hub.create_agent("alice")
    scripted_llm.tool_call("memory_insert", {"label": "human", "new_string": "Name: Ada. Likes green tea."})
    scripted_llm.reply("Noted, Ada.")
    run = await llm_hub.send_message("alice", "I'm Ada and I like green tea", wait_s=10)
    assert run.status == "completed" and run.reply == "Noted, Ada."
    assert [[(c.name, c.ok) for c in s.tool_calls] for s in run.steps] == [[("memory_insert", True)], []]
    for got in (run, await llm_hub.get_run(run.id)):  # the reply's step counts as the tool step did
        assert (
            got.usage.total_tokens
            == sum(step.usage.total_tokens for step in run.steps)
            > run.steps[0].usage.total_tokens
        )

    first, second = scripted_llm.requests
    assert "Likes green tea" not in first.system
    assert "<value>\nName: Ada. Likes green tea.\n</value>" in second.system  # rebuilt for the very next step
    [result] = tool_results(second)
    assert result["status"] == "OK" and result["message"] == "Name: Ada. Likes green tea."
    block = await llm_hub.read_block("human", agent="alice")
    assert block.value == "Name: Ada. Likes green tea." and block.updated_by == alice.id
    assert (await llm_hub.block_history("human", agent="alice"))[0].op == "memory_insert"

    scripted_llm.reply("Welcome back.")
    await llm_hub.send_message("alice", "hello again", wait_s=10)
    third = scripted_llm.requests[2]
    assert "Name: Ada. Likes green tea." in third.system
    assert [m["role"] for m in messages(third)] == ["system", "user", "assistant", "tool", "assistant", "user"]


async def test_read_only_block_refuses_the_agent_with_lettas_exact_error(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("alice", blocks=[{"label": "policy", "value": "Be kind.", "read_only": True}])
    scripted_llm.tool_call("memory_replace", {"label": "policy", "old_string": "kind", "new_string": "rude"})
    scripted_llm.reply("I cannot change my policy.")
    run = await llm_hub.send_message("alice", "be rude from now on", wait_s=10)
    assert run.status == "completed" and run.steps[0].tool_calls[0].ok is False
    [result] = tool_results(scripted_llm.requests[1])
    assert result == {
        "status": "Failed",
        "message": "Error This block is read-only and cannot be edited.",
        "time": result["time"],
    }
    block = await llm_hub.read_block("policy", agent="alice")
    assert (block.value, block.version) == ("Be kind.", 1)


async def test_memory_tools_fail_with_lettas_exact_messages_and_change_nothing(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent(
        "alice",
        human="likes tea\nlikes tea cakes",
        blocks=[{"label": "tiny", "value": "", "limit": 10}],
        metadata={"tools": ["core_memory_append", "core_memory_replace", "memory_replace", "memory_insert"]},
    )
    scripted_llm.tool_calls(
        [
            ("memory_insert", {"label": "nope", "new_string": "x"}),
            ("memory_replace", {"label": "human", "old_string": "coffee", "new_string": "x"}),
            ("memory_replace", {"label": "human", "old_string": "likes tea", "new_string": "x"}),
            ("memory_replace", {"label": "human", "old_string": "1→ likes tea", "new_string": "x"}),
            ("memory_insert", {"label": "human", "new_string": "x", "insert_line": 99}),
            ("core_memory_replace", {"label": "human", "old_content": "coffee", "new_content": "x"}),
            ("core_memory_append", {"label": "tiny", "content": "far more than ten characters"}),
        ]
    )
    scripted_llm.reply("done")
    run = await llm_hub.send_message("alice", "edit your memory", wait_s=10)
    assert run.status == "completed"
    results = tool_results(scripted_llm.requests[1])
    assert [r["status"] for r in results] == ["Failed"] * 7
    assert [r["message"] for r in results[:6]] == [
        "'Block field nope does not exist (available sections = persona, human, tiny)'",
        "No replacement was performed, old_string `coffee` did not appear verbatim in memory block with label `human`.",
        "No replacement was performed. Multiple occurrences of old_string `likes tea` in lines [1, 2]. Please "
        "ensure it is unique.",
        "old_string contains a line number prefix, which is not allowed. Do not include line numbers when calling "
        "memory tools (line numbers are for display purposes only).",
        "Invalid `insert_line` parameter: 99. It should be within the range of lines of the memory block: [0, 2], "
        "or -1 to append to the end of the memory block.",
        "Old content 'coffee' not found in memory block 'human'",
    ]
    assert results[6]["message"].startswith("Edit failed: Exceeds 10 character limit (requested 28)")
    assert (await llm_hub.read_block("human", agent="alice")).version == 1
    assert (await llm_hub.read_block("tiny", agent="alice")).version == 1


async def test_memory_insert_counts_an_empty_block_as_one_line_as_letta_does(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    """Small models write "after line 1" into an empty block: Letta accepts it, and so do we (no stray newline)."""
    await llm_hub.create_agent("alice", human="", metadata={"tools": ["memory_insert"]})
    scripted_llm.tool_calls(
        [
            ("memory_insert", {"label": "human", "new_string": "x", "insert_line": 2}),
            ("memory_insert", {"label": "human", "new_string": "Name: Ada", "insert_line": 1}),
        ]
    )
    scripted_llm.reply("saved")
    run = await llm_hub.send_message("alice", "my name is Ada", wait_s=10)
    assert run.status == "completed"
    results = tool_results(scripted_llm.requests[1])
    assert results[0]["message"] == (
        "Invalid `insert_line` parameter: 2. It should be within the range of lines of the memory block: [0, 1], "
        "or -1 to append to the end of the memory block."
    )
    assert results[1]["status"] == "OK"
    assert (await llm_hub.read_block("human", agent="alice")).value == "Name: Ada"


async def test_bad_tool_calls_become_failed_results_the_model_reads(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("alice")
    scripted_llm.raw(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "fly", "arguments": "{}"}},
                            {"id": "c2", "type": "function", "function": {"name": "memory_insert", "arguments": "{x"}},
                            {"id": "c3", "type": "function", "function": {"name": "memory_insert", "arguments": "{}"}},
                        ],
                    },
                }
            ]
        }
    )
    scripted_llm.reply("sorry")
    run = await llm_hub.send_message("alice", "do something", wait_s=10)
    assert (run.status, run.reply) == ("completed", "sorry")
    assert [(c.name, c.ok) for c in run.steps[0].tool_calls] == [
        ("fly", False),
        ("memory_insert", False),
        ("memory_insert", False),
    ]
    unknown, bad_json, missing = (r["message"] for r in tool_results(scripted_llm.requests[1]))
    assert unknown.startswith("Tool 'fly' does not exist. Available tools: memory_insert, memory_replace")
    assert bad_json.startswith("Error parsing the arguments of memory_insert")
    assert missing == "memory_insert() is missing required argument(s): label, new_string"


async def test_archival_tools_insert_none_search_repr_and_the_count_reaches_the_prompt(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("alice")
    scripted_llm.tool_call("archival_memory_insert", {"content": "The launch code is tulip.", "tags": ["secrets"]})
    scripted_llm.tool_call("archival_memory_search", {"query": "launch code"})
    scripted_llm.reply("ok")
    await llm_hub.send_message("alice", "remember the launch code", wait_s=10)
    _, second, third = scripted_llm.requests
    assert tool_results(second)[0]["message"] == "None"
    assert "- 1 total memories you created are stored in archival memory" in second.system
    assert "- Available archival memory tags: secrets" in second.system
    found = tool_results(third)[1]["message"]
    assert (
        found.startswith("[{'id': 'passage-") and "'content': 'The launch code is tulip.', 'tags': ['secrets']" in found
    )


async def test_long_tool_output_is_truncated_with_lettas_note(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    await llm_hub.create_agent("alice")
    await llm_hub.archival_insert("alice", "needle " + "x" * 60_000)
    scripted_llm.tool_call("archival_memory_search", {"query": "needle"})
    scripted_llm.reply("ok")
    await llm_hub.send_message("alice", "search", wait_s=10)
    message = tool_results(scripted_llm.requests[1])[0]["message"]
    kept, note = message.split("... [NOTE: function output was truncated since it exceeded the character limit: ")
    assert len(kept) == 50_000 and kept.startswith("[{'id': 'passage-")
    full_length, limit = note.removesuffix("]").split(" > ")
    assert int(full_length) > 60_000 and limit == "50000"


async def test_conversation_search_finds_earlier_runs_in_lettas_shape(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("alice")
    scripted_llm.reply("Purple is a fine colour.")
    await llm_hub.send_message("alice", "my favourite colour is purple", wait_s=10)
    scripted_llm.tool_call("conversation_search", {"query": "purple colour"})
    scripted_llm.reply("You said purple.")
    await llm_hub.send_message("alice", "what did I say about colours?", wait_s=10)
    found = json.loads(tool_results(scripted_llm.requests[2])[0]["message"])
    assert found["message"] == "Showing 2 results:"
    assert {r["content"] for r in found["results"]} == {"my favourite colour is purple", "Purple is a fine colour."}
    assert set(found["results"][0]) == {"timestamp", "time_ago", "role", "relevance", "content"}


async def test_step_limit_ends_the_run_with_max_steps_and_a_clear_error(
    llm_settings: Any, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.default = Response(calls=(("conversation_search", {"query": "anything"}),))
    async with AgentHub(llm_settings.with_overrides(max_steps=3)) as hub:
        await hub.create_agent("alice")
        run = await hub.send_message("alice", "loop forever", wait_s=10)
    assert (run.status, run.stop_reason, run.reply) == ("failed", "max_steps", None)
    assert len(run.steps) == 3 and len(scripted_llm.requests) == 3
    assert "used all 3 steps" in run.error and "MCP_LETTA_MAX_STEPS" in run.error


async def test_full_context_window_is_summarized_and_evicted_messages_stay_searchable(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.echo()
    scripted_llm.on("You summarize conversations", *["Ada talked about aardvarks, then badgers."] * 4)
    await llm_hub.create_agent("alice", model_settings={"context_window": 4000})
    for animal in ("aardvark", "badger", "chameleon", "dingo"):
        run = await llm_hub.send_message("alice", f"{animal} " + "lorem ipsum " * 160, wait_s=10)
        assert run.status == "completed"
    summarize = [r for r in scripted_llm.requests if "You summarize conversations" in r.system]
    assert summarize, "the context never filled up"
    assert "aardvark" in summarize[0].body["messages"][1]["content"]
    after = scripted_llm.requests[scripted_llm.requests.index(summarize[-1]) + 1]
    first = messages(after)[1]
    assert first["role"] == "user" and '"type": "system_alert"' in first["content"]
    assert "hidden from view due to memory constraints" in first["content"]
    assert "Ada talked about aardvarks" in first["content"]
    contents = [m["content"] for m in messages(after)[1:]]
    assert not any(c.startswith("aardvark lorem") for c in contents)
    assert any(c.startswith("echo: badger") for c in contents)  # the newest ~30% of the window stays
    assert "previous messages between you and the user are stored in recall memory" in after.system
    history = await llm_hub.get_messages("alice", limit=100)
    assert not next(m for m in history if m.content.startswith("aardvark")).in_context
    hits = await llm_hub.search_messages("alice", "aardvark", roles=["user"])
    assert [h.in_context for h in hits if h.content.startswith("aardvark lorem")] == [False]


async def test_compaction_stays_bounded_when_the_summarizer_echoes_everything(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    # An LLM that repeats its input (a bad summarizer) must not make each summary bigger than the last.
    scripted_llm.echo()
    await llm_hub.create_agent("parrot", model_settings={"context_window": 2000})
    for i in range(12):
        run = await llm_hub.send_message("parrot", f"message {i} " + "blah " * 120, wait_s=30)
        assert run.status == "completed", run.error
    requests = [len(json.dumps(r.body["messages"])) for r in scripted_llm.requests]
    summaries = [r for r in scripted_llm.requests if "You summarize conversations" in r.system]
    assert len(summaries) >= 3, "the window never filled up"
    # Every request, summaries included, fits the window (four characters a token, plus JSON framing).
    assert max(requests) < 2000 * 4 * 1.3, requests


def test_the_encoded_history_is_the_history_a_request_carries() -> None:
    # Requests carry the window as JSON encoded message by message as it grew (Window.request_json); that
    # must be exactly the messages the runtime reasons about (Window.request), whatever the messages hold.
    def message(seq: int, role: str, content: str, **more: Any) -> Message:
        return Message(
            id=f"m{seq}", agent_id="a", seq=seq, role=role, content=content, created_at="2026-11-21T00:00:00Z", **more
        )  # type: ignore[arg-type]

    call, unanswered = (
        ToolCall(id="c1", name="memory_insert", arguments='{"label": "human"}'),
        ToolCall(id="c2", name="x", arguments="{}"),
    )
    window = Window([message(1, "user", 'Grüße, "quoted" \\ and a\nnewline ✓')])
    window.add(  # a step's messages come together: the calls, then their results (c2's never came)
        [
            message(2, "assistant", "", tool_calls=[call, unanswered]),
            message(3, "tool", '{"status": "OK"}', name="memory_insert", tool_call_id="c1"),
        ]
    )
    window.add([message(4, "assistant", "done ✓"), message(5, "system", "[Incoming message] ☃")])
    assert json.loads(window.request_json("system prompt ✓")) == window.request("system prompt ✓")
    assert json.loads(window.copy().request_json("s")) == window.request("s")
    assert [m["role"] for m in window.request("s")] == ["system", "user", "assistant", "tool", "assistant", "system"]


async def test_the_prompt_prefix_stays_byte_identical_until_memory_changes(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    # A provider's prompt cache reuses a byte-identical prefix: the system message (memory included) and the
    # tools must not change from step to step or run to run because the clock moved or the history grew.
    await llm_hub.create_agent("alice", persona="I am Alice.")
    scripted_llm.tool_call("conversation_search", {"query": "anything"})
    scripted_llm.reply("first")
    await llm_hub.send_message("alice", "one", wait_s=10)
    shown_time = letta_time()
    await anyio.sleep(1.02 - time.time() % 1)  # into the next second: the clock the prompt shows moves on
    assert letta_time() != shown_time
    scripted_llm.reply("second")
    await llm_hub.send_message("alice", "two", wait_s=10)
    await llm_hub.append_to_block("human", "The user is called Ada.", agent="alice")  # a memory edit
    scripted_llm.reply("third")
    await llm_hub.send_message("alice", "three", wait_s=10)
    scripted_llm.tool_call("archival_memory_insert", {"content": "Ada likes tea."})
    scripted_llm.reply("fourth")
    await llm_hub.send_message("alice", "four", wait_s=10)
    first_step, second_step, second_run, after_edit, before_insert, after_insert = scripted_llm.requests
    assert first_step.system == second_step.system == second_run.system
    assert first_step.body["tools"] == second_run.body["tools"]
    assert messages(second_run)[: len(messages(second_step))] == messages(second_step)  # it only grows at the end
    assert after_edit.system != second_run.system and "The user is called Ada." in after_edit.system
    assert before_insert.system == after_edit.system
    assert "- 1 total memories you created are stored in archival memory" in after_insert.system


async def test_a_printed_call_to_a_missing_tool_goes_back_to_the_model_not_to_the_user(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("alice")
    scripted_llm.reply('{{"name": "memory_search", "arguments": {"query": "name"}}}')  # doubled braces, no such tool
    scripted_llm.reply("I do not know your name yet.")
    run = await llm_hub.send_message("alice", "what is my name?", wait_s=10)
    assert (run.status, run.reply) == ("completed", "I do not know your name yet.")
    assert [(c.name, c.ok) for c in run.steps[0].tool_calls] == [("memory_search", False)]
    [told] = tool_results(scripted_llm.requests[1])
    assert told["message"].startswith("Tool 'memory_search' does not exist. Available tools: memory_insert")


async def test_an_empty_or_markup_only_answer_is_asked_again_and_never_kept(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("alice")
    scripted_llm.reply("<tools></tools>")  # what a small model answered
    scripted_llm.reply("Hello!")
    run = await llm_hub.send_message("alice", "hi", wait_s=10)
    assert (run.status, run.reply) == ("completed", "Hello!")
    first, again = scripted_llm.requests
    assert messages(again)[:-1] == messages(first)  # the same request, then the correction
    assert messages(again)[-1]["role"] == "user" and "Your last answer was empty" in messages(again)[-1]["content"]
    assert run.usage == run.steps[0].usage and run.usage.total_tokens > 0
    history = [m.content for m in await llm_hub.get_messages("alice")]
    assert "<tools></tools>" not in history and not any("Your last answer was empty" in c for c in history)


async def test_a_model_that_keeps_answering_nothing_fails_the_run_and_the_pipeline_says_so(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await make(llm_hub, "research", "write")
    agents = Agents(scripted_llm)
    agents.on("research", reply("notes"))
    agents.on("write", reply("   "))
    result = await llm_hub.run_pipeline(["research", "write"], "topic")
    assert (result.status, result.output) == ("failed", None)
    run = await llm_hub.get_run(result.stages[-1].run_id)
    assert (run.status, run.stop_reason) == ("failed", "invalid_llm_response")
    assert run.error == (
        "agent 'write''s model answered with no text ('   '), also when asked again 2 times: check the model "
        "(MCP_LETTA_MODEL) can chat, or send the message again"
    )
    assert result.error.startswith("stage 2 (write) failed: agent 'write''s model answered with no text")


async def test_json_tool_mode_offers_the_tools_through_a_schema_and_reads_the_answer(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("ada_helper", model_settings={"tool_mode": "json"})
    scripted_llm.reply(
        json.dumps({"tool": "memory_insert", "arguments": {"label": "human", "new_string": "Name: Ada"}})
    )
    scripted_llm.reply(json.dumps({"reply": "I will remember, Ada."}))
    run = await llm_hub.send_message("ada_helper", "My name is Ada, remember that.", wait_s=10)
    assert (run.status, run.reply) == ("completed", "I will remember, Ada.")
    assert "Name: Ada" in (await llm_hub.read_block("human", agent="ada_helper")).value
    first, second = scripted_llm.requests
    assert "tools" not in first.body and first.tool_names == []
    # The first step of a message must call a tool (a small model otherwise answers without saving); then
    # the reply is one of the choices.
    first_choices = first.body["response_format"]["json_schema"]["schema"]["anyOf"]
    assert [c["properties"]["tool"]["enum"] for c in first_choices] == [[name] for name in DEFAULT_TOOL_NAMES]
    choices = second.body["response_format"]["json_schema"]["schema"]["anyOf"]
    assert choices[:-1] == first_choices and choices[-1]["required"] == ["reply"]
    assert "<tools>" in first.system and "- memory_insert(label: string, new_string: string" in first.system
    # The tools come before memory: the memory edit changed only what follows them, so a provider's prompt
    # cache keeps the instructions and the tools.
    before_memory = first.system.partition("<memory_blocks>")[0]
    assert "</tools>" in before_memory and second.system.startswith(before_memory)
    assert "Name: Ada" in second.system.partition("</tools>")[2] and "Name: Ada" not in first.system
    assert tool_results(second)[0]["status"] == "OK"


async def test_auto_tool_mode_switches_to_json_once_the_model_prints_its_calls(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    await llm_hub.create_agent("alice")  # the process default: auto
    scripted_llm.reply("```json\n" + json.dumps({"name": "conversation_search", "arguments": {"query": "x"}}) + "\n```")
    scripted_llm.reply(json.dumps({"reply": "Nothing found."}))
    run = await llm_hub.send_message("alice", "what did I say?", wait_s=10)
    assert (run.status, run.reply) == ("completed", "Nothing found.")
    native, json_step = scripted_llm.requests
    assert native.tool_names == list(DEFAULT_TOOL_NAMES) and "response_format" not in native.body
    assert json_step.tool_names == [] and json_step.body["response_format"]["type"] == "json_schema"


async def test_an_unknown_tool_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(Invalid, match="MCP_LETTA_TOOL_MODE='fast' is not known: use 'native', 'json' or 'auto'"):
        Settings.from_env({"MCP_LETTA_TOOL_MODE": "fast"})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"max_concurrency": 0}, "max_concurrency must be a whole number from 1 (got 0)"),  # (every run stayed queued)
        ({"max_steps": 0}, "max_steps must be a whole number from 1"),
        ({"fanout_concurrency": True}, "fanout_concurrency must be a whole number from 1 (got True)"),
        ({"agent_wait_s": -1}, "agent_wait_s must be a number of seconds, 0 or more (got -1)"),
        ({"llm_timeout_s": 0}, "llm_timeout_s must be a number of seconds, above 0"),
        ({"llm_max_retries": -1}, "llm_max_retries must be a whole number from 0"),
        ({"log_level": "LOUD"}, "log level 'LOUD' (MCP_LETTA_LOG_LEVEL, --log-level) is not known: use DEBUG, INFO"),
        ({"tool_mode": "fast"}, "tool_mode 'fast' is not known"),
    ],
)
async def test_settings_made_in_python_are_checked_too(changes: dict[str, object], expected: str) -> None:
    with pytest.raises(Invalid, match=re.escape(expected)):
        Settings().with_overrides(**changes)
    with pytest.raises(Invalid, match=re.escape(expected)):
        Settings(**changes)  # type: ignore[arg-type]
    assert Settings().with_overrides(log_level="debug").log_level == "DEBUG"  # (as --log-level debug gives it)


async def test_cached_prompt_tokens_are_kept_per_step_and_run_and_counted_in_metrics(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    def answer(message: dict[str, Any], cached: int) -> dict[str, Any]:
        usage = {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010}
        return {
            "choices": [{"index": 0, "message": message}],
            "usage": {**usage, "prompt_tokens_details": {"cached_tokens": cached}},
        }

    await llm_hub.create_agent("alice")
    call = {"id": "c1", "type": "function", "function": {"name": "conversation_search", "arguments": '{"query": "x"}'}}
    scripted_llm.raw(answer({"role": "assistant", "content": None, "tool_calls": [call]}, 0))
    scripted_llm.raw(answer({"role": "assistant", "content": "done"}, 960))
    run = await llm_hub.send_message("alice", "look it up", wait_s=10)
    stored = await llm_hub.get_run(run.id)
    assert [s.usage.cached_tokens for s in stored.steps] == [0, 960]
    assert run.usage.cached_tokens == stored.usage.cached_tokens == 960 and stored.usage.prompt_tokens == 2000
    [metrics] = (await llm_hub.get_metrics()).agents
    assert (metrics.tokens, metrics.cached_tokens) == (2020, 960)


async def test_an_empty_archival_search_says_so_in_words(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    # Given Letta's "[]" a small model answered with a guess ("The project's codename is 'Project X'").
    await llm_hub.create_agent("lead", persona="The agent 'researcher' knows the codename.")
    scripted_llm.tool_call("archival_memory_search", {"query": "codename"})
    scripted_llm.reply("I will ask")
    await llm_hub.send_message("lead", "What is the codename?", wait_s=10)
    [result] = tool_results(scripted_llm.requests[-1])
    assert (result["status"], result["message"]) == (
        "OK",
        "No results found. This searched your archival memory only: the passages saved with "
        "archival_memory_insert. Your memory blocks are not searched: they are in view in your system prompt; if "
        "one of them holds the answer, use it.",
    )


async def test_searches_take_dates_in_the_format_agents_are_shown(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    """A small model copies the times it sees (Letta's ``2026-12-05 06:16:53 PM UTC+0000``) into a search's date
    bounds: they are read, not refused."""
    await llm_hub.create_agent("ada_helper")
    scripted_llm.reply("noted")
    await llm_hub.send_message("ada_helper", "My name is Ada.", wait_s=10)
    await llm_hub.archival_insert("ada_helper", "Ada lives in Lisbon")
    earlier, later = (
        letta_time(datetime.now(UTC) - timedelta(hours=1)),
        letta_time(datetime.now(UTC) + timedelta(hours=1)),
    )
    scripted_llm.tool_calls(
        [
            ("conversation_search", {"query": "Ada", "start_date": earlier}),
            ("conversation_search", {"query": "Ada", "start_date": later}),
            ("archival_memory_search", {"query": "Lisbon", "start_datetime": earlier, "end_datetime": later}),
            ("conversation_search", {"query": "Ada", "start_date": "last tuesday"}),
        ]
    )
    scripted_llm.reply("done")
    run = await llm_hub.send_message("ada_helper", "What did I tell you?", wait_s=10)
    assert run.status == "completed"
    results = tool_results(scripted_llm.requests[-1])
    assert [r["status"] for r in results] == ["OK", "OK", "OK", "Failed"]
    assert "My name is Ada." in results[0]["message"]
    assert "No results found." in results[1]["message"]
    assert "Ada lives in Lisbon" in results[2]["message"]
    assert "is not ISO format: use YYYY-MM-DD or YYYY-MM-DDTHH:MM" in results[3]["message"]


async def test_memory_replace_with_an_empty_old_string(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    """Into an empty block it writes the new string (as Letta does: "" occurs once there); into a block that holds
    text it is refused with what to use instead, and nothing changes."""
    await llm_hub.create_agent("ada_helper", human="", persona="helpful")
    scripted_llm.tool_calls(
        [
            ("memory_replace", {"label": "human", "old_string": "", "new_string": "Name: Ada"}),
            ("memory_replace", {"label": "persona", "old_string": "", "new_string": "x"}),
        ]
    )
    scripted_llm.reply("saved")
    await llm_hub.send_message("ada_helper", "My name is Ada.", wait_s=10)
    results = tool_results(scripted_llm.requests[-1])
    assert [r["status"] for r in results] == ["OK", "Failed"]
    assert results[1]["message"] == (
        "No replacement was performed: old_string is empty. To add to the memory block with label `persona` use "
        "memory_insert; to rewrite it use memory_rethink."
    )
    assert (await llm_hub.read_block("human", agent="ada_helper")).value == "Name: Ada"
    persona = await llm_hub.read_block("persona", agent="ada_helper")
    assert (persona.value, persona.version) == ("helpful", 1)


async def test_a_call_repeated_from_the_previous_step_is_not_run_again_and_the_model_is_told_why(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    # Small models repeat a search that found nothing until they run out of steps.
    await llm_hub.create_agent("alice")
    scripted_llm.tool_call("memory_insert", {"label": "human", "new_string": "Ada"})
    scripted_llm.tool_call("memory_insert", {"new_string": "Ada", "label": "human"})  # the same call again
    scripted_llm.tool_call("memory_insert", {"label": "human", "new_string": "Lisbon"})  # another: it runs
    scripted_llm.tool_call("memory_insert", {"label": "human", "new_string": "Ada"})  # not the previous step's
    scripted_llm.reply("ok")
    run = await llm_hub.send_message("alice", "I am Ada from Lisbon", wait_s=10)
    assert run.status == "completed" and run.reply == "ok"
    assert [(c.name, c.ok) for step in run.steps for c in step.tool_calls] == [
        ("memory_insert", True), ("memory_insert", False), ("memory_insert", True), ("memory_insert", True),
    ]  # fmt: skip
    told = tool_results(scripted_llm.requests[2])[-1]["message"]
    assert told.startswith("Not called again: your previous step called memory_insert with these same arguments")
    assert (await llm_hub.read_block("human", agent="alice")).value.split("\n") == ["Ada", "Lisbon", "Ada"]


async def test_a_search_repeated_after_other_searches_is_not_run_again_but_one_after_a_change_is(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    # A small model alternated two searches that found nothing until it ran out of steps. Only searches
    # between the two calls: the result cannot have changed. A write between them: it may have.
    await llm_hub.create_agent("alice")
    archive = ("archival_memory_search", {"query": "sky"})
    scripted_llm.tool_call(*archive)
    scripted_llm.tool_call("conversation_search", {"query": "sky"})
    scripted_llm.tool_call(*archive)  # only a search since the same call: refused
    scripted_llm.tool_call("archival_memory_insert", {"content": "The sky is blue"})
    scripted_llm.tool_call(*archive)  # after an insert: it runs, and finds it
    scripted_llm.reply("blue")
    run = await llm_hub.send_message("alice", "why is the sky blue", wait_s=10)
    assert run.status == "completed" and run.reply == "blue"
    assert [(c.name, c.ok) for step in run.steps for c in step.tool_calls] == [
        ("archival_memory_search", True), ("conversation_search", True), ("archival_memory_search", False),
        ("archival_memory_insert", True), ("archival_memory_search", True),
    ]  # fmt: skip
    results = [r["message"] for r in tool_results(scripted_llm.requests[-1])]
    assert results[2] == (
        "Not called again: an earlier step of this run called archival_memory_search with these same arguments, "
        "and its result is above. Use that result: answer the message, or call a different tool."
    )
    assert "The sky is blue" in results[4]


async def test_an_ask_tool_says_what_its_agent_is_for_first(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    # A 1.5B orchestrator asked its researcher first 9 times in 10 with the description first, 4 with it last.
    await llm_hub.create_agent("researcher", description="Knows the project's codename.\nAsk about facts.")
    await llm_hub.create_agent("writer")
    await llm_hub.create_agent("lead", persona="lead persona")
    await llm_hub.attach_agent_tool("lead", "researcher")
    await llm_hub.attach_agent_tool("lead", "writer")
    scripted_llm.reply("ok")
    await llm_hub.send_message("lead", "hi", wait_s=10)
    described = {t["function"]["name"]: t["function"]["description"] for t in scripted_llm.requests[0].body["tools"]}
    assert described["ask_researcher"] == (
        "The agent 'researcher': Knows the project's codename. Ask about facts. Ask it and wait for its reply."
    )
    assert described["ask_writer"] == "Ask the agent 'writer' and wait for its reply."


async def test_asking_another_agent_the_same_thing_again_asks_it_again(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    # The guard against repeated calls is for results that cannot change; another agent answers anew. But
    # not without end: a small model asked the same question six times, answered every time.
    await llm_hub.create_agent("researcher", persona="researcher persona")
    await llm_hub.create_agent("lead", persona="lead persona")
    await llm_hub.attach_agent_tool("lead", "researcher")
    for _ in range(3):
        scripted_llm.on("lead persona").tool_call("ask_researcher", {"message": "the codename?"})
    scripted_llm.on("lead persona", "BLUEBIRD")
    scripted_llm.on("researcher persona", "I do not know")
    scripted_llm.on("researcher persona", "BLUEBIRD")
    run = await llm_hub.send_message("lead", "find the codename", wait_s=10)
    assert [(c.name, c.ok) for step in run.steps for c in step.tool_calls] == [
        ("ask_researcher", True), ("ask_researcher", True), ("ask_researcher", False),
    ]  # fmt: skip
    assert [r.reply for r in await llm_hub.list_runs("researcher")] == ["BLUEBIRD", "I do not know"]
    assert tool_results(scripted_llm.requests[-1])[-1]["message"] == (
        "Not called again: this run made this same call 2 times already, and the answers are above. Use them: "
        "answer the message, or call a different tool."
    )


async def test_an_empty_conversation_search_says_the_memory_blocks_were_not_searched(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    # A small model searched its conversation for what its persona said, and took "nothing found" for
    # "unknown"; with this note it answered from its memory (bench models, ask: 3/10 -> 8/10).
    await llm_hub.create_agent("researcher", persona="I know that the codename is BLUEBIRD.")
    scripted_llm.tool_call("conversation_search", {"query": "codename"})
    scripted_llm.reply("BLUEBIRD")
    await llm_hub.send_message("researcher", "What is the codename?", wait_s=10)
    found = json.loads(tool_results(scripted_llm.requests[-1])[0]["message"])
    assert (found["message"], found["results"]) == ("No results found.", [])  # Letta's, as before
    assert found["note"] == (
        "This searched your past messages only. Your memory blocks are not searched: they are in view in your "
        "system prompt; if one of them holds the answer, use it."
    )
