"""The Letta-compatible REST API, driven by the real ``letta-client`` (``AsyncLetta``) against a real uvicorn
server on loopback, whose agents think with the scripted LLM. The seed patterns are written as Letta's
docs write them; MCP clients of the same server see the same agents and blocks."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from conftest import bump_schema
from letta_client import (
    APIStatusError,
    AsyncLetta,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
)
from mcp import Client
from starlette.applications import Starlette
from starlette.routing import Mount

import mcp_letta
from mcp_letta import AgentHub, NewMessage, Settings
from mcp_letta.runtime.memory_tools import DEFAULT_TOOL_NAMES
from mcp_letta.server.app import LettaServer, build_server
from mcp_letta.server.http import HttpOptions, http_app, running_app
from mcp_letta.server.rest import ENDPOINTS, openapi_document, rest_app
from mcp_letta.testing import Response, ScriptedLLM

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

TOKEN = "rest-test-token-5a1f9c"
MAX_BODY = 64 * 1024


class Served:
    """A running server: its ``LettaServer`` (for MCP clients in-process) and base URL."""

    def __init__(self, server: LettaServer, port: int) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{port}"

    def letta(self, **kwargs: Any) -> AsyncLetta:
        """A letta-client for this server, as a Letta user writes it (no retries, so errors show at once)."""
        return AsyncLetta(base_url=self.base, api_key=kwargs.pop("api_key", TOKEN), max_retries=0, **kwargs)


@pytest.fixture
async def served(llm_hub: AgentHub) -> AsyncIterator[Served]:
    server = build_server(llm_hub)
    options = HttpOptions(port=0, token=TOKEN, max_body_bytes=MAX_BODY)
    async with running_app(http_app(server, options)) as port:
        yield Served(server, port)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AsyncLetta]:
    async with served.letta() as letta:
        yield letta


async def poll_until_done(client: AsyncLetta, run_id: str) -> Any:
    """Poll a run until it is done, as Letta's docs tell a letta-client user to (no push exists over REST)."""
    with anyio.fail_after(20):
        while (run := await client.runs.retrieve(run_id)).status not in ("completed", "failed", "cancelled"):  # noqa: ASYNC110
            await anyio.sleep(0.05)  # the client's only way to learn of the end is to ask
    return run


@asynccontextmanager
async def mcp_watch(server: LettaServer) -> AsyncIterator[Callable[[Callable[[set[str]], bool]], Awaitable[None]]]:
    """An MCP client (handshake era) of the server; yields ``until(predicate)``, which returns once the MCP tool
    names satisfy ``predicate``, re-listing on each ``tools/list_changed`` the server sends."""
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        nonlocal changed
        if getattr(getattr(message, "root", message), "method", "") == "notifications/tools/list_changed":
            changed.set()

    async with Client(server.mcp, mode="legacy", message_handler=on_message) as mcp:

        async def until(predicate: Callable[[set[str]], bool]) -> None:
            nonlocal changed
            with anyio.fail_after(10):
                while not predicate({t.name for t in (await mcp.list_tools()).tools}):
                    await changed.wait()
                    changed = anyio.Event()

        await mcp.list_tools()
        yield until


# -- agents and blocks -----------------------------------------------------------------------------------------
async def test_shared_block_between_researcher_and_writer(served: Served, client: AsyncLetta) -> None:
    # As Letta's docs write it: one block, attached to two agents at creation.
    shared = await client.blocks.create(label="project", value="Topic: tidal energy.", description="Shared notes")
    researcher = await client.agents.create(
        name="researcher",
        memory_blocks=[{"label": "persona", "value": "I am the researcher."}],
        block_ids=[shared.id],
        tags=["team"],
        model="openai/scripted-model",
    )
    writer = await client.agents.create(
        name="writer", memory_blocks=[{"label": "persona", "value": "I am the writer."}], block_ids=[shared.id]
    )
    assert {b.label for b in researcher.blocks} == {"persona", "human", "project"}
    assert next(b for b in researcher.blocks if b.label == "persona").value == "I am the researcher."
    assert researcher.llm_config.model == "scripted-model"

    await client.agents.blocks.update("project", agent_id=researcher.id, value="Topic: tidal energy. Source: IEA.")
    seen = await client.agents.blocks.retrieve("project", agent_id=writer.id)
    assert seen.value == "Topic: tidal energy. Source: IEA." and seen.id == shared.id
    assert (await client.blocks.retrieve(shared.id)).value == seen.value
    attached = {a.name async for a in client.blocks.agents.list(shared.id)}
    assert attached == {"researcher", "writer"}

    # One truth: the hub (what MCP tools read) holds the same block, and both agents are MCP tools.
    assert (await served.server.hub.read_block(shared.id)).value == seen.value
    async with mcp_watch(served.server) as until:
        await until(lambda names: {"ask_researcher", "ask_writer"} <= names)

    # A block written over MCP's hub is what REST returns.
    await served.server.hub.append_to_block(shared.id, "Deadline: Friday.")
    assert (await client.agents.blocks.retrieve("project", agent_id=writer.id)).value.endswith("Deadline: Friday.")

    detached = await client.agents.blocks.detach(shared.id, agent_id=writer.id)
    assert "project" not in {b.label for b in detached.blocks}
    listed = [b.label async for b in client.agents.blocks.list(writer.id)]
    assert sorted(listed) == ["human", "persona"]
    reattached = await client.agents.blocks.attach(shared.id, agent_id=writer.id)
    assert "project" in {b.label for b in reattached.blocks}


