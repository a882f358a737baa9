"""Runs across restarts and processes sharing one database: memory and history survive, queued runs are
adopted, a run whose process stopped is resumed by the next one (or ends, with the reason, when resuming
cannot help), and one agent runs one run at a time across processes.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from conftest import Gate, bump_schema, execute_sql

from mcp_letta import AgentHub, Settings
from mcp_letta.models import Run
from mcp_letta.runtime.scheduler import LEASE_S
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


async def test_a_closed_hub_hands_its_running_run_back_and_the_next_one_resumes_it_before_the_queued_one(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate
) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        running = await hub.send_message("alice", "first")
        queued = await hub.send_message("alice", "second")
        await scripted_llm.wait_for_requests_async(1)
    gate.open()
    async with AgentHub(llm_settings) as hub:
        first = await hub.get_run(running.id, wait_s=10)
        second = await hub.get_run(queued.id, wait_s=10)
        history = await hub.get_messages("alice")
    assert (first.status, first.reply, first.resumes) == ("completed", "released", 1)
    assert (second.status, second.reply, second.resumes) == ("completed", "released", 0)
    assert first.finished_at <= second.started_at
    assert [(m.role, m.content) for m in history] == [
        ("user", "first"), ("assistant", "released"), ("user", "second"), ("assistant", "released")
    ]  # fmt: skip
    resent = scripted_llm.requests[1].body["messages"]  # the request in flight, sent again as it was
    assert [m["content"] for m in resent[1:]] == ["first"]


async def first_line(process: Process) -> str:
    """The first line a child process prints (a safety net of 30 s)."""
    assert process.stdout is not None
    line = b""
    with anyio.fail_after(30):
        while not line.endswith(b"\n"):
            line += await process.stdout.receive()
    return line.decode()


async def test_killed_process_run_is_resumed_and_its_queued_run_adopted(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
    scripted_llm.on("first question", Response(content="never delivered", delay_s=60), where="any")
    async with await anyio.open_process(
        [sys.executable, "-c", CRASHING_PROCESS, str(db_path), scripted_llm.base_url]
    ) as process:
        line = await first_line(process)
        await scripted_llm.wait_for_requests_async(1, within_s=30)
        process.kill()  # SIGKILL: no clean shutdown, no chance to mark anything
        await process.wait()
    first_id, second_id = line.split()
    scripted_llm.reply("first answer").reply("second answer")
    async with AgentHub(llm_settings) as hub:
        first = await hub.get_run(first_id, wait_s=10)
        second = await hub.get_run(second_id, wait_s=10)
        history = await hub.get_messages("alice")
    assert (first.status, first.reply, first.resumes) == ("completed", "first answer", 1)
    assert (second.status, second.reply) == ("completed", "second answer")
    resent, after = [r.body["messages"] for r in scripted_llm.requests[1:]]
    assert [m["content"] for m in resent[1:]] == ["first question"]
    assert [m["content"] for m in after[1:]] == ["first question", "first answer", "second question"]
    assert [m.content for m in history] == ["first question", "first answer", "second question", "second answer"]


FAST_CLOCK_PROCESS = textwrap.dedent(
    """
    import sys, time
    machine_time = time.time
    time.time = lambda: machine_time() + 60  # this machine's clock runs a minute fast
    import anyio
    from mcp_letta import AgentHub, Settings

    async def main():
        settings = Settings(db_path=sys.argv[1], llm_base_url=sys.argv[2], model="scripted-model")
        async with AgentHub(settings):
            print("started", flush=True)  # it has looked for the runs of dead processes by now
            await anyio.sleep(3600)

    anyio.run(main)
    """
)


@pytest.mark.postgres_only  # replicas on several machines share only the database server's clock
async def test_a_replica_whose_clock_runs_fast_takes_no_run_of_a_live_one(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate, db_path: str
) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        run = await hub.send_message("alice", "hi")
        await scripted_llm.wait_for_requests_async(1)  # running here, held by the gate
        command = [sys.executable, "-c", FAST_CLOCK_PROCESS, db_path, scripted_llm.base_url]
        async with await anyio.open_process(command) as fast:
            await first_line(fast)  # "started"
            while_fast_ran = await hub.get_run(run.id)
            fast.terminate()
        gate.open()
        done = await hub.wait_run(run.id, wait_s=30)
    assert (while_fast_ran.status, while_fast_ran.resumes) == ("running", 0)
    assert (done.status, done.reply, done.resumes) == ("completed", "released", 0)
    assert len(scripted_llm.requests) == 1


def hand_to_a_process_elsewhere(
    db_path: Path, run_id: str, *, heartbeat: float, lease_until: float, **columns: object
) -> None:
    """Make ``run_id`` look like a run that a process on another host runs, with this last heartbeat and lease."""
    sets = "".join(f", {name} = ?" for name in columns)
    execute_sql(
        db_path,
        "INSERT INTO processes(id, pid, host, started_at, heartbeat) VALUES ('ghost', 1, 'elsewhere', '', ?)",
        (heartbeat,),
        f"UPDATE runs SET status = 'running', owner = 'ghost', lease_until = ?{sets} WHERE id = ?",
        (lease_until, *columns.values(), run_id),
    )


def hand_to_a_silent_process(db_path: Path, run_id: str, **columns: object) -> None:
    """Make ``run_id`` look like a run that a process on another host was running when it went silent."""
    stale = time.time() - 120
    hand_to_a_process_elsewhere(db_path, run_id, heartbeat=stale, lease_until=stale, **columns)


async def test_running_run_of_a_silent_process_on_another_host_is_resumed_at_open(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate, db_path: Path
) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        run = await hub.send_message("alice", "hi")
        await scripted_llm.wait_for_requests_async(1)
    hand_to_a_silent_process(db_path, run.id)
    gate.open()
    async with AgentHub(llm_settings) as hub:
        done = await hub.get_run(run.id, wait_s=10)
        history = await hub.get_messages("alice")
    assert (done.status, done.reply, done.resumes) == ("completed", "released", 2)  # closed once, lost once
    assert [m.content for m in history] == ["hi", "released"]


async def test_a_run_cancelled_before_its_process_went_silent_ends_cancelled_not_resumed(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate, db_path: Path
) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        run = await hub.send_message("alice", "hi")
        await scripted_llm.wait_for_requests_async(1)
    hand_to_a_silent_process(db_path, run.id, cancel_requested=1)
    async with AgentHub(llm_settings) as hub:
        ended = await hub.get_run(run.id, wait_s=10)
    assert (ended.status, ended.stop_reason) == ("cancelled", "cancelled")
    assert ended.error == "cancelled: its process stopped before the run saw the request"
    assert len(scripted_llm.requests) == 1  # not asked again


async def test_a_run_whose_process_died_three_times_is_interrupted_with_the_reason(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate, db_path: Path
) -> None:
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        run = await hub.send_message("alice", "hi")
        await scripted_llm.wait_for_requests_async(1)
    hand_to_a_silent_process(db_path, run.id, crashes=2)  # died twice before, resumed twice
    async with AgentHub(llm_settings) as hub:
        ended = await hub.get_run(run.id, wait_s=10)
        assert [r.status for r in await hub.list_runs("alice")] == ["interrupted"]
    assert (ended.status, ended.stop_reason) == ("interrupted", "interrupted")
    assert ended.error.startswith("not resumed again: the process running it died 3 times (killed or crashed)")
    assert len(scripted_llm.requests) == 1


async def test_a_caller_waiting_on_a_run_whose_process_goes_silent_hears_of_its_end_from_the_heartbeat(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    # The run's process is live when the hub opens and falls silent while the caller waits: the hub's own
    # recovery (at a heartbeat) ends the run, a change no other process announces.
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
    async with AgentHub(llm_settings, runs_agents=False) as sender:
        run = await sender.send_message("alice", "hi")  # stays queued: nothing here runs agents
    silent_soon = time.time() - LEASE_S + 1
    hand_to_a_process_elsewhere(db_path, run.id, heartbeat=silent_soon, lease_until=time.time() + 1, crashes=2)
    async with AgentHub(llm_settings) as hub:
        with anyio.fail_after(60):  # a safety net: a heartbeat comes every few seconds
            ended = await hub.wait_run(run.id)
    assert (ended.status, ended.stop_reason) == ("interrupted", "interrupted")
    assert ended.error.startswith("not resumed again: the process running it died 3 times")
    assert scripted_llm.requests == []


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """Wait until a log record holds ``text``."""
    with anyio.fail_after(60):
        while not any(text in record.getMessage() for record in caplog.records):  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_a_process_whose_run_was_taken_over_leaves_its_end_to_the_new_owner(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # This process stalled past its lease (frozen, or cut off from the database): another took the run over
    # and executes it. When this one goes on, its own LLM call has failed; it must not fail the run.
    answer = threading.Event()
    scripted_llm.default = lambda _request: (answer.wait(30), Response(status=500))[1]
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        run = await hub.send_message("alice", "hi")
        await scripted_llm.wait_for_requests_async(1)
        execute_sql(db_path, "UPDATE runs SET owner = 'successor', lease_until = ?, resumes = 1 WHERE id = ?",
                    (time.time() + 600, run.id))  # fmt: skip
        answer.set()
        await logged(caplog, f"run {run.id} was taken over by another process")
        now = await hub.get_run(run.id)
    assert (now.status, now.error, now.resumes) == ("running", None, 1)


async def test_a_run_this_process_owns_but_no_longer_executes_is_resumed_once_its_lease_passes(
    llm_settings: Settings, scripted_llm: ScriptedLLM, db_path: Path
) -> None:
    # E.g. its step and its end could not be written (the database was out of reach): nothing here executes it
    # any more, so nothing may renew its lease, and when the lease passes it is resumed, here or elsewhere.
    async with AgentHub(llm_settings, runs_agents=False) as sender:
        await sender.create_agent("alice")
        run = await sender.send_message("alice", "hi")  # stays queued: nothing here runs agents
    alive = time.time() + 600  # a live process on another host runs it
    hand_to_a_process_elsewhere(db_path, run.id, heartbeat=alive, lease_until=alive)
    scripted_llm.reply("resumed")
    async with AgentHub(llm_settings) as hub:
        assert (await hub.get_run(run.id)).status == "running"  # the live ghost's: left alone
        execute_sql(db_path, "UPDATE runs SET owner = ?, lease_until = ? WHERE id = ?",
                    (hub._store.origin, time.time() + 1, run.id))  # fmt: skip
        with anyio.fail_after(60):  # a safety net: a heartbeat comes every few seconds
            done = await hub.wait_run(run.id)
    assert (done.status, done.reply, done.resumes) == ("completed", "resumed", 1)


async def test_a_run_whose_step_the_database_refused_is_left_unfinished_and_resumed_later(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The store fails under a step (here: a newer mcp-letta migrated the database meanwhile; likewise a lost
    # connection). The run must not end "failed: internal error": the next process resumes it.
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("alice")
        run = await hub.send_message("alice", "hi")
        await scripted_llm.wait_for_requests_async(1)
        bump_schema(db_path, +1)
        hub._store._schema_checked = 0.0  # its next write checks (else within a few seconds)
        gate.open()
        await logged(caplog, f"run {run.id} stopped unfinished")
        bump_schema(db_path, -1)
    hand_to_a_silent_process(db_path, run.id)  # its process is gone
    async with AgentHub(llm_settings) as hub:
        done = await hub.get_run(run.id, wait_s=30)
    assert (done.status, done.reply, done.error) == ("completed", "released", None)
    assert len(scripted_llm.requests) == 2  # the step the database refused was asked again


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


async def test_a_child_whose_waiting_parent_has_ended_is_interrupted_not_resumed(
    llm_settings: Settings, scripted_llm: ScriptedLLM, gate: Gate, db_path: Path
) -> None:
    scripted_llm.on("boss persona", Response(calls=[("ask_worker", {"message": "dig"})]))
    async with AgentHub(llm_settings) as hub:
        await hub.create_agent("worker")
        await hub.create_agent("boss", persona="boss persona", agent_tools=["worker"])
        parent = await hub.send_message("boss", "get it dug")
        await scripted_llm.wait_for_requests_async(2)  # the boss's step, then the worker's request (held)
        [child] = await hub.list_runs("worker")
    hand_to_a_silent_process(db_path, child.id)
    execute_sql(  # the parent ended meanwhile (say its agent was deleted): nobody will read the child's reply
        db_path, "UPDATE runs SET status = 'failed', finished_at = '2026-01-01T00:00:00+00:00' WHERE id = ?",
        (parent.id,),
    )  # fmt: skip
    async with AgentHub(llm_settings) as hub:
        ended = await hub.get_run(child.id, wait_s=10)
    assert (ended.status, ended.stop_reason) == ("interrupted", "interrupted")
    assert ended.error == (
        f"not resumed after its process stopped: the run waiting for it ({parent.id}) has failed, so nobody "
        "would read its reply; send the message again if it is still needed"
    )
    assert len(scripted_llm.requests) == 2


async def test_closing_the_hub_hands_a_waiting_caller_the_run_back_in_the_queue(
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
    [run] = answers  # the caller outlived the hub, and got the run as the hub left it: queued, to resume
    assert (run.status, run.resumes, run.stop_reason, run.error) == ("queued", 1, None, None)
