"""The multi-agent MCP tools in both protocol eras: the three Letta primitives, the host inbox, agents as
tools, pipelines, metrics and the pattern prompts, against the real loopback scripted LLM."""

from __future__ import annotations

import re
from typing import Any

import anyio
import mcp.types as types
import pytest
from conftest import client, most_at_once, ok
from mcp import Client

from mcp_letta import AgentHub, Settings
from mcp_letta.server.app import LettaServer, build_server
from mcp_letta.testing import ScriptedLLM

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture
def server(llm_server: LettaServer) -> LettaServer:
    return llm_server


async def test_broadcast_reports_each_recipient_as_it_finishes(
    server: LettaServer, mode: str, scripted_llm: ScriptedLLM
) -> None:
    for i in range(5):
        await server.hub.create_agent(f"w{i}", persona=f"worker {i} persona", tags=["worker", "eu" if i < 3 else "us"])
        scripted_llm.on(f"worker {i} persona", f"done by w{i}")
    await server.hub.create_agent("boss", tags=["boss"])
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async with client(server, mode) as c:
        result = await c.call_tool(
            "send_message_to_agents_matching_tags",
            {"message": "status?", "match_all": ["worker"], "match_some": ["eu"]},
            progress_callback=on_progress,
        )
        assert not result.is_error, result.content
        got = result.structured_content
        old_name = await ok(c, "send_message_to_agents_matching_all_tags", message="again", tags=["worker", "us"])
    assert got["count"] == 3 and got["pending"] == 0
    assert {r["agent"]: r["reply"] for r in got["results"]} == {f"w{i}": f"done by w{i}" for i in range(3)}
    assert all(r["status"] == "completed" and r["latency_ms"] >= 0 for r in got["results"])
    assert sorted(progress) == sorted(f"w{i}: completed" for i in range(3))
    assert sorted(r["agent"] for r in old_name["results"]) == ["w3", "w4"]


async def test_async_send_returns_at_once_and_the_reply_reaches_the_inbox(
    server: LettaServer, scripted_llm: ScriptedLLM
) -> None:
    await server.hub.create_agent("mailer", persona="mailer persona")
    scripted_llm.on("mailer persona", "here is my answer")
    inbox_updated = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification) and str(message.params.uri) == "letta://inbox":
            inbox_updated.set()

    async with Client(server.mcp, mode="legacy", message_handler=on_message) as c:
        await c.subscribe_resource("letta://inbox")
        sent = await ok(c, "send_message_to_agent_async", agent="mailer", message="answer later")
        assert sent["status"] in ("queued", "running") and sent["run_id"].startswith("run-")
        with anyio.fail_after(10):
            await inbox_updated.wait()
        inbox = (await c.read_resource("letta://inbox")).contents[0].text
        assert "here is my answer" in inbox
        first = await ok(c, "check_replies")
        assert [(r["run_id"], r["reply"]) for r in first["runs"]] == [(sent["run_id"], "here is my answer")]
        assert (await ok(c, "check_replies"))["count"] == 0  # read once
        assert (await ok(c, "get_run", run_id=sent["run_id"]))["reply"] == "here is my answer"


async def test_modern_listener_hears_the_inbox(server: LettaServer, scripted_llm: ScriptedLLM) -> None:
    await server.hub.create_agent("mailer2", persona="mailer2 persona")
    scripted_llm.on("mailer2 persona", "modern answer")
    async with Client(server.mcp) as c, c.listen(resource_subscriptions=["letta://inbox"]) as sub:
        await ok(c, "send_message_to_agent_async", agent="mailer2", message="hi")
        with anyio.fail_after(10):
            event = await sub.__anext__()
    assert event.uri == "letta://inbox"


async def test_an_orchestrator_drives_a_specialist_attached_as_a_tool(
    server: LettaServer, mode: str, scripted_llm: ScriptedLLM
) -> None:
    await server.hub.create_agent("researcher", persona="researcher persona")
    async with client(server, mode) as c:
        created = await ok(c, "create_agent", name="orchestrator", persona="orchestrator persona")
        assert created["agent_tools"] == []
        attached = await ok(c, "attach_agent_tool", agent="orchestrator", tool_agent="researcher")
        assert [t["name"] for t in attached["agent_tools"]] == ["researcher"]
        scripted_llm.on("orchestrator persona").tool_call("ask_researcher", {"message": "find facts"})
        scripted_llm.on("orchestrator persona", "the team says: facts found")
        scripted_llm.on("researcher persona", "facts found")
        reply = await ok(c, "send_message_to_agent_and_wait_for_reply", agent="orchestrator", message="go")
    assert reply["status"] == "completed" and reply["reply"] == "the team says: facts found"
    assert reply["tool_calls"] == [{"name": "ask_researcher", "ok": True}]
    researcher_runs = await server.hub.list_runs("researcher")
    assert researcher_runs[0].input.startswith("[Incoming message from agent with ID '")
    assert researcher_runs[0].parent_run_id == reply["run_id"]