async def test_one_human_block_per_person_passed_in_block_ids(client: AsyncLetta) -> None:
    # Letta's pattern for serving several people: a human block each, attached by id (a 409 label clash before).
    sam = await client.blocks.create(label="human", value="Name: Sam")
    helper = await client.agents.create(name="helper", block_ids=[sam.id])
    humans = [b for b in helper.blocks if b.label == "human"]
    assert [(b.id, b.value) for b in humans] == [(sam.id, "Name: Sam")]
    # The blocks every agent gets have Letta's default limit (they had 5000: a longer human block was a 422).
    persona = next(b for b in helper.blocks if b.label == "persona")
    assert persona.limit == 100_000
    other = await client.agents.create(name="other")
    assert {b.label: b.limit for b in other.blocks} == {"persona": 100_000, "human": 100_000}
    long = "x" * 6000
    assert (await client.agents.blocks.update("human", agent_id=other.id, value=long)).value == long


async def test_tools_are_letta_builtins_listed_found_and_given_by_id(served: Served, client: AsyncLetta) -> None:
    # A Letta script finds a tool's id by name, then gives it to an agent (all 404 before).
    [broadcast] = [t async for t in client.tools.list(name="send_message_to_agents_matching_tags")]
    assert broadcast.tool_type == "letta_multi_agent_core"
    assert (await client.tools.retrieve(broadcast.id)).name == "send_message_to_agents_matching_tags"
    every = [t.name async for t in client.tools.list()]
    assert sorted(every) == sorted(served.server.hub.known_tool_names())
    assert [t.name async for t in client.tools.list(search="archival_memory_s")] == ["archival_memory_search"]
    core = [t.name async for t in client.tools.list(tool_types=["letta_memory_core"])]
    assert "memory_insert" in core and "send_message_to_agent_async" not in core
    with pytest.raises(NotFoundError) as unknown:
        await client.tools.retrieve("tool-00000000-0000-0000-0000-000000000000")
    assert unknown.value.body == {"detail": "Tool with id tool-00000000-0000-0000-0000-000000000000 not found"}

    agent = await client.agents.create(name="lead")
    await served.server.hub.create_agent("helper")
    await served.server.hub.attach_agent_tool("lead", "helper")
    before = [t.name async for t in client.agents.tools.list(agent.id)]
    assert before == list(DEFAULT_TOOL_NAMES)  # (its ask_helper tool is not a Letta tool)
    given = await client.agents.tools.attach(broadcast.id, agent_id=agent.id)
    assert "send_message_to_agents_matching_tags" in [t.name for t in given.tools]
    assert [t.name async for t in client.agents.tools.list(agent.id)] == [*before, broadcast.name]
    [insert] = [t async for t in client.tools.list(name="memory_insert")]
    taken = await client.agents.tools.detach(insert.id, agent_id=agent.id)
    assert "memory_insert" not in [t.name for t in taken.tools]
    taken = await client.agents.tools.detach(broadcast.id, agent_id=agent.id)
    offered = served.server.hub.tool_names(await served.server.hub.get_agent("lead"))
    assert "send_message_to_agents_matching_tags" not in offered and "memory_insert" not in offered
    assert "ask_helper" in offered


async def test_agents_list_retrieve_update_delete(served: Served, client: AsyncLetta) -> None:
    created = {}
    for name, tags in (("alpha", ["red", "blue"]), ("beta", ["red"]), ("gamma", ["green"])):
        created[name] = await client.agents.create(name=name, tags=tags, description=f"{name} agent")
    red = {a.name async for a in client.agents.list(tags=["red"])}
    assert red == {"alpha", "beta"}
    both = [a.name async for a in client.agents.list(tags=["red", "blue"], match_all_tags=True)]
    assert both == ["alpha"]
    assert [a.name async for a in client.agents.list(name="gamma")] == ["gamma"]
    assert [a.name async for a in client.agents.list(query_text="bet")] == ["beta"]

    # Cursor pagination: the SDK follows ``after`` page by page.
    first = await client.agents.list(limit=2, order="asc")
    assert [a.name for a in first.items] == ["alpha", "beta"]
    everyone = [a.name async for a in client.agents.list(limit=1, order="asc")]
    assert everyone == ["alpha", "beta", "gamma"]
    before = await client.agents.list(before=created["gamma"].id, order="asc", limit=1)
    assert [a.name for a in before.items] == ["beta"]
    assert sorted(await client.tags.list()) == ["blue", "green", "red"]

    got = await client.agents.retrieve(created["beta"].id)
    assert got.name == "beta" and got.description == "beta agent" and got.tags == ["red"]
    async with mcp_watch(served.server) as until:
        updated = await client.agents.update(
            created["beta"].id, name="beta2", tags=["red", "new"], system="Be brief.", metadata={"team": "x"}
        )
        await until(lambda names: "ask_beta2" in names and "ask_beta" not in names)
        await client.agents.delete(created["beta"].id)
        await until(lambda names: "ask_beta2" not in names)
    assert (updated.name, updated.tags, updated.system, updated.metadata) == ("beta2", ["new", "red"], "Be brief.",
                                                                              {"team": "x"})  # fmt: skip
    with pytest.raises(NotFoundError) as caught:
        await client.agents.retrieve(created["beta"].id)
    assert caught.value.body == {"detail": f"Agent with ID {created['beta'].id} not found"}


