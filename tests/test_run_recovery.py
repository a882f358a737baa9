"""Runs across restarts and processes sharing one database: memory and history survive, queued runs are
adopted, a run whose process died is interrupted, and one agent runs one run at a time across processes.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest
from conftest import Gate, execute_sql

from mcp_letta import AgentHub, Settings
from mcp_letta.models import Run
from mcp_letta.testing import Response, ScriptedLLM

pytestmark = pytest.mark.anyio

CRASHING_PROCESS = textwrap.dedent(
    """
    import sys, anyio
    from mcp_letta import AgentHub, Settings

    async def main():
        settings = Settings(db_path=sys.argv[1], llm_base_url=sys.argv[2], model="scripted-model")
        async with AgentHub(settings) as hub:
            first = await hub.send_message("alice", "first question")
            second = await hub.send_message("alice", "second question")
            print(first.id, second.id, flush=True)
            await anyio.sleep(3600)  # killed while the first run waits on the LLM

    anyio.run(main)
    """
)


async def test_restarted_hub_keeps_memory_and_history(llm_settings: Settings, scripted_llm: ScriptedLLM) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        scripted_llm.tool_call("memory_insert", {"label": "human", "new_string": "Name: Ada."})
        scripted_llm.reply("Hi Ada.")
        await hub.send_message("alice", "I am Ada", wait_s=10)
    async with AgentHub(llm_settings) as hub:
        assert (await hub.read_block("human", agent="alice")).value == "Name: Ada."
        assert [m.role for m in await hub.get_messages("alice")] == ["user", "assistant", "tool", "assistant"]
        scripted_llm.reply("You are Ada.")
        run = await hub.send_message("alice", "who am I?", wait_s=10)
    assert run.reply == "You are Ada."
    request = scripted_llm.requests[-1]
    assert "Name: Ada." in request.system
    assert [m["role"] for m in request.body["messages"]] == ["system", "user", "assistant", "tool", "assistant", "user"]


async def test_queued_run_survives_a_restart_and_the_running_one_is_interrupted(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        running = await hub.send_message("alice", "first")
        queued = await hub.send_message("alice", "second")
        await scripted_llm.wait_for_requests_async(1)
    gate.open()
    async with AgentHub(llm_settings) as hub:
        interrupted = await hub.get_run(running.id)
        assert (interrupted.status, interrupted.stop_reason) == ("interrupted", "interrupted")
        assert "send the message again" in interrupted.error
        done = await hub.get_run(queued.id, wait_s=10)
    assert (done.status, done.reply) == ("completed", "released")


async def test_killed_process_run_is_interrupted_and_its_queued_run_adopted(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
    scripted_llm.on("first question", Response(content="never delivered", delay_s=60), where="any")
    async with await anyio.open_process(
        [sys.executable, "-c", CRASHING_PROCESS, str(db_path), scripted_llm.base_url]
    ) as process:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(30):  # a safety net only
            while not line.endswith(b"\n"):
                line += await process.stdout.receive()
            await scripted_llm.wait_for_requests_async(1, within_s=30)
        process.kill()  # SIGKILL: no clean shutdown, no chance to mark anything
        await process.wait()
    first_id, second_id = line.decode().split()
    scripted_llm.reply("second answer")
    async with AgentHub(llm_settings) as hub:
        first = await hub.get_run(first_id)
        assert (first.status, first.stop_reason) == ("interrupted", "interrupted")
        second = await hub.get_run(second_id, wait_s=10)
    assert (second.status, second.reply) == ("completed", "second answer")
    [history] = [r.body["messages"] for r in scripted_llm.requests[1:]]
    assert [m["content"] for m in history[1:]] == ["first question", "second question"]


async def test_running_run_of_a_silent_process_on_another_host_is_interrupted_at_open(
    llm_settings: Settings, db_path: Path
) -> None:
    async with AgentHub(llm_settings) as hub:
        agent = await hub.create_agent("alice")
    stale = time.time() - 120
    execute_sql(
        db_path,
        "INSERT INTO processes(id, pid, host, started_at, heartbeat) VALUES ('ghost', 1, 'elsewhere', '', ?)",
        (stale,),
        "INSERT INTO runs(id, agent_id, agent_name, status, input, owner, lease_until, created_at) "
        "VALUES ('run-ghost', ?, 'alice', 'running', 'hi', 'ghost', ?, '2026-01-01T00:00:00+00:00')",
        (agent.id, stale),
    )
    async with AgentHub(llm_settings) as hub:
        run = await hub.get_run("run-ghost")
    assert (run.status, run.stop_reason) == ("interrupted", "interrupted")


async def test_two_processes_run_one_agent_one_run_at_a_time_in_order(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.echo()
    scripted_llm.delay_s = 0.3
    async with AgentHub(llm_settings) as first, AgentHub(llm_settings) as second:
        await first.create_agent("alice")
        one = await first.send_message("alice", "one")
        two = await second.send_message("alice", "two")
        one = await second.wait_run(one.id, wait_s=10)  # a run of another process is waited on through the change feed
        two = await first.wait_run(two.id, wait_s=10)
    assert (one.reply, two.reply) == ("echo: one", "echo: two")
    assert one.finished_at <= two.started_at
    assert [m["content"] for m in scripted_llm.requests[1].body["messages"][1:]] == ["one", "echo: one", "two"]


async def test_cancel_from_another_process_stops_the_run(llm_settings: Settings, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.reply("too late", delay_s=60)
    async with AgentHub(llm_settings) as first, AgentHub(llm_settings) as second:
        await first.create_agent("alice")
        run = await first.send_message("alice", "long job")
        await scripted_llm.wait_for_requests_async(1)
        cancelled = await second.cancel_run(run.id)
        assert (cancelled.status, cancelled.stop_reason, cancelled.reply) == ("cancelled", "cancelled", None)
        assert [m.role for m in await first.get_messages("alice")] == ["user"]


async def test_closing_the_hub_hands_a_waiting_caller_the_interrupted_run(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    answers: list[Run] = []

    async def ask(hub: AgentHub) -> None:
        answers.append(await hub.send_message("alice", "hello", wait_s=30))

    async with anyio.create_task_group() as tg:
        async with AgentHub(llm_settings) as hub:
            await hub.create_agent("alice")
            tg.start_soon(ask, hub)
            await scripted_llm.wait_for_requests_async(1)
    [run] = answers  # the caller outlived the hub, and got the run as the hub left it
    assert (run.status, run.stop_reason) == ("interrupted", "interrupted")
    assert "shut down" in run.error
