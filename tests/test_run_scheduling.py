"""Runs through the hub and the real loopback LLM: bounded waits, cancellation, ordering per agent and
parallelism across agents, LLM errors, progress events and run listings.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import Gate

from mcp_letta import AgentHub, Change, NotFound, Settings, Timeout
from mcp_letta.models import Run, StepEvent
from mcp_letta.testing import ScriptedLLM

pytestmark = pytest.mark.anyio


def overlap(a: Run, b: Run) -> bool:
    assert a.started_at and a.finished_at and b.started_at and b.finished_at
    return a.started_at < b.finished_at and b.started_at < a.finished_at


async def test_slow_run_returns_pending_and_get_run_later_returns_its_reply(llm_hub: AgentHub, gate: Gate) -> None:
    await llm_hub.create_agent("alice")
    pending = await llm_hub.send_message("alice", "take your time", wait_s=0.05)
    assert pending.status in ("queued", "running") and pending.reply is None
    with pytest.raises(Timeout) as caught:
        await llm_hub.wait_run(pending.id, wait_s=0.05)
    assert pending.id in str(caught.value) and "get_run" in str(caught.value)
    gate.open()
    done = await llm_hub.get_run(pending.id, wait_s=10)
    assert (done.id, done.status, done.reply) == (pending.id, "completed", "released")
    assert (await llm_hub.wait_run(pending.id)).reply == "released"


async def test_send_without_waiting_returns_the_queued_run_at_once(llm_hub: AgentHub, gate: Gate) -> None:
    await llm_hub.create_agent("alice")
    run = await llm_hub.send_message("alice", "hello")
    assert run.status == "queued" and run.id.startswith("run-") and run.agent_name == "alice"
    gate.open()
    assert (await llm_hub.wait_run(run.id, wait_s=10)).status == "completed"


async def test_cancelling_a_running_run_keeps_the_late_answer_out(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    await llm_hub.create_agent("alice")
    running = await llm_hub.send_message("alice", "a long question")
    queued = await llm_hub.send_message("alice", "a second question")
    await scripted_llm.wait_for_requests_async(1)

    cancelled_queued = await llm_hub.cancel_run(queued.id)
    assert (cancelled_queued.status, cancelled_queued.stop_reason) == ("cancelled", "cancelled")
    cancelled = await llm_hub.cancel_run(running.id)
    assert (cancelled.status, cancelled.stop_reason, cancelled.reply) == ("cancelled", "cancelled", None)
    gate.open()  # the LLM answers now, too late

    scripted_llm.reply("fresh answer")
    after = await llm_hub.send_message("alice", "are you there?", wait_s=10)
    assert after.reply == "fresh answer"
    assert (await llm_hub.get_run(running.id)).status == "cancelled"
    history = await llm_hub.get_messages("alice")
    assert [(m.role, m.content) for m in history] == [
        ("user", "a long question"),
        ("user", "are you there?"),
        ("assistant", "fresh answer"),
    ]
    assert len(scripted_llm.requests) == 2  # the cancelled queued run never reached the LLM


async def test_two_messages_to_one_agent_run_in_order_while_two_agents_overlap(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.echo()
    scripted_llm.delay_s = 0.3
    await llm_hub.create_agent("alice")
    await llm_hub.create_agent("bob")
    a1 = await llm_hub.send_message("alice", "first")
    a2 = await llm_hub.send_message("alice", "second")
    b1 = await llm_hub.send_message("bob", "hello bob")
    a1, a2, b1 = [await llm_hub.wait_run(r.id, wait_s=10) for r in (a1, a2, b1)]
    assert [r.reply for r in (a1, a2, b1)] == ["echo: first", "echo: second", "echo: hello bob"]
    assert a1.finished_at <= a2.started_at  # one at a time, first in first out
    assert overlap(a1, b1)  # different agents run in parallel
    second_request = next(r for r in scripted_llm.requests if "echo: first" in str(r.body["messages"]))
    assert [m["content"] for m in second_request.body["messages"][1:]] == ["first", "echo: first", "second"]


async def test_concurrency_cap_of_one_runs_agents_one_after_another(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.echo()
    scripted_llm.delay_s = 0.1
    async with AgentHub(llm_settings.with_overrides(max_concurrency=1)) as hub:
        await hub.create_agent("alice")
        await hub.create_agent("bob")
        sent = [await hub.send_message(name, "hi") for name in ("alice", "bob")]
        alice, bob = [await hub.wait_run(r.id, wait_s=10) for r in sent]
    assert alice.status == bob.status == "completed"
    assert not overlap(alice, bob)


async def test_the_agents_a_process_with_room_may_start_are_those_queued_and_running_nowhere_oldest_first(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    # (What a replica with idle slots looks up when the queue is shared; asked of either engine here.)
    async with AgentHub(llm_settings.with_overrides(max_concurrency=1)) as hub:
        ids = {name: (await hub.create_agent(name)).id for name in ("alice", "bob", "carol", "dave")}
        sent = [await hub.send_message(name, "hi") for name in ("alice", "carol", "alice", "carol", "bob")]
        await scripted_llm.wait_for_requests_async(1)  # alice runs (the one slot); the rest wait
        startable = await hub._store.read(lambda tx: tx.startable_agents(10))
        oldest_two = await hub._store.read(lambda tx: tx.startable_agents(2))
        gate.open()
        ends = [await hub.wait_run(run.id, wait_s=10) for run in sent]
        after = await hub._store.read(lambda tx: tx.startable_agents(10))
    assert startable == [ids["carol"], ids["bob"]]  # alice is running; dave has nothing queued
    assert oldest_two == [ids["carol"], ids["bob"]]  # each agent once: carol's next run, then bob's
    assert [run.status for run in ends] == ["completed"] * 5 and after == []


@pytest.mark.postgres_only
async def test_processes_looking_for_queued_work_at_once_take_different_agents(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    # Replicas with idle slots look at the same moment: each look locks the agents it found, and a look
    # running meanwhile passes over them, so no two replicas line up to claim the same run.
    import threading

    async with AgentHub(llm_settings.with_overrides(max_concurrency=1)) as hub:
        names = ("alice", "bob", "carol", "dave", "erin")
        ids = {name: (await hub.create_agent(name)).id for name in names}
        sent = [await hub.send_message(name, "hi") for name in names]
        await scripted_llm.wait_for_requests_async(1)  # alice runs (the one slot); the rest wait
        both_looked = threading.Barrier(2)

        def look(tx: Any) -> list[str]:
            found: list[str] = tx.startable_agents(2)
            both_looked.wait(10)  # neither commits (and lets go of its locks) before the other has looked
            return found

        looks: list[list[str]] = []

        async def one_look() -> None:
            looks.append(await hub._store.write(look))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one_look)
            tg.start_soon(one_look)
        gate.open()
        ends = [await hub.wait_run(run.id, wait_s=10) for run in sent]
    assert sorted(looks) == sorted([[ids["bob"], ids["carol"]], [ids["dave"], ids["erin"]]])
    assert [run.status for run in ends] == ["completed"] * 5


async def test_a_hub_that_runs_no_agents_leaves_every_run_to_one_that_does(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    # (What ``mcp-letta doctor`` and the inspection commands open: on PostgreSQL a hub that runs agents is a
    # replica, and would take the queued runs of the others, to fail them if it has no LLM.)
    async with AgentHub(llm_settings.with_overrides(max_concurrency=1)) as hub:
        await hub.create_agent("alice")
        await hub.create_agent("bob")
        sent = [await hub.send_message("alice", "one"), await hub.send_message("bob", "two")]
        await scripted_llm.wait_for_requests_async(1)  # alice's run started; bob's waits for the one slot
    # That hub closed: alice's run went back to the queue. Both wait for a process that runs agents.
    asked = len(scripted_llm.requests)
    async with AgentHub(llm_settings, runs_agents=False) as looker:
        sent.append(await looker.send_message("bob", "three"))
        await looker.list_agents()  # (time for the look a replica makes as it starts)
        assert [(await looker.get_run(run.id)).status for run in sent] == ["queued"] * 3
        assert len(scripted_llm.requests) == asked
        gate.open()
        async with AgentHub(llm_settings):  # one that runs agents: it takes them, the looker hears the ends
            ends = [await looker.wait_run(run.id, wait_s=20) for run in sent]
    assert [run.status for run in ends] == ["completed"] * 3


async def test_rate_limit_then_success_completes_the_run(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    await llm_hub.create_agent("alice")
    scripted_llm.error(429, retry_after=0)
    scripted_llm.reply("made it")
    run = await llm_hub.send_message("alice", "hello", wait_s=10)
    assert (run.status, run.reply) == ("completed", "made it")
    assert [r.status for r in scripted_llm.requests] == [429, 200]


async def test_llm_down_fails_the_run_clearly_and_loses_nothing(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    async with AgentHub(llm_settings.with_overrides(llm_max_retries=0)) as hub:
        await hub.create_agent("alice")
        scripted_llm.down()
        failed = await hub.send_message("alice", "remember: the meeting is at noon", wait_s=10)
        assert (failed.status, failed.stop_reason, failed.reply) == ("failed", "llm_api_error", None)
        assert "failed once, last with" in failed.error and "MCP_LETTA_LLM_BASE_URL" in failed.error
        assert [(m.role, m.content) for m in await hub.get_messages("alice")] == [
            ("user", "remember: the meeting is at noon")
        ]
        scripted_llm.up()
        scripted_llm.reply("Noon, noted.")
        again = await hub.send_message("alice", "when is the meeting?", wait_s=10)
    assert again.reply == "Noon, noted."
    [request] = scripted_llm.requests
    assert [m["content"] for m in request.body["messages"][1:]] == [
        "remember: the meeting is at noon",
        "when is the meeting?",
    ]


async def test_no_llm_configured_fails_the_run_with_what_to_set(hub: AgentHub) -> None:
    await hub.create_agent("alice")
    run = await hub.send_message("alice", "hello", wait_s=10)
    assert (run.status, run.stop_reason) == ("failed", "llm_api_error")
    assert "MCP_LETTA_LLM_BASE_URL" in run.error


async def test_on_step_reports_each_step_and_its_tool_calls(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    await llm_hub.create_agent("alice")
    scripted_llm.tool_call("memory_insert", {"label": "human", "new_string": "likes jazz"})
    scripted_llm.reply("Jazz, noted.")
    events: list[StepEvent] = []

    async def on_step(event: StepEvent) -> None:
        events.append(event)

    run = await llm_hub.send_message("alice", "I like jazz", wait_s=10, on_step=on_step)
    assert [(e.run_id, e.agent_name, e.step.index) for e in events] == [(run.id, "alice", 0), (run.id, "alice", 1)]
    assert [[(c.name, c.ok) for c in e.step.tool_calls] for e in events] == [[("memory_insert", True)], []]
    assert [e.step for e in events] == run.steps


async def test_runs_are_listed_and_unknown_ids_name_recent_ones(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.echo()
    await llm_hub.create_agent("alice")
    await llm_hub.create_agent("bob")
    first = await llm_hub.send_message("alice", "one", wait_s=10, sender="agent-123")
    second = await llm_hub.send_message("bob", "two", wait_s=10, parent_run_id=first.id, role="system")
    assert [r.id for r in await llm_hub.list_runs()] == [second.id, first.id]
    assert [r.id for r in await llm_hub.list_runs("alice", status="completed")] == [first.id]
    assert (await llm_hub.list_runs(status="queued")).items == []
    assert (second.sender, second.parent_run_id, second.role) == (None, first.id, "system")
    assert first.sender == "agent-123"
    assert scripted_llm.requests[1].body["messages"][-1] == {"role": "system", "content": "two"}
    with pytest.raises(NotFound) as caught:
        await llm_hub.get_run("run-nope")
    assert second.id in str(caught.value) and "list_runs" not in str(caught.value)  # the MCP server adds that hint
    with pytest.raises(NotFound):
        await llm_hub.send_message("alice", "x", parent_run_id="run-nope")


async def test_caller_abort_cancels_the_run_only_when_asked(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    await llm_hub.create_agent("alice")
    scripted_llm.reply("slow", delay_s=30)
    scripted_llm.reply("slow too", delay_s=30)

    async def abort_once_the_llm_is_called(requests: int, **options: bool) -> Run:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: llm_hub.send_message("alice", "a question", wait_s=30, **options))
            await scripted_llm.wait_for_requests_async(requests)
            tg.cancel_scope.cancel()
        return (await llm_hub.list_runs("alice"))[0]

    aborted = await abort_once_the_llm_is_called(1, cancel_on_abort=True)
    assert (aborted.status, aborted.stop_reason) == ("cancelled", "cancelled")
    kept = await abort_once_the_llm_is_called(2)
    assert kept.status == "running"
    assert (await llm_hub.cancel_run(kept.id)).status == "cancelled"


async def test_deleting_an_agent_fails_its_running_and_queued_runs(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    await llm_hub.create_agent("alice")
    running = await llm_hub.send_message("alice", "first")
    queued = await llm_hub.send_message("alice", "second")
    await scripted_llm.wait_for_requests_async(1)
    await llm_hub.delete_agent("alice")
    gate.open()
    first, second = [await llm_hub.wait_run(r.id, wait_s=10) for r in (running, queued)]
    assert (first.status, first.stop_reason, first.reply) == ("failed", "error", None)
    assert "deleted while this run was going" in first.error
    assert (second.status, second.error) == ("failed", "agent 'alice' was deleted before this run started")


async def test_a_hub_closed_and_opened_again_runs_messages_and_reports_each_change_once(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.echo()
    hub = AgentHub(llm_settings)
    await hub.open()
    await hub.create_agent("phoenix")
    await hub.close()
    await hub.open()
    try:
        changes = hub.subscribe_changes()
        block = await hub.create_block("twice", "")
        await hub.append_to_block("twice", "once")
        run = await hub.send_and_wait("phoenix", "are you back?", wait_s=10)
        assert run.status == "completed" and run.reply == "echo: are you back?"
        seen: list[Change] = []
        with pytest.raises(anyio.WouldBlock):
            while True:
                seen.append(changes.receive_nowait())
    finally:
        await hub.close()
    # created, then appended to: each heard once, not once per time the hub was opened
    assert [c.kind for c in seen if c.ref == block.id] == ["block", "block"]


async def test_deleting_an_agent_ends_its_runs_at_once(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    await llm_hub.create_agent("doomed")
    running = await llm_hub.send_message("doomed", "first", wait_s=0)
    queued = await llm_hub.send_message("doomed", "second", wait_s=0)
    await scripted_llm.wait_for_requests_async(1, within_s=10)
    with anyio.fail_after(10):  # (before: they waited for the LLM's answer, here the gate's 30 s)
        await llm_hub.delete_agent("doomed")
        ended = [await llm_hub.wait_run(run.id, wait_s=5) for run in (running, queued)]
    assert [(run.status, run.stop_reason) for run in ended] == [("failed", "error"), ("failed", "error")]
    assert ended[0].error == "agent 'doomed' was deleted while this run was going"
    assert ended[1].error == "agent 'doomed' was deleted before this run started"
    assert len(scripted_llm.requests) == 1  # the queued one never started
    gate.open()