async def test_an_agent_with_agents_as_tools_reads_and_exports(served: Served, client: AsyncLetta) -> None:
    hub = served.server.hub
    await hub.create_agent("researcher")
    lead = await hub.create_agent("lead", agent_tools=["researcher"])
    assert "ask_researcher" in hub.tool_names(lead)
    got = await client.agents.retrieve(lead.id)  # (was a 500: the tool list could not be built)
    assert "ask_researcher" in [t.name for t in got.tools]
    exported = json.loads(await client.agents.export_file(lead.id))
    assert "ask_researcher" in [t["name"] for t in exported["tools"]]


async def test_agent_created_over_rest_is_announced_to_mcp_clients(served: Served, client: AsyncLetta) -> None:
    async with mcp_watch(served.server) as until:
        await client.agents.create(name="newcomer")
        await until(lambda names: "ask_newcomer" in names)  # arrives by tools/list_changed


async def test_blocks_crud_and_limit_error(client: AsyncLetta) -> None:
    block = await client.blocks.create(label="notes", value="short", limit=10)
    assert (block.limit, block.read_only) == (10, False)
    with pytest.raises(UnprocessableEntityError) as caught:
        await client.blocks.update(block.id, value="x" * 25)
    assert caught.value.body["detail"].startswith("Edit failed: Exceeds 10 character limit (requested 25)")
    assert (await client.blocks.retrieve(block.id)).value == "short"  # nothing changed
    grown = await client.blocks.update(block.id, value="x" * 25, limit=30, description="grown")
    assert (grown.value, grown.limit, grown.description) == ("x" * 25, 30, "grown")
    default = await client.blocks.create(label="big", value="")
    assert default.limit == 100_000  # Letta's default
    assert [b.id async for b in client.blocks.list(label="notes")] == [block.id]
    assert {b.label async for b in client.blocks.list(label_search="bi")} == {"big"}
    await client.blocks.delete(block.id)
    with pytest.raises(NotFoundError) as gone:
        await client.blocks.retrieve(block.id)
    assert gone.value.body == {"detail": f"Block with id '{block.id}' not found"}


async def test_a_database_this_server_cannot_use_is_a_503_that_says_why(client: AsyncLetta, db_path: Path) -> None:
    block = await client.blocks.create(label="notes", value="kept")
    bump_schema(db_path, +1)  # a newer mcp-letta migrated the database while this server had it open
    try:
        with anyio.fail_after(60):  # (a write checks the schema at most every few seconds)
            while True:
                try:
                    await client.blocks.update(block.id, value="written meanwhile")
                except APIStatusError as exc:
                    refused = exc
                    break
                await anyio.sleep(0.1)
    finally:
        bump_schema(db_path, -1)
    assert refused.status_code == 503  # not the request's fault: letta-client retries it by itself
    assert "by a newer mcp-letta while this one" in refused.body["detail"]
    assert "upgrade mcp-letta" in refused.body["detail"]


async def test_bad_input_is_refused_with_a_clear_detail(client: AsyncLetta) -> None:
    agent = await client.agents.create(name="strict")
    with pytest.raises(NotFoundError) as label:
        await client.agents.blocks.retrieve("nope", agent_id=agent.id)
    assert label.value.body == {"detail": f"No block with label 'nope' found for agent '{agent.id}'"}
    clash = await client.blocks.create(label="persona", value="another persona")
    with pytest.raises(ConflictError) as conflict:
        await client.agents.blocks.attach(clash.id, agent_id=agent.id)
    assert "persona" in conflict.value.body["detail"]
    with pytest.raises(UnprocessableEntityError) as tools:
        await client.agents.create(name="coder", tools=["run_my_python"])
    assert "Tools not found by name: ['run_my_python']" in tools.value.body["detail"]
    assert "custom Python tools are not run" in tools.value.body["detail"]
    with pytest.raises(UnprocessableEntityError) as rules:
        await client.agents.create(name="ruled", tool_rules=[{"tool_name": "x", "type": "exit_loop"}])
    assert "tool_rules are not supported" in rules.value.body["detail"]
    with pytest.raises(UnprocessableEntityError) as role:
        await client.agents.messages.create(agent.id, messages=[{"role": "assistant", "content": "hi"}])
    assert "role 'assistant' is not accepted" in role.value.body["detail"]
    with pytest.raises(UnprocessableEntityError) as unsupported:
        await client.blocks.list(tags=["x"])
    assert "query parameter(s) tags" in unsupported.value.body["detail"]
    with pytest.raises(UnprocessableEntityError) as extra:
        await client.agents.update(agent.id, extra_body={"frobnicate": True})
    assert "frobnicate" in extra.value.body["detail"]
    with pytest.raises(UnprocessableEntityError) as callback:  # (accepted and never called: a script waited)
        await client.agents.messages.create_async(agent.id, input="hi", callback_url="http://127.0.0.1:9/done")
    assert "does not support the field(s) callback_url" in callback.value.body["detail"]
    with pytest.raises(UnprocessableEntityError) as nul:  # (a NUL cannot even be looked up on PostgreSQL)
        await client.runs.list(after="run\x00id")
    assert "holds a NUL character" in nul.value.body["detail"]
    with pytest.raises(UnprocessableEntityError) as tag:
        await client.agents.create(name="tagged", tags=["a\x00b"])
    assert "tag 'a\\x00b' is not allowed" in tag.value.body["detail"]
    for make in (  # (a 500 before: letta-client sends a request again on a 5xx)
        lambda: client.blocks.create(label="tiny", value="v", limit=0),
        lambda: client.agents.create(name="tiny", memory_blocks=[{"label": "tiny", "value": "v", "limit": -5}]),
    ):
        with pytest.raises(UnprocessableEntityError) as limit:
            await make()
        assert limit.value.body["detail"].startswith("block 'tiny': limit: Input should be greater than or equal to 1")
    assert [a.name async for a in client.agents.list()] == ["strict"]  # nothing was created
    assert [b.label async for b in client.blocks.list(label="tiny")] == []