async def test_a_wait_that_would_close_a_cycle_is_refused(server: LettaServer, scripted_llm: ScriptedLLM) -> None:
    await server.hub.create_agent("ping", persona="ping persona", include_multi_agent_tools=True)
    await server.hub.create_agent("pong", persona="pong persona", include_multi_agent_tools=True)
    wait = "send_message_to_agent_and_wait_for_reply"
    scripted_llm.on("ping persona").tool_call(wait, {"message": "hi pong", "other_agent_id": "pong"})
    scripted_llm.on("pong persona").tool_call(wait, {"message": "hi ping", "other_agent_id": "ping"})
    scripted_llm.on("pong persona", "pong could not ask back")
    scripted_llm.on("ping persona", "ping done")
    async with Client(server.mcp, mode="legacy") as c:
        reply = await ok(c, "send_message", agent="ping", message="start", timeout_s=30)
    assert reply["status"] == "completed" and reply["reply"] == "ping done"
    pong_run = (await server.hub.list_runs("pong"))[0]
    refused = pong_run.steps[0].tool_calls[0]
    assert not refused.ok and "deadlock" in refused.result_preview.lower()


async def test_a_failing_sub_agent_gives_its_caller_a_clear_error(
    server: LettaServer, scripted_llm: ScriptedLLM
) -> None:
    await server.hub.create_agent("fragile", persona="fragile persona")
    await server.hub.create_agent("lead", persona="lead persona", agent_tools=["fragile"])
    scripted_llm.on("lead persona").tool_call("ask_fragile", {"message": "do it"})
    scripted_llm.on("lead persona", "fragile failed, carrying on")
    scripted_llm.on("fragile persona").error(500).error(500).error(500)
    async with Client(server.mcp, mode="legacy") as c:
        reply = await ok(c, "send_message", agent="lead", message="go", timeout_s=30)
    assert reply["status"] == "completed" and reply["reply"] == "fragile failed, carrying on"
    assert reply["tool_calls"] == [{"name": "ask_fragile", "ok": False}]


async def test_pipeline_passes_each_reply_on_and_metrics_count_the_traffic(
    server: LettaServer, mode: str, scripted_llm: ScriptedLLM
) -> None:
    for stage in ("research", "write", "edit"):
        await server.hub.create_agent(f"{stage}er", persona=f"{stage} persona")
    scripted_llm.on("research persona", "notes")
    scripted_llm.on("write persona", "draft")
    scripted_llm.on("edit persona", "final article")
    async with client(server, mode) as c:
        result = await ok(c, "run_pipeline", stages=["researcher", "writeer", "editer"], message="topic")
        metrics = await ok(c, "get_metrics")
        missing = await c.call_tool("run_pipeline", {"stages": ["researcher", "nobody"], "message": "x"})
    assert result["status"] == "completed" and result["output"] == "final article"
    assert [s["reply"] for s in result["stages"]] == ["notes", "draft", "final article"]
    inputs = [(await server.hub.list_runs(name))[0].input for name in ("writeer", "editer")]
    assert inputs == ["notes", "draft"]
    assert {a["agent"] for a in metrics["agents"]} >= {"researcher", "writeer", "editer"}
    assert all(p["sender"] == "host" for p in metrics["pairs"])
    assert missing.is_error and "nobody" in missing.content[0].text


async def test_prompts_teach_the_patterns(server: LettaServer, mode: str) -> None:
    async with client(server, mode) as c:
        names = {p.name for p in (await c.list_prompts()).prompts}
        assert names == {"orchestrator_with_specialists", "pipeline", "supervisor_broadcast", "mediator"}
        text = (await c.get_prompt("pipeline", {"topic": "memory"})).messages[0].content.text
    assert "run_pipeline" in text and "memory" in text
    core = build_server(server.hub, server.hub.settings.with_overrides(tools="core"))
    async with client(core, mode) as c:  # each prompt's tools are there (they sent hosts to tools left out)
        listed = {t.name for t in (await c.list_tools()).tools}
        offered = [p.name for p in (await c.list_prompts()).prompts]
    assert offered == ["supervisor_broadcast"]
    text = (await core.mcp.get_prompt("supervisor_broadcast", {"task": "x"})).messages[0].content.text
    called = set(re.findall(r"\b([a-z_]+)\(", text))
    assert called and called <= listed, called - listed


async def test_broadcast_to_fifty_slow_agents_through_mcp_runs_them_concurrently(
    llm_settings: Settings, mode: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.echo()
    scripted_llm.delay_s = 0.2
    async with AgentHub(llm_settings.with_overrides(max_concurrency=50, fanout_concurrency=50)) as hub:
        for i in range(50):
            await hub.create_agent(f"worker{i:02d}", tags=["worker"])
        wide = build_server(hub)
        async with wide.running(), client(wide, mode) as c:
            got = await ok(
                c, "send_message_to_agents_matching_tags", message="start", match_all=["worker"], timeout_s=30
            )
        runs = [await hub.get_run(r["run_id"]) for r in got["results"]]
    assert got["count"] == 50 and {r["status"] for r in got["results"]} == {"completed"}
    assert most_at_once(runs) >= 40  # from the recorded run intervals, not from wall-clock time
