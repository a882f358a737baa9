"""Agents talking to agents through the hub and the real loopback LLM: Letta's wrapper and reply shape,
async replies routed back to the sending agent and to the host inbox, agents attached as tools (and still
there after a restart), pipelines, and metrics from the run records.

``Agents`` (also used by the other test_multiagent_* modules) scripts the LLM per agent: every agent's
system prompt starts with ``[ROLE <name>]`` and a handler decides what that agent's LLM answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from mcp_letta import AgentHub, Invalid, NotFound, Settings
from mcp_letta.models import Run
from mcp_letta.testing import RecordedRequest, Response, ScriptedLLM, message_text

pytestmark = pytest.mark.anyio

Handler = Callable[[dict[str, Any]], Response]
WRAPPER = "[Incoming message from agent with ID '{}' - your response will be delivered to the sender] {}"


def role(name: str) -> str:
    """The system prompt that routes an agent's LLM requests to its handler."""
    return f"[ROLE {name}] You are {name}."


def last(request: dict[str, Any]) -> dict[str, Any]:
    return request["messages"][-1]


def tool_result(request: dict[str, Any]) -> dict[str, Any] | None:
    """The packaged result of the previous step's tool call, if this request follows one."""
    message = last(request)
    return json.loads(message["content"]) if message["role"] == "tool" else None


def reply(text: str | Callable[[dict[str, Any]], str], delay_s: float = 0.0) -> Handler:
    """Always answer ``text`` (or ``text(request)``)."""
    return lambda request: Response(content=text(request) if callable(text) else text, delay_s=delay_s)


def call_then_reply(tool: str, args: dict[str, Any], final: Callable[[dict[str, Any]], str] | str) -> Handler:
    """Call ``tool`` once per incoming message, then answer ``final`` (which can read the tool result)."""

    def handle(request: dict[str, Any]) -> Response:
        result = tool_result(request)
        if result is None:
            return Response(calls=[(tool, args)])
        return Response(content=final(result) if callable(final) else final)

    return handle