async def test_health_and_what_is_not_served(served: Served, client: AsyncLetta) -> None:
    assert (await client.health()).model_dump() == {"status": "ok", "version": mcp_letta.__version__}
    async with httpx2.AsyncClient(base_url=served.base, headers={"Authorization": f"Bearer {TOKEN}"}) as raw:
        missing = await raw.get("/v1/folders/")
        assert missing.status_code == 404
        assert missing.json()["detail"].startswith("GET /v1/folders/ is not served by mcp-letta")  # (was /v1/v1/)
        wrong = await raw.put("/v1/agents/")
        assert wrong.status_code == 405 and wrong.json()["detail"].startswith("PUT /v1/agents/ is not served")


# -- security ------------------------------------------------------------------------------------------------
async def test_token_host_and_body_limit_guard_v1(served: Served, client: AsyncLetta) -> None:
    async with served.letta(api_key="wrong-token") as wrong:
        with pytest.raises(AuthenticationError) as caught:
            await wrong.agents.list()
    assert TOKEN not in str(caught.value.body)
    async with served.letta(default_headers={"Host": "evil.example"}) as rebinding:
        with pytest.raises(APIStatusError) as host:
            await rebinding.agents.list()
    assert host.value.status_code == 421
    agent = await client.agents.create(name="guarded")
    with pytest.raises(APIStatusError) as big:
        await client.agents.messages.create(agent.id, input="x" * (MAX_BODY + 1))
    assert big.value.status_code == 413 and "bytes" in big.value.body["detail"]
    assert (await served.server.hub.list_runs(agent.id)).items == []  # nothing was sent


# -- messages ------------------------------------------------------------------------------------------------
async def test_message_returns_letta_typed_messages(served: Served, client: AsyncLetta, scripted_llm: ScriptedLLM
                                                    ) -> None:  # fmt: skip
    agent = await client.agents.create(name="helper", memory_blocks=[{"label": "human", "value": "Name: Ada."}])
    scripted_llm.on(
        "Name: Ada.",
        Response(
            content="I should note that.", calls=[("memory_insert", {"label": "human", "new_string": "Likes tea."})]
        ),
        "Noted: you like tea.",
    )
    response = await client.agents.messages.create(agent.id, messages=[{"role": "user", "content": "I like tea."}])
    types = [m.message_type for m in response.messages]
    assert types == ["reasoning_message", "tool_call_message", "tool_return_message", "assistant_message"]
    reasoning, call, result, reply = response.messages
    assert reasoning.reasoning == "I should note that."
    assert call.tool_call.name == "memory_insert" and '"Likes tea."' in call.tool_call.arguments
    assert result.status == "success" and result.tool_call_id == call.tool_call.tool_call_id
    assert reply.content == "Noted: you like tea."
    assert response.stop_reason.stop_reason == "end_turn"
    assert response.usage.step_count == 2 and response.usage.total_tokens > 0
    assert (await client.agents.blocks.retrieve("human", agent_id=agent.id)).value == "Name: Ada.\nLikes tea."

    # The same run is in the hub (get_run over MCP) and in runs.list / runs.retrieve.
    [run_id] = response.usage.run_ids
    async with Client(served.server.mcp, mode="legacy") as mcp:
        over_mcp = await mcp.call_tool("get_run", {"run_id": run_id})
    assert not over_mcp.is_error and over_mcp.structured_content is not None
    assert over_mcp.structured_content["reply"] == "Noted: you like tea."
    assert over_mcp.structured_content["status"] == "completed"
    async with httpx2.AsyncClient(base_url=served.base) as console:  # ... and the console shows the same run
        assert (await console.post("/login", data={"token": TOKEN})).status_code in (200, 303)
        shown_in_console = (await console.get(f"/api/runs/{run_id}")).json()
    assert (shown_in_console["status"], shown_in_console["reply"]) == ("completed", "Noted: you like tea.")
    assert [r.id async for r in client.runs.list(agent_id=agent.id)] == [run_id]
    retrieved = await client.runs.retrieve(run_id)
    assert (retrieved.status, retrieved.stop_reason, retrieved.agent_id) == ("completed", "end_turn", agent.id)
    in_run = [m.message_type async for m in client.runs.messages.list(run_id)]
    assert in_run[0] == "user_message" and in_run[-1] == "assistant_message"

    history = [m async for m in client.agents.messages.list(agent.id, order="asc")]
    one_by_one = [m async for m in client.agents.messages.list(agent.id, order="asc", limit=1)]
    assert [(m.id, m.message_type) for m in one_by_one] == [(m.id, m.message_type) for m in history]
    assert history[0].message_type == "user_message" and history[0].content == "I like tea."
    only = [m.message_type async for m in client.agents.messages.list(
        agent.id, include_return_message_types=["assistant_message"])]  # fmt: skip
    assert only == ["assistant_message"]
    scripted_llm.reply("Tea it is.")
    filtered = await client.agents.messages.create(
        agent.id, input="again", include_return_message_types=["assistant_message"]
    )
    assert [m.message_type for m in filtered.messages] == ["assistant_message"]


