"""Waiting on agents can never hang: cycles of synchronous waits (2 and 3 agents, or an agent on itself) and
waits nested too deep are refused at once with a clear error, a failed or slow sub-agent gives its caller
a clear Failed result, cancelling a run cancels the run it waits on, and a waiting run lends out its
concurrency slot.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_multiagent import Agents, last, make, newest_run, reply, tool_result

from mcp_letta import AgentHub, Deadlock, Settings
from mcp_letta.testing import Response, ScriptedLLM, message_text

pytestmark = pytest.mark.anyio
WAIT = "send_message_to_agent_and_wait_for_reply"


def relay(to: str | None) -> Any:
    """An agent that, on an incoming message, waits on ``to`` (if any) and answers with what it got back."""

    def handle(request: dict[str, Any]) -> Response:
        result = tool_result(request)
        if result is not None:
            return Response(content=f"{result['status']}: {result['message']}")
        if to is None:
            return Response(content="leaf answer")
        return Response(calls=[(WAIT, {"message": "pass it on", "other_agent_id": to})])

    return handle


async def test_a_two_agent_cycle_is_refused_and_both_still_finish(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    agents = Agents(scripted_llm)
    await make(llm_hub, "alice", "bob", include_multi_agent_tools=True)
    agents.on("alice", relay("bob"))
    agents.on("bob", relay("alice"))
    run = await llm_hub.send_message("alice", "start", wait_s=10)
    bob_run = await newest_run(llm_hub, "bob")
    assert bob_run.status == "completed"
    assert bob_run.reply == (
        "Failed: refused: bob is waiting on alice, which is waiting on bob; waiting would deadlock. "
        "Use send_message_to_agent_async instead: the reply then comes back to you as a new message."
    )
    assert run.status == "completed" and run.reply.startswith("OK: {'agent_id'") and "Failed: refused" in run.reply
    assert len(await llm_hub.list_runs("alice")) == 1  # the refused message was never stored


async def test_a_three_agent_cycle_is_refused(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    agents = Agents(scripted_llm)
    await make(llm_hub, "a", "b", "c", include_multi_agent_tools=True)
    agents.on("a", relay("b"))
    agents.on("b", relay("c"))
    agents.on("c", relay("a"))
    run = await llm_hub.send_message("a", "start", wait_s=10)
    c_run = await newest_run(llm_hub, "c")
    assert c_run.reply.startswith("Failed: refused: c is waiting on a, which is waiting on b, which is waiting on c;")
    assert run.status == "completed" and [r.depth for r in await llm_hub.list_runs(limit=10)] == [2, 1, 0]


async def test_an_agent_cannot_wait_on_itself(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    agents = Agents(scripted_llm)
    await make(llm_hub, "narcissus", include_multi_agent_tools=True)
    agents.on("narcissus", relay("narcissus"))
    run = await llm_hub.send_message("narcissus", "talk to yourself", wait_s=10)
    assert run.status == "completed" and run.reply.startswith("Failed: refused: narcissus cannot wait on itself")
    assert len(await llm_hub.list_runs("narcissus")) == 1


async def test_the_hub_refuses_a_cyclic_wait_with_deadlock_before_storing_anything(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    await make(llm_hub, "alice", "bob", include_multi_agent_tools=True)
    agents.on("alice", relay("bob"))
    agents.on("bob", reply("slow answer", delay_s=2.0))  # still running through every check below
    parent = await llm_hub.send_message("alice", "go")
    await scripted_llm.wait_for_requests_async(2)  # alice waits on bob, whose LLM call is in flight
    bob_run = await newest_run(llm_hub, "bob")
    before = len(await llm_hub.list_runs(limit=100))
    with pytest.raises(Deadlock, match="refused: bob is waiting on alice, which is waiting on bob; waiting would"):
        await llm_hub.send_and_wait("alice", "are you there?", sender="bob", parent_run_id=bob_run.id)
    with pytest.raises(Deadlock, match="cannot wait on itself"):
        await llm_hub.send_and_wait("bob", "me again", sender="bob", parent_run_id=bob_run.id)
    assert len(await llm_hub.list_runs(limit=100)) == before
    [refused] = await llm_hub.broadcast("all hands", sender="bob", parent_run_id=bob_run.id, wait_s=5)
    assert (refused.agent, refused.status, refused.run_id) == ("alice", "failed", None)
    assert "waiting would deadlock" in refused.error
    note = await llm_hub.send_async("alice", "fyi", sender="bob", parent_run_id=bob_run.id)  # async never waits
    assert note.status == "queued"
    assert (await llm_hub.wait_run(parent.id, wait_s=10)).status == "completed"


async def test_waits_nested_deeper_than_max_depth_are_refused(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    chain = ["n0", "n1", "n2", "n3"]
    for name, nxt in zip(chain, [*chain[1:], None], strict=True):
        agents.on(name, relay(nxt))
    async with AgentHub(llm_settings.with_overrides(max_depth=2)) as hub:
        await make(hub, *chain, include_multi_agent_tools=True)
        run = await hub.send_message("n0", "go deep", wait_s=10)
        n2 = await newest_run(hub, "n2")
        assert run.status == "completed" and n2.depth == 2
        refusal = "Failed: refused: n2 waiting on n3 would nest 3 synchronous waits (n0 -> n1 -> n2 -> n3), over"
        assert n2.reply.startswith(refusal)
        assert "MCP_LETTA_MAX_DEPTH" in n2.reply
        assert (await hub.list_runs("n3")).items == []


async def test_a_crashed_sub_agent_gives_its_caller_a_clear_error_and_the_caller_finishes(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("boss", relay("worker"))
    agents.on("worker", lambda _request: Response(status=500))
    async with AgentHub(llm_settings.with_overrides(llm_max_retries=0)) as hub:
        await make(hub, "boss", "worker", include_multi_agent_tools=True)
        run = await hub.send_message("boss", "delegate", wait_s=10)
        worker = await newest_run(hub, "worker")
    assert (worker.status, worker.stop_reason) == ("failed", "llm_api_error")
    assert run.status == "completed"
    assert run.reply.startswith(f"Failed: agent 'worker' could not answer: its run {worker.id} failed: ")
    assert "HTTP 500" in run.reply


async def test_a_slow_sub_agent_times_out_for_its_caller_and_its_reply_arrives_later_as_a_message(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)

    def boss(request: dict[str, Any]) -> Response:
        if message_text(last(request)).startswith("[Reply from agent 'worker'"):
            return Response(content="got the late reply")
        return relay("worker")(request)

    agents.on("boss", boss)
    agents.on("worker", reply("finally", delay_s=0.6))
    llm_hub.agent_wait_s = 0.1
    await make(llm_hub, "boss", "worker", include_multi_agent_tools=True)
    run = await llm_hub.send_message("boss", "delegate", wait_s=10)
    worker = await newest_run(llm_hub, "worker")
    assert run.reply == (
        f"Failed: agent 'worker' did not answer within 0.1s; its run {worker.id} goes on and its reply will be "
        "delivered to you as a new message when it finishes"
    )
    assert worker.reply_to == run.agent_id
    await llm_hub.wait_run(worker.id, wait_s=10)
    late = await newest_run(llm_hub, "boss")
    assert late.parent_run_id == worker.id and late.input.endswith("to your message (run " + worker.id + ")] finally")
    assert (await llm_hub.wait_run(late.id, wait_s=10)).reply == "got the late reply"


async def test_cancelling_a_waiting_run_cancels_the_run_it_waits_on(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("boss", relay("worker"))
    agents.on("worker", reply("too late", delay_s=5))
    await make(llm_hub, "boss", "worker", include_multi_agent_tools=True)
    parent = await llm_hub.send_message("boss", "delegate")
    await scripted_llm.wait_for_requests_async(2)  # the worker's LLM call is in flight
    child = await newest_run(llm_hub, "worker")
    assert child.status == "running" and child.parent_run_id == parent.id
    cancelled = await llm_hub.cancel_run(parent.id)
    assert cancelled.status == "cancelled"
    child = await llm_hub.wait_run(child.id, wait_s=10)
    assert (child.status, child.reply) == ("cancelled", None)
    history = [m.content for m in await llm_hub.get_messages("worker")]
    assert "too late" not in history


async def test_a_waiting_run_lends_its_concurrency_slot_so_a_cap_of_one_cannot_deadlock(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("boss", relay("worker"))
    agents.on("worker", relay("intern"))
    agents.on("intern", relay(None))
    async with AgentHub(llm_settings.with_overrides(max_concurrency=1)) as hub:
        await make(hub, "boss", "worker", "intern", include_multi_agent_tools=True)
        run = await hub.send_message("boss", "delegate", wait_s=10)
        assert {r.status for r in await hub.list_runs(limit=10)} == {"completed"}
    assert run.status == "completed" and run.reply.startswith("OK: {'agent_id'") and "leaf answer" in run.reply


async def test_another_process_sees_the_wait_and_refuses_the_cycle_and_its_cancel_reaches_both_runs(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("alice", relay("bob"))
    agents.on("bob", reply("too late", delay_s=5))
    async with AgentHub(llm_settings) as here, AgentHub(llm_settings) as there:
        await make(here, "alice", "bob", include_multi_agent_tools=True)
        parent = await here.send_message("alice", "go")
        await scripted_llm.wait_for_requests_async(2)  # alice (here) waits on bob, whose LLM call is in flight
        bob_run = await newest_run(there, "bob")
        with pytest.raises(Deadlock, match="bob is waiting on alice, which is waiting on bob"):
            await there.send_and_wait("alice", "you there?", sender="bob", parent_run_id=bob_run.id)
        cancelled = await there.cancel_run(parent.id)  # the runs execute in the other hub
        assert cancelled.status == "cancelled"
        assert (await there.wait_run(bob_run.id, wait_s=10)).status == "cancelled"