class Agents:
    """Routes the scripted LLM's requests to a handler per agent (by the ``[ROLE name]`` in the system prompt)."""

    def __init__(self, llm: ScriptedLLM) -> None:
        self.llm = llm
        self.handlers: dict[str, Handler] = {}
        llm.default = self._respond

    def on(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def _respond(self, request: dict[str, Any]) -> Response:
        system = message_text(request["messages"][0])
        for name, handler in self.handlers.items():
            if f"[ROLE {name}]" in system:
                return handler(request)
        return Response(content="ok")

    def requests_of(self, name: str) -> list[RecordedRequest]:
        return [r for r in self.llm.requests if f"[ROLE {name}]" in r.system]


async def make(hub: AgentHub, *names: str, **options: Any) -> None:
    for name in names:
        await hub.create_agent(name, system=role(name), **options)


async def newest_run(hub: AgentHub, agent: str) -> Run:
    [run] = await hub.list_runs(agent, limit=1)
    return run


async def test_an_agent_waits_for_another_with_lettas_wrapper_and_reply_shape(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    await make(llm_hub, "alice", include_multi_agent_tools=True)
    await make(llm_hub, "bob")
    bob = await llm_hub.get_agent("bob")
    agents.on(
        "alice",
        call_then_reply(
            "send_message_to_agent_and_wait_for_reply",
            {"message": "Ping from Alice", "other_agent_id": "bob"},
            lambda result: f"bob said {result['message']}",
        ),
    )
    agents.on("bob", reply("pong"))
    run = await llm_hub.send_message("alice", "ask bob", wait_s=10)
    alice = await llm_hub.get_agent("alice")
    assert run.status == "completed"
    assert run.reply == f"bob said {{'agent_id': '{bob.id}', 'response': ['pong']}}"
    child = await newest_run(llm_hub, "bob")
    assert (child.role, child.sender, child.parent_run_id, child.depth) == ("system", alice.id, run.id, 1)
    assert child.input == WRAPPER.format(alice.id, "Ping from Alice")  # no lowercased copy (Letta's quirk)
    [bob_request] = agents.requests_of("bob")
    assert bob_request.body["messages"][-1] == {"role": "system", "content": child.input}
    assert "send_message_to_agent_async" in agents.requests_of("alice")[0].tool_names
    assert "send_message_to_agent_async" not in bob_request.tool_names  # opt-in, as in Letta


async def test_letta_messaging_tools_are_offered_only_to_agents_that_opt_in(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("carol", reply("hi"))
    await make(llm_hub, "carol", metadata={"team": "blue"})
    await llm_hub.send_message("carol", "one", wait_s=10)
    updated = await llm_hub.update_agent("carol", include_multi_agent_tools=True)
    assert updated.metadata == {"team": "blue", "include_multi_agent_tools": True}
    await llm_hub.send_message("carol", "two", wait_s=10)
    await llm_hub.update_agent("carol", include_multi_agent_tools=False)
    await llm_hub.send_message("carol", "three", wait_s=10)
    offered = [set(r.tool_names) for r in agents.requests_of("carol")]
    multi = {
        "send_message_to_agent_and_wait_for_reply",
        "send_message_to_agent_async",
        "send_message_to_agents_matching_tags",
        "send_message_to_agents_matching_all_tags",
    }
    assert [multi <= tools for tools in offered] == [False, True, False]
    assert not multi & offered[0] and "memory_insert" in offered[1]
    assert (await llm_hub.get_agent("carol")).metadata == {"team": "blue"}


async def test_the_host_waits_with_a_plain_user_message_and_gets_the_run(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    await make(llm_hub, "bob")
    agents.on("bob", reply("hello host"))
    run = await llm_hub.send_and_wait("bob", "hi bob", wait_s=10)
    assert (run.status, run.reply, run.role, run.input, run.sender, run.depth) == (
        "completed", "hello host", "user", "hi bob", None, 0,
    )  # fmt: skip
    with pytest.raises(NotFound, match="did you mean 'bob'"):
        await llm_hub.send_and_wait("bbo", "hi", wait_s=1)
    with pytest.raises(Invalid, match="empty"):
        await llm_hub.send_and_wait("bob", "  ", wait_s=1)


async def test_an_async_reply_reaches_the_sending_agent_as_a_message_it_processes_in_its_own_run(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    await make(llm_hub, "alice", include_multi_agent_tools=True)
    await make(llm_hub, "bob")
    bob = await llm_hub.get_agent("bob")

    def alice(request: dict[str, Any]) -> Response:
        incoming = message_text(last(request))
        if incoming.startswith("[Reply from agent"):
            return Response(content="thanks, noted")
        result = tool_result(request)
        if result is None:
            args = {"message": "what is 6*7?", "other_agent_id": "bob"}
            return Response(calls=[("send_message_to_agent_async", args)])
        return Response(content=f"sent: {result['message']}")

    agents.on("alice", alice)
    agents.on("bob", reply("42", delay_s=0.2))
    first = await llm_hub.send_message("alice", "ask bob in the background", wait_s=10)
    bob_run = await newest_run(llm_hub, "bob")
    assert first.reply == (
        f"sent: Message sent (run {bob_run.id}); the reply will be delivered to you as a new message when bob answers."
    )
    assert bob_run.reply_to == first.agent_id and bob_run.parent_run_id == first.id
    await llm_hub.wait_run(bob_run.id, wait_s=10)
    delivered = await newest_run(llm_hub, "alice")  # queued in the transaction that ended bob's run
    assert delivered.id != first.id and delivered.parent_run_id == bob_run.id
    assert (delivered.role, delivered.sender) == ("system", bob.id)
    assert delivered.input == f"[Reply from agent 'bob' (ID '{bob.id}') to your message (run {bob_run.id})] 42"
    assert (await llm_hub.wait_run(delivered.id, wait_s=10)).reply == "thanks, noted"
    history = await llm_hub.get_messages("alice")
    assert [(m.role, m.content) for m in history[-2:]] == [("system", delivered.input), ("assistant", "thanks, noted")]
    assert await llm_hub.inbox_count() == 0  # an agent's reply never lands in the host inbox


async def test_a_failed_async_message_is_reported_back_to_the_sender(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("bob", lambda _request: Response(status=400, body={"error": {"message": "bad request"}}))
    async with AgentHub(llm_settings) as hub:
        await make(hub, "alice", "bob")
        alice = await hub.get_agent("alice")
        sent = await hub.send_async("bob", "do it", sender="alice")
        failed = await hub.wait_run(sent.id, wait_s=10)
        delivered = await newest_run(hub, "alice")
        assert failed.status == "failed" and delivered.parent_run_id == sent.id
        assert delivered.input.startswith(f"[No reply from agent 'bob' (ID '{failed.agent_id}') to your message")
        assert "its run failed: " in delivered.input and failed.error in delivered.input
        assert sent.input == WRAPPER.format(alice.id, "do it")


async def test_the_hosts_async_reply_is_in_check_replies_once_and_announced_on_the_feed(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    await make(llm_hub, "bob", "carol")
    agents.on("bob", reply("bob's answer"))
    agents.on("carol", reply("carol's answer"))
    feed = llm_hub.subscribe_changes()
    first = await llm_hub.send_async("bob", "question one")
    assert first.status in ("queued", "running") and first.reply_to == "host"
    second = await llm_hub.send_async("carol", "question two")
    await llm_hub.wait_run(first.id, wait_s=10)
    await llm_hub.wait_run(second.id, wait_s=10)
    assert await llm_hub.inbox_count() == 2
    peeked = await llm_hub.check_replies(mark_read=False)
    assert [r.id for r in peeked] == [first.id, second.id] or [r.id for r in peeked] == [second.id, first.id]
    [oldest] = await llm_hub.check_replies(limit=1)
    assert oldest.id == peeked[0].id and oldest.reply in ("bob's answer", "carol's answer")
    [other] = await llm_hub.check_replies()
    assert other.id == peeked[1].id
    assert (await llm_hub.check_replies()).items == [] and await llm_hub.inbox_count() == 0
    assert (await llm_hub.get_run(first.id)).reply == "bob's answer"  # still fetchable by id
    announced = set()
    with anyio.move_on_after(2):
        while not {first.id, second.id} <= announced:
            change = await feed.receive()
            if change.kind == "inbox":
                announced.add(change.ref)
    assert {first.id, second.id} <= announced
    await llm_hub.send_and_wait("bob", "sync question", wait_s=10)
    assert await llm_hub.inbox_count() == 0  # only async sends from the host go to the inbox


async def test_an_orchestrator_asks_specialists_attached_as_tools_even_after_a_restart(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)

    def orchestrator(request: dict[str, Any]) -> Response:
        results = [json.loads(m["content"]) for m in request["messages"] if m["role"] == "tool"]
        if len(results) == 0:
            return Response(calls=[("ask_researcher", {"message": "research memory"})])
        if len(results) == 1:
            return Response(calls=[("ask_writer", {"message": "write it up"})])
        return Response(content=" | ".join(r["message"] for r in results))

    agents.on("orchestrator", orchestrator)
    agents.on("researcher", reply("findings"))
    agents.on("writer", reply("article"))
    async with AgentHub(llm_settings) as hub:
        await make(hub, "researcher", "writer")
        created = await hub.create_agent("orchestrator", system=role("orchestrator"), agent_tools=["researcher"])
        attached = await hub.attach_agent_tool("orchestrator", "writer")
        assert [t.name for t in created.agent_tools] == ["researcher"]
        assert [t.name for t in attached.agent_tools] == ["researcher", "writer"]
        assert (await hub.attach_agent_tool("orchestrator", "writer")).agent_tools == attached.agent_tools
        with pytest.raises(Invalid, match="itself"):
            await hub.attach_agent_tool("writer", "writer")
        researcher_id = attached.agent_tools[0].agent_id
    async with AgentHub(llm_settings) as hub:  # a new process: attachments come from the store
        run = await hub.send_message("orchestrator", "make an article", wait_s=10)
        assert run.status == "completed"
        assert run.reply == (
            f"{{'agent_id': '{researcher_id}', 'response': ['findings']}} | "
            f"{{'agent_id': '{attached.agent_tools[1].agent_id}', 'response': ['article']}}"
        )
        first = agents.requests_of("orchestrator")[0]
        assert {"ask_researcher", "ask_writer"} <= set(first.tool_names)
        ask = next(t for t in first.body["tools"] if t["function"]["name"] == "ask_writer")["function"]
        assert ask["parameters"]["required"] == ["message"]
        asked = await newest_run(hub, "writer")
        assert asked.parent_run_id == run.id and asked.input.endswith("] write it up")
        detached = await hub.detach_agent_tool("orchestrator", "writer")
        assert [t.name for t in detached.agent_tools] == ["researcher"]
        with pytest.raises(NotFound, match="not attached"):
            await hub.detach_agent_tool("orchestrator", "writer")
        await hub.delete_agent("researcher")
        assert (await hub.get_agent("orchestrator")).agent_tools == []


async def test_a_pipeline_passes_each_reply_to_the_next_stage(llm_hub: AgentHub, scripted_llm: ScriptedLLM) -> None:
    agents = Agents(scripted_llm)
    for stage in ("research", "write", "edit"):
        agents.on(stage, reply(lambda request, s=stage: f"{s}({message_text(last(request))})"))
    await make(llm_hub, "research", "write", "edit")
    seen = []

    async def on_stage(stage: Any) -> None:
        seen.append(stage.agent)

    result = await llm_hub.run_pipeline(["research", "write", "edit"], "LLM memory", on_stage=on_stage)
    assert result.status == "completed" and result.error is None
    assert result.output == "edit(write(research(LLM memory)))"
    assert [(s.agent, s.status, s.reply) for s in result.stages] == [
        ("research", "completed", "research(LLM memory)"),
        ("write", "completed", "write(research(LLM memory))"),
        ("edit", "completed", "edit(write(research(LLM memory)))"),
    ]
    assert seen == ["research", "write", "edit"] and all(s.latency_ms and s.latency_ms > 0 for s in result.stages)
    runs = {s.agent: await llm_hub.get_run(s.run_id) for s in result.stages}
    assert runs["edit"].input == "write(research(LLM memory))" and runs["edit"].role == "user"

    before = len(await llm_hub.list_runs(limit=100))
    with pytest.raises(NotFound, match="did you mean 'edit'"):
        await llm_hub.run_pipeline(["research", "edti"], "x")
    assert len(await llm_hub.list_runs(limit=100)) == before  # nothing sent when a stage is unknown


async def test_a_pipeline_stops_at_the_first_failing_stage_with_a_clear_error(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("research", reply("notes"))
    agents.on("write", lambda _request: Response(status=400, body={"error": {"message": "context too long"}}))
    await make(llm_hub, "research", "write", "edit")
    result = await llm_hub.run_pipeline(["research", "write", "edit"], "topic")
    assert (result.status, result.output) == ("failed", None)
    assert [(s.agent, s.status) for s in result.stages] == [("research", "completed"), ("write", "failed")]
    assert result.error.startswith("stage 2 (write) failed: ") and "context too long" in result.error
    assert (await llm_hub.list_runs("edit")).items == []


async def test_metrics_count_messages_errors_and_latency_per_agent_and_pair_slowest_first(
    llm_settings: Settings, scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)
    agents.on("slow", reply("zzz", delay_s=0.5))
    agents.on("fast", reply("quick"))
    agents.on("broken", lambda _request: Response(status=400, body={"error": {"message": "nope"}}))
    async with AgentHub(llm_settings) as hub:
        await make(hub, "slow", "fast", "broken", "boss")
        for _ in range(2):
            await hub.send_and_wait("slow", "hi", wait_s=10)
            await hub.send_and_wait("fast", "hi", wait_s=10)
        await hub.send_and_wait("fast", "from boss", sender="boss", wait_s=10)
        await hub.send_and_wait("broken", "hi", wait_s=10)
        metrics = await hub.get_metrics()
        only_fast = await hub.get_metrics(agent="fast")
    by_agent = {m.agent: m for m in metrics.agents}
    assert metrics.agents[0].agent == "slow"  # slowest p95 first
    assert (by_agent["slow"].messages, by_agent["slow"].errors, by_agent["fast"].messages) == (2, 0, 3)
    assert (by_agent["broken"].messages, by_agent["broken"].errors) == (1, 1)
    assert by_agent["slow"].latency_p50_ms >= 500 and by_agent["fast"].latency_p95_ms < by_agent["slow"].latency_p50_ms
    assert by_agent["slow"].tokens > 0 and "boss" not in by_agent
    pairs = {(p.sender, p.receiver): p for p in metrics.pairs}
    assert set(pairs) == {("host", "slow"), ("host", "fast"), ("boss", "fast"), ("host", "broken")}
    assert (pairs[("host", "fast")].messages, pairs[("boss", "fast")].messages) == (2, 1)
    assert metrics.pairs[0].receiver == "slow"
    assert [m.agent for m in only_fast.agents] == ["fast"]
    assert {(p.sender, p.receiver) for p in only_fast.pairs} == {("host", "fast"), ("boss", "fast")}