async def test_message_pages_reach_past_a_thousand(served: Served, client: AsyncLetta) -> None:
    agent = await client.agents.create(name="chatty")
    texts = [f"note {i:04d}" for i in range(1250)]
    await served.server.hub.append_messages(agent.id, [NewMessage(role="user", content=t) for t in texts])
    newest_first = [m.content async for m in client.agents.messages.list(agent.id, limit=400)]
    assert newest_first == texts[::-1]
    oldest_first = [m.content async for m in client.agents.messages.list(agent.id, limit=300, order="asc")]
    assert oldest_first == texts
    first = await client.agents.messages.list(agent.id, limit=5, order="asc")
    assert [m.content for m in first.items] == texts[:5]


async def test_run_pages_reach_past_a_thousand_in_either_order(
    served: Served, client: AsyncLetta, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.default = Response(content="done")
    hub = served.server.hub
    agent = await client.agents.create(name="busy")
    sent = [(await hub.send_message(agent.id, f"task {i}")).id for i in range(1100)]  # queued, not waited
    assert (await hub.wait_run(sent[-1], wait_s=300)).status == "completed"  # one agent: in the order sent
    newest_first = [r.id async for r in client.runs.list(agent_id=agent.id, limit=400)]
    assert newest_first == sent[::-1]
    oldest_first = [r.id async for r in client.runs.list(agent_id=agent.id, limit=300, order="asc")]
    assert oldest_first == sent
    first = await client.runs.list(agent_id=agent.id, limit=5, order="asc")
    assert [r.id for r in first.items] == sent[:5]
    just_before = await client.runs.list(agent_id=agent.id, before=sent[500], limit=3, order="asc")
    assert [r.id for r in just_before.items] == sent[497:500]
    between = await client.runs.list(agent_id=agent.id, after=sent[10], before=sent[14], order="asc")
    assert [r.id for r in between.items] == sent[11:14]
    completed = [r.id async for r in client.runs.list(statuses=["completed"], limit=1000)]
    assert completed == sent[::-1]
    assert [r async for r in client.runs.list(statuses=["failed"])] == []
    with pytest.raises(NotFoundError, match="not found"):
        await client.runs.list(after="run-00000000-0000-0000-0000-000000000000")


async def test_reset_empties_the_context_window(client: AsyncLetta, scripted_llm: ScriptedLLM) -> None:
    agent = await client.agents.create(name="forgetful")
    scripted_llm.echo()
    await client.agents.messages.create(agent.id, input="remember the secret word plum")
    await client.agents.messages.reset(agent.id)
    await client.agents.messages.create(agent.id, input="what was it?")
    last = scripted_llm.requests[-1].body["messages"]
    assert not any("plum" in str(m.get("content")) for m in last)
    history = [m async for m in client.agents.messages.list(agent.id)]  # recall keeps it
    assert any(getattr(m, "content", None) == "remember the secret word plum" for m in history)


async def test_streamed_message_sends_each_message_then_stop_and_usage(client: AsyncLetta, scripted_llm: ScriptedLLM
                                                                       ) -> None:  # fmt: skip
    agent = await client.agents.create(name="streamer")
    scripted_llm.tool_call("conversation_search", {"query": "tea"})
    scripted_llm.reply("Nothing about tea yet.")
    stream = await client.agents.messages.stream(agent.id, messages=[{"role": "user", "content": "tea?"}])
    seen = [chunk.message_type async for chunk in stream]
    assert seen == ["ping", "tool_call_message", "tool_return_message", "assistant_message", "stop_reason",
                    "usage_statistics"]  # fmt: skip
    # letta-client 1.x spells the stream as create(..., streaming=True) on /messages.
    scripted_llm.reply("Still nothing.")
    again = await client.agents.messages.create(agent.id, input="tea now?", streaming=True)
    assert [chunk.message_type async for chunk in again][-3:] == ["assistant_message", "stop_reason",
                                                                 "usage_statistics"]  # fmt: skip


async def test_a_failed_message_says_why_blocking_and_streamed(
    served: Served, client: AsyncLetta, scripted_llm: ScriptedLLM
) -> None:
    agent = await client.agents.create(name="unlucky")
    scripted_llm.error(401, {"error": {"message": "invalid api key"}})
    answer = await client.agents.messages.create(agent.id, input="hi")
    assert answer.stop_reason.stop_reason == "llm_api_error"
    error = answer.model_extra["error"]  # (before: the reason was only in GET /v1/runs/{id})
    run = await served.server.hub.get_run(error["run_id"])
    assert run.status == "failed" and error["message"] == run.error and "invalid api key" in run.error
    assert (error["message_type"], error["error_type"]) == ("error_message", "llm_api_error")
    scripted_llm.error(401, {"error": {"message": "invalid api key"}})
    stream = await client.agents.messages.create(agent.id, input="hi again", streaming=True)
    chunks = [chunk async for chunk in stream]
    assert [c.message_type for c in chunks][-3:] == ["stop_reason", "error_message", "usage_statistics"]
    assert "invalid api key" in chunks[-2].message and chunks[-2].run_id != run.id


async def test_stream_sends_a_step_before_the_run_ends(
    served: Served, client: AsyncLetta, scripted_llm: ScriptedLLM, gate: Any
) -> None:
    agent = await client.agents.create(name="live")
    scripted_llm.tool_call("conversation_search", {"query": "plans"})  # step 1 answers at once; step 2 waits
    stream = await client.agents.messages.stream(agent.id, input="plans?")
    seen = []
    async for chunk in stream:
        seen.append(chunk.message_type)
        if chunk.message_type == "tool_return_message":
            [run] = await served.server.hub.list_runs(agent.id)
            assert run.status == "running"  # the first step's messages came while the run still runs
            gate.open()
    assert seen[-3:] == ["assistant_message", "stop_reason", "usage_statistics"]


async def test_a_stream_whose_server_stops_names_the_run_that_goes_on(
    served: Served, client: AsyncLetta, gate: Any
) -> None:
    """A server that stops (SIGTERM, a rolling upgrade) hands the run back to the queue: the stream says so with
    the run's id, rather than end as if the run had failed."""
    agent = await client.agents.create(name="upgraded")
    stream = await client.agents.messages.stream(agent.id, input="take a while")
    seen = []
    async for chunk in stream:
        seen.append(chunk)
        if chunk.message_type == "ping" and len(seen) == 1:  # the LLM is held: the run is in flight
            await served.server.hub.hand_back()
    [run] = await served.server.hub.list_runs(agent.id)
    assert not run.done  # handed back, for the next server to resume
    assert [c.message_type for c in seen][-1] == "error_message", seen
    error = seen[-1]
    assert error.error_type == "pending" and error.run_id == run.id
    assert f"GET /v1/runs/{run.id}" in error.message and "goes on" in error.message


async def test_a_message_waited_on_when_its_server_stops_ends_with_an_error_stop(
    served: Served, client: AsyncLetta, scripted_llm: ScriptedLLM, gate: Any
) -> None:
    """A blocking ``messages.create`` has no way to say "pending" (letta-client would resend on a 5xx): it gets
    what the run said so far and ``stop_reason`` ``error``; the run goes on in another server."""
    agent = await client.agents.create(name="waiting")
    answers: list[Any] = []

    async def send() -> None:
        answers.append(await client.agents.messages.create(agent.id, input="take a while"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        await scripted_llm.wait_for_requests_async(1, within_s=20)  # the LLM is held: the run is in flight
        await served.server.hub.hand_back()
    [run] = await served.server.hub.list_runs(agent.id)
    assert not run.done
    [answer] = answers
    assert answer.stop_reason.stop_reason == "error" and answer.messages == []
    sent = [m async for m in client.agents.messages.list(agent.id) if m.message_type == "user_message"]
    assert [(m.content, m.run_id) for m in sent] == [("take a while", run.id)]  # where to find the run


async def test_stream_pings_while_a_step_runs(llm_hub: AgentHub, gate: Any) -> None:
    app = Starlette(routes=[Mount("/v1", app=rest_app(llm_hub, MAX_BODY, keepalive_s=0.05))])
    async with running_app(app) as port, AsyncLetta(base_url=f"http://127.0.0.1:{port}", max_retries=0) as letta:
        agent = await letta.agents.create(name="slow")
        stream = await letta.agents.messages.stream(agent.id, input="take a while")
        seen = []
        async for chunk in stream:
            seen.append(chunk.message_type)
            if seen.count("ping") == 3:  # the LLM is held: only keepalive pings can arrive
                gate.open()
    assert seen[:3] == ["ping", "ping", "ping"]
    assert seen[-3:] == ["assistant_message", "stop_reason", "usage_statistics"]


async def test_async_send_reply_arrives(client: AsyncLetta, scripted_llm: ScriptedLLM) -> None:
    agent = await client.agents.create(name="slowpoke")
    scripted_llm.reply("Here is the report.")
    run = await client.agents.messages.create_async(agent.id, messages=[{"role": "user", "content": "report?"}])
    assert run.status in ("created", "running") and run.agent_id == agent.id
    run = await poll_until_done(client, run.id)
    assert run.status == "completed"
    replies = [m.content async for m in client.runs.messages.list(run.id) if m.message_type == "assistant_message"]
    assert replies == ["Here is the report."]


async def test_agent_async_send_reply_arrives_back(client: AsyncLetta, scripted_llm: ScriptedLLM) -> None:
    # Letta's docs: an agent with send_message_to_agent_async messages another; here the reply comes back to it.
    helper = await client.agents.create(name="calculator", memory_blocks=[{"label": "persona", "value": "I add."}])
    asker = await client.agents.create(
        name="asker",
        memory_blocks=[{"label": "persona", "value": "I ask."}],
        tools=["send_message_to_agent_async"],
    )
    scripted_llm.on("I add.", "42")
    scripted_llm.on(
        "I ask.",
        Response(calls=[("send_message_to_agent_async", {"message": "6*7?", "other_agent_id": helper.id})]),
        "Asked the calculator.",
        "The calculator says 42.",
    )
    sent = await client.agents.messages.create(asker.id, input="Ask the calculator, then tell me.")
    assert sent.messages[-1].content == "Asked the calculator."
    with anyio.fail_after(20):  # the reply arrives as a new message to the asker, which runs on it
        while len(runs := [r async for r in client.runs.list(agent_id=asker.id, statuses=["completed"])]) < 2:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    [reply_run] = [r for r in runs if r.id != sent.usage.run_ids[0]]
    shown = [m async for m in client.runs.messages.list(reply_run.id)]
    assert shown[0].message_type == "system_message" and shown[0].content.endswith("] 42")
    assert shown[-1].content == "The calculator says 42."


async def test_cancel_stops_a_running_message(client: AsyncLetta, gate: Any) -> None:
    agent = await client.agents.create(name="stuck")
    run = await client.agents.messages.create_async(agent.id, input="take your time")
    cancelled = await client.agents.messages.cancel(agent.id)
    assert cancelled[run.id] in ("cancelled", "cancelling")
    gate.open()
    run = await poll_until_done(client, run.id)
    assert (run.status, run.stop_reason) == ("cancelled", "cancelled")
    assert [r.id async for r in client.runs.list(statuses=["cancelled"])] == [run.id]


async def test_orchestrator_broadcasts_to_tagged_workers(client: AsyncLetta, scripted_llm: ScriptedLLM) -> None:
    for name in ("worker1", "worker2"):
        await client.agents.create(
            name=name, tags=["worker"], memory_blocks=[{"label": "persona", "value": f"I am {name}."}]
        )
    orchestrator = await client.agents.create(
        name="orchestrator",
        memory_blocks=[{"label": "persona", "value": "I am the orchestrator."}],
        tools=["send_message_to_agents_matching_tags"],
    )
    assert "send_message_to_agents_matching_tags" in {t.name for t in orchestrator.tools}
    scripted_llm.on("I am worker1.", "worker1 reporting")
    scripted_llm.on("I am worker2.", "worker2 reporting")
    scripted_llm.on(
        "I am the orchestrator.",
        Response(calls=[("send_message_to_agents_matching_tags",
                         {"message": "Status?", "match_all": ["worker"], "match_some": []})]),
        "Both workers reported.",
    )  # fmt: skip
    response = await client.agents.messages.create(orchestrator.id, input="Ask the workers for status.")
    result = next(m for m in response.messages if m.message_type == "tool_return_message")
    assert result.status == "success"
    assert "worker1 reporting" in result.tool_return and "worker2 reporting" in result.tool_return
    assert response.messages[-1].content == "Both workers reported."


# -- archival memory -----------------------------------------------------------------------------------------
async def test_listings_reach_past_the_hubs_page_size(served: Served, client: AsyncLetta) -> None:
    # The hub pages its listings (20 by default); Letta's listings must still see every agent, block and tag.
    for i in range(45):
        await served.server.hub.create_agent(f"crowd{i:02d}", tags=[f"t{i:02d}"])
    names = [a.name async for a in client.agents.list(limit=100, order="asc")]
    assert names == [f"crowd{i:02d}" for i in range(45)]
    assert len(await client.tags.list()) == 45
    assert len([b async for b in client.blocks.list(label="persona", limit=100)]) == 45


async def test_passage_pages_reach_past_a_thousand_in_either_order(served: Served, client: AsyncLetta) -> None:
    agent = await client.agents.create(name="hoarder")
    texts = [f"fact {i:04d}" for i in range(1100)]
    for text in texts:
        await served.server.hub.archival_insert(agent.id, text)

    async def every(**order: Any) -> list[str]:  # page by page, each after the last one's id
        seen: list[Any] = []
        while chunk := await client.agents.passages.list(agent.id, limit=400, after=seen[-1].id if seen else None,
                                                         **order):  # fmt: skip
            seen += chunk
        return [p.text for p in seen]

    assert await every() == texts  # Letta's default: oldest first
    assert await every(ascending=False) == texts[::-1]
    first = await client.agents.passages.list(agent.id, limit=3)
    assert [p.text for p in first] == texts[:3]


async def test_passages_create_list_search_delete(client: AsyncLetta) -> None:
    agent = await client.agents.create(name="archivist")
    [first] = await client.agents.passages.create(agent.id, text="The tidal plant opened in 2024.", tags=["tide"])
    await client.agents.passages.create(agent.id, text="Wind farms grew fast.", tags=["wind"])
    listed = await client.agents.passages.list(agent.id)  # Letta's default: oldest first
    assert [p.text for p in listed] == ["The tidal plant opened in 2024.", "Wind farms grew fast."]
    newest = await client.agents.passages.list(agent.id, ascending=False, limit=1)
    assert [p.text for p in newest] == ["Wind farms grew fast."]
    found = await client.agents.passages.search(agent.id, query="tidal")
    assert found.count == 1 and found.results[0].content == "The tidal plant opened in 2024."
    assert found.results[0].tags == ["tide"]
    tagged = await client.agents.passages.search(agent.id, query="farms", tags=["tide"])
    assert tagged.count == 0
    # Dates are moments, whatever their zone (they were compared as text: +05:30 and -08:00 came out wrong).
    stored = first.created_at
    for zone, hours in (("+05:30", 5.5), ("-08:00", -8)):
        shift = timezone(timedelta(hours=hours))
        an_hour_before, an_hour_after = ((stored + timedelta(hours=h)).astimezone(shift) for h in (-1, 1))
        since = await client.agents.passages.search(agent.id, query="tidal", start_datetime=an_hour_before)
        assert since.count == 1, zone
        later = await client.agents.passages.search(agent.id, query="tidal", start_datetime=an_hour_after)
        assert later.count == 0, zone
        until = await client.agents.passages.search(agent.id, query="tidal", end_datetime=an_hour_after)
        assert until.count == 1, zone
    with pytest.raises(UnprocessableEntityError) as bad:
        await client.agents.passages.search(agent.id, query="tidal", start_datetime="yesterday")  # type: ignore[arg-type]
    assert bad.value.body["detail"].startswith("start_datetime must be an ISO 8601 date or time")
    await client.agents.passages.delete(first.id, agent_id=agent.id)
    assert [p.text for p in await client.agents.passages.list(agent.id)] == ["Wind farms grew fast."]


# -- OpenAPI ---------------------------------------------------------------------------------------------------
async def test_openapi_document_lists_what_is_served(client: AsyncLetta) -> None:
    document = await client.get("/v1/openapi.json", cast_to=httpx.Response)
    served = document.json()
    assert served == openapi_document()
    operations = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert operations == {(e.method, "/v1" + e.path) for e in ENDPOINTS}


def test_every_openapi_endpoint_is_exercised_by_a_test() -> None:
    """Each operation names its letta-client method; some test must call it (``client.<method>(``)."""
    source = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_rest*.py"))
    methods = [op["x-letta-client-method"] for ops in openapi_document()["paths"].values() for op in ops.values()]
    missing = [m for m in methods if not re.search(re.escape(m) + r"\(", source)]
    assert not missing, f"endpoints no test calls: {missing}"


# -- Agent File ---------------------------------------------------------------------------------------------------
async def test_agent_file_round_trip_into_a_fresh_database(
    client: AsyncLetta, scripted_llm: ScriptedLLM, llm_settings: Settings, tmp_path: Path
) -> None:
    agent = await client.agents.create(
        name="traveller",
        memory_blocks=[{"label": "persona", "value": "I travel."}, {"label": "trips", "value": "Oslo", "limit": 500}],
        tags=["roaming"],
        tools=["core_memory_append", "send_message_to_agent_async"],
    )
    scripted_llm.tool_call("core_memory_append", {"label": "trips", "content": "Lima"})
    scripted_llm.reply("Lima noted.")
    await client.agents.messages.create(agent.id, input="I went to Lima.")
    exported = await client.agents.export_file(agent.id)

    fresh = llm_settings.with_overrides(db_path=tmp_path / "fresh.db")
    async with AgentHub(fresh) as hub:
        server = build_server(hub)
        async with running_app(http_app(server, HttpOptions(port=0, token=TOKEN))) as port:
            async with AsyncLetta(base_url=f"http://127.0.0.1:{port}", api_key=TOKEN, max_retries=0) as other:
                imported = await other.agents.import_file(file=("traveller.af", exported.encode()))
                [new_id] = imported.agent_ids
                copy = await other.agents.retrieve(new_id)
                assert copy.name == "traveller_copy" and copy.tags == ["roaming"]
                assert {b.label: b.value for b in copy.blocks} == {"persona": "I travel.", "trips": "Oslo\nLima",
                                                                   "human": ""}  # fmt: skip
                assert next(b for b in copy.blocks if b.label == "trips").limit == 500
                assert {"core_memory_append", "send_message_to_agent_async"} <= {t.name for t in copy.tools}
                history = [m async for m in other.agents.messages.list(new_id, order="asc")]
                original = [m async for m in client.agents.messages.list(agent.id, order="asc")]
                shape = [(m.message_type, getattr(m, "content", None)) for m in history]
                assert shape == [(m.message_type, getattr(m, "content", None)) for m in original]
                assert shape[0] == ("user_message", "I went to Lima.") and shape[-1] == ("assistant_message",
                                                                                         "Lima noted.")  # fmt: skip
                # ... and back: the copy exports with the same memory.
                again = json.loads(await other.agents.export_file(new_id))
                assert {b["label"]: b["value"] for b in again["blocks"]}["trips"] == "Oslo\nLima"


async def test_agent_file_reports_tools_it_cannot_run(client: AsyncLetta) -> None:
    letta_file = {  # the shape a Letta server exports (AgentFileSchema), written by hand
        "agents": [{"id": "agent-0", "name": "support desk", "system": "You help customers.", "tags": ["cs"],
                    "block_ids": ["block-0"], "tool_ids": ["tool-0", "tool-1", "tool-2"],
                    "messages": [{"id": "message-0", "role": "user", "content": [{"type": "text", "text": "hi"}]}],
                    "in_context_message_ids": ["message-0"], "llm_config": {"model": "gpt-4o-mini",
                                                                            "context_window": 32000}}],
        "blocks": [{"id": "block-0", "label": "policy", "value": "Refunds within 30 days.", "limit": 2000}],
        "tools": [{"id": "tool-0", "name": "archival_memory_search"}, {"id": "tool-1", "name": "check_order_status"},
                  {"id": "tool-2", "name": "send_message"}],
        "groups": [], "files": [], "sources": [], "mcp_servers": [],
    }  # fmt: skip
    imported = await client.agents.import_file(file=("support.af", json.dumps(letta_file).encode()),
                                               append_copy_suffix=False)  # fmt: skip
    [agent_id] = imported.agent_ids
    assert imported.model_extra["skipped_tools"] == {agent_id: ["check_order_status", "send_message"]}
    agent = await client.agents.retrieve(agent_id)
    assert agent.name == "support_desk"  # Letta allows spaces in names; ours become parts of tool names
    assert agent.llm_config.context_window == 32000
    assert next(b for b in agent.blocks if b.label == "policy").value == "Refunds within 30 days."
    with pytest.raises(UnprocessableEntityError) as bad:
        await client.agents.import_file(file=("x.af", b"not json"))
    assert "not JSON" in bad.value.body["detail"]


async def test_the_readme_letta_client_snippet_runs(served: Served, scripted_llm: ScriptedLLM) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    [snippet] = re.findall(r"```python letta-client\n(.*?)```", readme, re.S)
    scripted_llm.reply("Tidal energy is growing.")
    program = f"TOKEN = {TOKEN!r}\n" + snippet.replace("http://127.0.0.1:8000", served.base)
    done = await anyio.run_process([sys.executable, "-c", program], check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "Tidal energy is growing. end_turn"
