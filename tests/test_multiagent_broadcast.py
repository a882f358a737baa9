"""Tag broadcast through the hub and the real loopback LLM: recipients run concurrently (overlapping run
intervals in the run records), Letta's match_all/match_some rule with the sender excluded, per-recipient
results and errors, progress per recipient, and an overall timeout that hands back pending run ids.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import most_at_once
from test_multiagent import Agents, call_then_reply, make, newest_run, reply

from mcp_letta import AgentHub, Settings
from mcp_letta.llm.openai import message_text
from mcp_letta.models import BroadcastResult
from mcp_letta.testing import Response, ScriptedLLM

pytestmark = pytest.mark.anyio


async def test_broadcast_to_fifty_slow_agents_runs_them_concurrently(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.echo()
    scripted_llm.delay_s = 0.2
    settings = llm_settings.with_overrides(max_concurrency=50, fanout_concurrency=50)
    async with AgentHub(settings) as hub:
        for i in range(50):
            await hub.create_agent(f"worker{i:02d}", tags=["worker"])
        results = await hub.broadcast("start the task", match_all=["worker"], wait_s=30)
        runs = [await hub.get_run(r.run_id) for r in results if r.run_id]
    assert [r.agent for r in results] == [f"worker{i:02d}" for i in range(50)]
    assert {r.status for r in results} == {"completed"} and len(runs) == 50
    assert all(r.reply == "echo: start the task" and r.latency_ms and r.latency_ms >= 200 for r in results)
    assert most_at_once(runs) >= 40


async def test_fan_out_is_bounded_by_the_fanout_setting(llm_settings: Settings, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.echo()
    scripted_llm.delay_s = 0.1
    async with AgentHub(llm_settings.with_overrides(max_concurrency=50, fanout_concurrency=3)) as hub:
        for i in range(9):
            await hub.create_agent(f"w{i}", tags=["w"])
        results = await hub.broadcast("go", match_all=["w"], wait_s=30)
        runs = [await hub.get_run(r.run_id) for r in results if r.run_id]
    assert {r.status for r in results} == {"completed"}
    assert most_at_once(runs) <= 3


async def test_tag_matching_follows_letta_and_excludes_the_sender(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.echo()
    await llm_hub.create_agent("both", tags=["x", "y"])
    await llm_hub.create_agent("only_x", tags=["x"])
    await llm_hub.create_agent("only_y", tags=["y"])
    await llm_hub.create_agent("untagged")
    await llm_hub.create_agent("boss", tags=["x", "y", "boss"])

    async def names(sender: str | None = None, **tags: Any) -> list[str]:
        return [r.agent for r in await llm_hub.broadcast("hi", sender=sender, wait_s=10, **tags)]

    assert await names(match_all=["x"]) == ["boss", "both", "only_x"]  # by name
    assert await names(match_some=["y"]) == ["boss", "both", "only_y"]
    assert await names(match_all=["x"], match_some=["y"]) == ["boss", "both"]
    assert await names(match_all=["x", "y"]) == ["boss", "both"]
    assert await names(match_some=["nobody"]) == []
    assert await names() == ["boss", "both", "only_x", "only_y", "untagged"]  # untagged only with both empty
    assert await names(sender="boss", match_all=["x"]) == ["both", "only_x"]
    [result] = await llm_hub.broadcast("hello", sender="boss", match_all=["x", "y"], wait_s=10)
    boss = await llm_hub.get_agent("boss")
    run = await llm_hub.get_run(result.run_id)
    assert run.role == "system" and run.input.startswith(f"[Incoming message from agent with ID '{boss.id}'")


async def test_each_recipient_gets_a_result_with_its_reply_or_its_error_and_progress_as_it_finishes(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("good", reply("done"))
    agents.on("slowgood", reply("done later", delay_s=0.3))
    agents.on("crashy", lambda _request: Response(status=500))  # every retry fails too
    finished: list[str] = []

    async def on_result(result: BroadcastResult) -> None:
        finished.append(result.agent)

    async with AgentHub(llm_settings.with_overrides(llm_max_retries=0)) as hub:
        await make(hub, "good", "slowgood", "crashy", tags=["team"])
        results = await hub.broadcast("report", match_all=["team"], wait_s=10, on_result=on_result)
    by_name = {r.agent: r for r in results}
    assert (by_name["good"].status, by_name["good"].reply, by_name["good"].error) == ("completed", "done", None)
    assert by_name["slowgood"].reply == "done later"
    crashed = by_name["crashy"]
    assert (crashed.status, crashed.reply) == ("failed", None) and "HTTP 500" in crashed.error
    assert crashed.run_id and crashed.latency_ms is not None
    assert sorted(finished) == ["crashy", "good", "slowgood"] and finished[-1] == "slowgood"


async def test_an_overall_timeout_returns_the_slow_ones_as_pending_runs_that_complete_later(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("quick", reply("fast answer"))
    agents.on("sloth", reply("slow answer", delay_s=2.0))
    agents.on("queued", reply("queued answer"))
    async with AgentHub(llm_settings.with_overrides(fanout_concurrency=2)) as hub:
        await make(hub, "quick", "sloth", "queued", tags=["team"])
        # fanout 2: 'queued' (by name, first) and 'quick' go first; 'sloth' waits for a slot, then is slow.
        results = await hub.broadcast("status?", match_all=["team"], wait_s=1.0)
        by_name = {r.agent: r for r in results}
        assert by_name["quick"].status == "completed" and by_name["queued"].status == "completed"
        pending = by_name["sloth"]
        assert (pending.status, pending.reply, pending.latency_ms) == ("pending", None, None)
        assert (await hub.wait_run(pending.run_id, wait_s=10)).reply == "slow answer"


async def test_recipients_not_yet_sent_to_at_the_deadline_are_sent_and_pending(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    for name in ("a1", "a2", "a3"):
        agents.on(name, reply(f"{name} ok", delay_s=0.5))
    async with AgentHub(llm_settings.with_overrides(fanout_concurrency=1)) as hub:
        await make(hub, "a1", "a2", "a3", tags=["t"])
        results = await hub.broadcast("go", match_all=["t"], wait_s=0.2)
        assert [(r.agent, r.status) for r in results] == [("a1", "pending"), ("a2", "pending"), ("a3", "pending")]
        assert all(r.run_id for r in results)
        done = [await hub.wait_run(r.run_id, wait_s=10) for r in results]
    assert [r.reply for r in done] == ["a1 ok", "a2 ok", "a3 ok"]


async def test_a_supervisor_agent_broadcasts_with_the_old_and_new_tool_names(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("w1", reply("w1 done"))
    agents.on("w2", lambda _request: Response(status=400, body={"error": {"message": "bad"}}))
    agents.on(
        "supervisor",
        call_then_reply(
            "send_message_to_agents_matching_all_tags",
            {"message": "Let's start the task", "tags": ["worker"]},
            lambda result: result["message"],
        ),
    )
    await make(llm_hub, "w1", "w2", tags=["worker"])
    await make(llm_hub, "supervisor", tags=["worker"], include_multi_agent_tools=True)
    run = await llm_hub.send_message("supervisor", "kick off", wait_s=10)
    w1, w2 = await llm_hub.get_agent("w1"), await llm_hub.get_agent("w2")
    entries = eval(run.reply)  # Letta returns the Python repr of the list of per-recipient dicts
    assert entries[0] == {"agent_id": w1.id, "agent": "w1", "status": "completed", "response": ["w1 done"]}
    assert (entries[1]["agent_id"], entries[1]["status"]) == (w2.id, "failed")
    assert entries[1]["response"][0].startswith("<error: ") and "bad" in entries[1]["response"][0]
    assert len(entries) == 2  # the supervisor has the tag but is excluded

    agents.on(
        "supervisor",
        call_then_reply(
            "send_message_to_agents_matching_tags",
            {"message": "anyone?", "match_all": ["worker"], "match_some": ["nobody"]},
            lambda result: result["message"],
        ),
    )
    run = await llm_hub.send_message("supervisor", "again", wait_s=10)
    assert run.reply.startswith("No agent matches match_all=['worker'] and match_some=['nobody']")


@pytest.mark.parametrize("fanout", [50, 1])  # 1: wanda's turn comes after alice's reply, and passes on
async def test_a_recipient_that_would_close_a_cycle_fails_alone_and_the_others_answer(
    llm_settings: Settings, scripted_llm: ScriptedLLM, fanout: int
) -> None:
    # wanda waits on boss; boss broadcasts to the team, wanda included: that wait would deadlock.
    agents = Agents(scripted_llm)
    agents.on("alice", reply("alice fine"))
    agents.on(
        "wanda",
        call_then_reply(
            "send_message_to_agent_and_wait_for_reply", {"message": "status?", "other_agent_id": "boss"},
            lambda result: f"boss said: {result['message']}",
        ),
    )  # fmt: skip
    agents.on("xena", reply("xena fine"))
    agents.on("yuri", reply("yuri fine"))
    agents.on(
        "boss",
        call_then_reply(
            "send_message_to_agents_matching_tags", {"message": "report", "match_all": ["team"], "match_some": []},
            lambda result: result["message"],
        ),
    )  # fmt: skip
    async with AgentHub(llm_settings.with_overrides(fanout_concurrency=fanout)) as llm_hub:
        await check_cycle_refused_alone(llm_hub)


async def check_cycle_refused_alone(llm_hub: AgentHub) -> None:
    await make(llm_hub, "alice", "wanda", "xena", "yuri", tags=["team"], include_multi_agent_tools=True)
    await make(llm_hub, "boss", include_multi_agent_tools=True)
    await llm_hub.send_message("wanda", "ask the boss", wait_s=10)
    boss_run = await newest_run(llm_hub, "boss")
    entries = {e["agent"]: e for e in eval(boss_run.reply)}  # Letta's repr of the per-recipient dicts
    assert entries["wanda"]["status"] == "failed"
    assert "refused: boss is waiting on wanda, which is waiting on boss" in entries["wanda"]["response"][0]
    others = ("alice", "xena", "yuri")
    assert [entries[name]["response"] for name in others] == [[f"{name} fine"] for name in others]
    assert [r.agent_name for r in await llm_hub.list_runs("wanda")] == ["wanda"]  # the refused one was not stored


# -- broadcasts to agents this process ran before ------------------------------------------------------------
async def test_a_broadcast_builds_prompts_from_memory_another_process_just_changed(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on(
        "ann", reply(lambda request: "new rules" if "NEW RULES" in message_text(request["messages"][0]) else "old")
    )
    async with AgentHub(llm_settings) as hub, AgentHub(llm_settings) as other:
        await make(hub, "ann", tags=["team"])
        assert [r.reply for r in await hub.broadcast("first", match_all=["team"], wait_s=10)] == ["old"]
        await other.write_block("persona", "NEW RULES", agent="ann")  # this process does not know of it
        [result] = await hub.broadcast("second", match_all=["team"], wait_s=10)
    assert (result.status, result.reply) == ("completed", "new rules")
    assert "NEW RULES" in agents.requests_of("ann")[-1].system


async def test_closing_the_hub_while_a_broadcast_waits_on_the_llm_leaves_its_runs_to_the_next_hub(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    slow = {"on": False}
    agents.on("ann", reply("fine"))
    agents.on("ben", lambda _request: Response(content="late", delay_s=5.0 if slow["on"] else 0.0))
    async with AgentHub(llm_settings) as hub:
        await make(hub, "ann", "ben", tags=["team"])
        await hub.broadcast("first", match_all=["team"], wait_s=10)
        slow["on"] = True
        with anyio.move_on_after(0.5):
            await hub.broadcast("second", match_all=["team"], wait_s=10)
        [ben_run] = await hub.list_runs("ben", limit=1)
    slow["on"] = False
    async with AgentHub(llm_settings) as hub:
        done = await hub.get_run(ben_run.id, wait_s=10)
        history = await hub.get_messages("ben")
    assert (done.input, done.status, done.reply, done.resumes) == ("second", "completed", "late", 1)
    assert [m.content for m in history if m.role == "user"] == ["first", "second"]  # its input once


async def test_a_recipient_whose_answer_calls_a_tool_goes_on_to_the_next_step(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("ann", call_then_reply("memory_insert", {"label": "human", "new_string": "Boss asked."}, "noted"))
    async with AgentHub(llm_settings) as hub:
        await make(hub, "ann", tags=["team"])
        await hub.broadcast("first", match_all=["team"], wait_s=10)
        [result] = await hub.broadcast("second", match_all=["team"], wait_s=10)
        run = await hub.get_run(result.run_id)
        block = await hub.read_block("human", agent="ann")
    assert (result.status, result.reply) == ("completed", "noted")
    assert [[c.name for c in step.tool_calls] for step in run.steps] == [["memory_insert"], []]
    assert block.value.count("Boss asked.") == 2  # once per broadcast
    assert len(agents.requests_of("ann")) == 4  # two steps each, nobody asked twice
