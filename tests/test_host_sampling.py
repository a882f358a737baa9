"""Agents that think with the host's model: every step is a ``sampling/createMessage`` the SDK ``Client``
answers from a scripted model, in both protocol eras, in process, over stdio and over HTTP."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ErrorData,
    InputRequiredResult,
    SamplingCapability,
    SamplingToolsCapability,
    TextContent,
    ToolUseContent,
)

from mcp_letta import AgentHub, Settings
from mcp_letta.server.app import build_server
from mcp_letta.server.http import HttpOptions, http_app, running_app

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

SCRIPT = Path(sys.executable).parent / "mcp-letta"
CHECKOUT = str(Path(__file__).resolve().parent.parent)
FACT = "favourite colour: teal"


class HostModel:
    """The host's model, scripted: answers by what the request shows (the agent's persona and memory in the
    system prompt, the last message), as a tool call (``tool_use``, or JSON text for a host without sampling
    tools) or as text. Keeps every request it was sent."""

    def __init__(self, *, tools: bool, refuse: str | None = None) -> None:
        self.tools = tools
        self.refuse = refuse
        self.requests: list[CreateMessageRequestParams] = []

    @property
    def capability(self) -> SamplingCapability:
        return SamplingCapability(tools=SamplingToolsCapability() if self.tools else None)

    async def __call__(self, _ctx: Any, params: CreateMessageRequestParams) -> Any:
        self.requests.append(params)
        if self.refuse is not None:
            return ErrorData(code=-1, message=self.refuse)
        system = params.system_prompt or ""
        last = params.messages[-1]
        last_text = " ".join(text_of(b) for b in last.content_as_list)
        answered_tool = any(b.type == "tool_result" for b in last.content_as_list) or last_text.startswith("[result")
        if "orchestrator persona" in system:
            if answered_tool:
                heard = "the sky is blue" if "facts: the sky is blue" in last_text else "nothing"
                return self.text(f"the team says: {heard}")
            return self.call("ask_researcher", {"message": "find facts"})
        if "researcher persona" in system:
            return self.text("facts: the sky is blue")
        if "Remember" in last_text:
            return self.call("memory_insert", {"label": "human", "new_string": FACT})
        if answered_tool:
            return self.text("Noted.")
        colour = "teal" if FACT in system else "I do not know"
        return self.text(f"Your favourite colour: {colour}")

    def text(self, text: str) -> CreateMessageResult:
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=text), model="host-model")

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        if not self.tools:  # as small models do when the format is only described to them: fenced
            return self.text(f"```json\n{json.dumps({'tool': name, 'arguments': arguments})}\n```")
        block = ToolUseContent(type="tool_use", id=f"toolu_{len(self.requests)}", name=name, input=arguments)
        return CreateMessageResultWithTools(
            role="assistant", content=[block], model="host-model", stop_reason="toolUse"
        )


def text_of(block: Any) -> str:
    """A content block's text; a tool result's text blocks joined."""
    if block.type == "tool_result":
        return " ".join(text_of(b) for b in block.content)
    return getattr(block, "text", "")


def structured(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result
    return result.structured_content


async def say(c: Client, agent: str, message: str) -> dict[str, Any]:
    """send_message (the same path as ask_<agent>) and its structured outcome."""
    return structured(await c.call_tool("send_message", {"agent": agent, "message": message}))


# -- the ways to reach the server -----------------------------------------------------------------------
def sampling_env(db_path: Path, **extra: str) -> dict[str, str]:
    return {"MCP_LETTA_DB": str(db_path), "MCP_LETTA_WATCH_INTERVAL": "0.05", "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": CHECKOUT, "MCP_LETTA_LLM_TIMEOUT": "5", **extra}  # fmt: skip


def client_mode(mode: str) -> str:
    return "legacy" if mode == "legacy" else "auto"


@asynccontextmanager
async def connect(
    transport: str, mode: str, db_path: Path, model: HostModel | None, *, agents: tuple[str, ...] = ()
) -> AsyncIterator[Client]:
    """A client of a server that has no LLM endpoint: in process, a stdio subprocess, or over HTTP. ``agents``
    exist before it starts, so their ``ask_<name>`` tools are listed from the start."""
    async with AgentHub(Settings(db_path=db_path)) as hub:
        for name in agents:
            await hub.create_agent(name, persona=f"{name} persona")
    callbacks: dict[str, Any] = {} if model is None else {
        "sampling_callback": model, "sampling_capabilities": model.capability
    }  # fmt: skip
    if transport == "stdio":
        params = StdioServerParameters(command=str(SCRIPT), args=[], env=sampling_env(db_path))
        async with Client(params, mode=client_mode(mode), **callbacks) as c:
            yield c
        return
    settings = Settings(db_path=db_path, watch_interval_s=0.05, llm_timeout_s=5, sampling_wait_s=0.5)
    async with AgentHub(settings) as hub:
        server = build_server(hub)
        if transport == "memory":
            async with server.running(), Client(server.mcp, mode=client_mode(mode), **callbacks) as c:
                yield c
            return
        async with running_app(http_app(server, HttpOptions(port=0))) as port:
            async with httpx2.AsyncClient(timeout=30) as http:
                wire = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
                async with Client(wire, mode=client_mode(mode), **callbacks) as c:
                    yield c


@pytest.fixture(params=["legacy", "modern"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["memory", "stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- what an agent does with the host's model --------------------------------------------------------------
async def test_an_agent_remembers_a_fact_and_recalls_it(tmp_path: Path, transport: str, mode: str) -> None:
    model = HostModel(tools=True)
    async with connect(transport, mode, tmp_path / "agents.db", model, agents=("keeper",)) as c:
        told = structured(await c.call_tool("ask_keeper", {"message": "Remember: my favourite colour is teal."}))
        assert told["status"] == "completed", told
        assert told["tool_calls"] == [{"name": "memory_insert", "ok": True}]
        human = structured(await c.call_tool("read_block", {"block": "human", "agent": "keeper"}))
        assert FACT in human["value"]
        asked = structured(await c.call_tool("ask_keeper", {"message": "What is my favourite colour?"}))
    assert asked["status"] == "completed" and asked["reply"] == "Your favourite colour: teal"
    first, second, third = model.requests
    assert "keeper persona" in (first.system_prompt or "") and {t.name for t in first.tools or []} >= {"memory_insert"}
    assert [b.type for b in second.messages[-1].content_as_list] == ["tool_result"]
    assert FACT in (third.system_prompt or "")  # memory, not the history, carried the fact


async def test_a_host_without_sampling_tools_gets_the_json_tool_mode(tmp_path: Path, mode: str) -> None:
    model = HostModel(tools=False)
    async with connect("memory", mode, tmp_path / "agents.db", model) as c:
        await c.call_tool("create_agent", {"name": "keeper", "persona": "keeper persona"})
        told = await say(c, "keeper", "Remember: my favourite colour is teal.")
        asked = await say(c, "keeper", "What is my favourite colour?")
    assert told["tool_calls"] == [{"name": "memory_insert", "ok": True}]
    assert asked["reply"] == "Your favourite colour: teal"
    assert all(r.tools is None for r in model.requests)
    assert "memory_insert" in (model.requests[0].system_prompt or "")  # the tools, described in the prompt


async def test_an_orchestrator_asks_a_specialist_both_thinking_with_the_host(
    tmp_path: Path, transport: str, mode: str
) -> None:
    model = HostModel(tools=True)
    async with connect(transport, mode, tmp_path / "agents.db", model) as c:
        await c.call_tool("create_agent", {"name": "researcher", "persona": "researcher persona"})
        await c.call_tool("create_agent", {"name": "orchestrator", "persona": "orchestrator persona"})
        await c.call_tool("attach_agent_tool", {"agent": "orchestrator", "tool_agent": "researcher"})
        reply = structured(await c.call_tool("send_message", {"agent": "orchestrator", "message": "what do we know?"}))
    assert reply["status"] == "completed", reply
    assert reply["reply"] == "the team says: the sky is blue"
    assert reply["tool_calls"] == [{"name": "ask_researcher", "ok": True}]
    systems = [r.system_prompt or "" for r in model.requests]
    assert sum("researcher persona" in s for s in systems) == 1
    assert sum("orchestrator persona" in s for s in systems) == 2


async def test_model_hints_name_the_agents_model(tmp_path: Path, mode: str) -> None:
    model = HostModel(tools=True)
    async with connect("memory", mode, tmp_path / "agents.db", model) as c:
        settings = {"model": "claude-sonnet-4"}
        await c.call_tool("create_agent", {"name": "keeper", "persona": "keeper persona", "model_settings": settings})
        await c.call_tool("send_message", {"agent": "keeper", "message": "hello"})
    preferences = model.requests[0].model_preferences
    assert preferences is not None and [h.name for h in preferences.hints or []] == ["claude-sonnet-4"]


async def test_a_refused_sampling_request_fails_the_run_with_the_reason(tmp_path: Path, mode: str) -> None:
    model = HostModel(tools=True, refuse="The user has denied permission to call this method.")  # VS Code's words
    async with connect("memory", mode, tmp_path / "agents.db", model) as c:
        await c.call_tool("create_agent", {"name": "keeper", "persona": "keeper persona"})
        if mode == "legacy":
            reply = structured(await c.call_tool("send_message", {"agent": "keeper", "message": "hello"}))
        else:  # the SDK gives up the call on a refusal: the run fails once its request goes unanswered
            with pytest.raises(MCPError, match="The user has denied permission"):
                await c.call_tool("send_message", {"agent": "keeper", "message": "hello"})
            runs = structured(await c.call_tool("list_runs", {"agent": "keeper"}))["runs"]
            reply = structured(await c.call_tool("get_run", {"run_id": runs[0]["run_id"], "wait_s": 30}))
    assert reply["status"] == "failed" and reply["stop_reason"] == "llm_api_error"
    if mode == "legacy":
        assert reply["error"] == (
            "the host refused to answer the agent's sampling request: The user has denied permission to call "
            "this method."
        )
    else:
        assert "did not answer the agent's sampling request" in reply["error"]


async def test_a_round_that_comes_after_the_run_went_on_never_sends_the_message_again(tmp_path: Path) -> None:
    settings = Settings(db_path=tmp_path / "agents.db", watch_interval_s=0.05, llm_timeout_s=0.3)
    model = HostModel(tools=True)
    async with AgentHub(settings) as hub:
        await hub.create_agent("keeper", persona="keeper persona")
        server = build_server(hub)
        async with server.running(), Client(server.mcp, sampling_callback=model,
                                            sampling_capabilities=model.capability) as c:  # fmt: skip
            arguments = {"agent": "keeper", "message": "hello"}
            first = await c.session.call_tool("send_message", arguments, allow_input_required=True)
            assert isinstance(first, InputRequiredResult) and first.input_requests
            [(key, request)] = first.input_requests.items()
            answer = await model(None, request.params)
            await hub.get_run((await hub.list_runs("keeper")).items[0].id, wait_s=30)  # unanswered: it failed
            late = await c.session.call_tool(
                "send_message", arguments, input_responses={key: answer}, request_state=first.request_state,
                allow_input_required=True,
            )  # fmt: skip
        runs = (await hub.list_runs("keeper")).items
    assert len(runs) == 1 and late.structured_content["run_id"] == runs[0].id
    assert late.is_error and "did not answer the agent's sampling request within 0.3s" in runs[0].error


async def test_without_sampling_or_an_endpoint_the_error_says_what_to_do(tmp_path: Path, mode: str) -> None:
    async with connect("memory", mode, tmp_path / "agents.db", None) as c:
        await c.call_tool("create_agent", {"name": "keeper", "persona": "keeper persona"})
        result = await c.call_tool("send_message", {"agent": "keeper", "message": "hello"})
    reply = structured(result)
    assert result.is_error and reply["status"] == "failed"
    assert "does not offer its model (MCP sampling)" in reply["error"]
    assert "set MCP_LETTA_LLM_BASE_URL" in reply["error"] and "keep a host that offers its model" in reply["error"]


async def test_an_async_message_thinks_with_the_connected_host_between_its_calls(
    tmp_path: Path, transport: str, mode: str
) -> None:
    model = HostModel(tools=True)
    async with connect(transport, mode, tmp_path / "agents.db", model) as c:
        await c.call_tool("create_agent", {"name": "keeper", "persona": "keeper persona"})
        sent = structured(await c.call_tool("send_message_to_agent_async", {"agent": "keeper", "message": "hello"}))
        done = structured(await c.call_tool("get_run", {"run_id": sent["run_id"], "wait_s": 30}))
    if mode == "legacy":  # asked on the connection's own channel: no tool call of its lends it
        assert done["status"] == "completed" and done["reply"] == "Your favourite colour: I do not know"
    else:  # a 2026-era host is asked only inside a tool call that lends its model
        assert done["status"] == "failed" and "no connected host offered its model (MCP sampling)" in done["error"]


async def test_a_message_whose_host_went_away_waits_for_the_next_host(tmp_path: Path) -> None:
    model = HostModel(tools=True)
    settings = Settings(db_path=tmp_path / "agents.db", watch_interval_s=0.05, sampling_wait_s=30)
    async with AgentHub(settings) as hub:
        await hub.create_agent("keeper", persona="keeper persona")
        await hub.create_agent("other", persona="other persona")
        server = build_server(hub)
        async with server.running():
            async with Client(server.mcp, mode="legacy", sampling_callback=model,
                              sampling_capabilities=model.capability) as c:  # fmt: skip
                await c.call_tool("send_message", {"agent": "other", "message": "hello"})
            orphan = await hub.send_message("keeper", "hello")  # no host is connected now: it waits for one
            assert (await hub.get_run(orphan.id, wait_s=0.3)).status == "running"
            async with Client(server.mcp, mode="legacy", sampling_callback=model,
                              sampling_capabilities=model.capability) as c:  # fmt: skip
                await c.call_tool("send_message", {"agent": "other", "message": "hello again"})
                done = await hub.get_run(orphan.id, wait_s=30)
    assert done.status == "completed" and done.reply == "Your favourite colour: I do not know"


async def test_a_message_no_host_ever_sent_fails_at_once_naming_both_ways_out(tmp_path: Path) -> None:
    settings = Settings(db_path=tmp_path / "agents.db", watch_interval_s=0.05, sampling_wait_s=60)
    async with AgentHub(settings) as hub:  # e.g. the CLI or the REST API, with no endpoint configured
        await hub.create_agent("keeper", persona="keeper persona")
        run = await hub.send_message("keeper", "hello", wait_s=30)
    assert run.status == "failed" and run.stop_reason == "llm_api_error"
    assert "no LLM endpoint is configured and no connected host offered its model (MCP sampling): " in run.error
    assert "set MCP_LETTA_LLM_BASE_URL" in run.error and "keep a host that offers its model" in run.error


async def test_with_mcp_letta_llm_sampling_a_message_waits_for_a_host_a_bounded_time(tmp_path: Path) -> None:
    settings = Settings(db_path=tmp_path / "agents.db", watch_interval_s=0.05, llm="sampling", sampling_wait_s=0.2)
    async with AgentHub(settings) as hub:
        await hub.create_agent("keeper", persona="keeper persona")
        run = await hub.send_message("keeper", "hello", wait_s=30)
    assert run.status == "failed" and run.error.startswith(
        "agent 'keeper' has no model to think with: MCP_LETTA_LLM=sampling and no connected host offered its model "
        "(MCP sampling) within 0.2s: set MCP_LETTA_LLM_BASE_URL"
    )


async def test_an_endpoint_wins_over_the_hosts_model(tmp_path: Path, scripted_llm: Any) -> None:
    model = HostModel(tools=True)
    scripted_llm.on("keeper persona", "from the endpoint")
    settings = Settings(db_path=tmp_path / "agents.db", llm_base_url=scripted_llm.base_url, model="m")
    async with AgentHub(settings) as hub:
        server = build_server(hub)
        async with server.running(), Client(server.mcp, mode="legacy", sampling_callback=model,
                                            sampling_capabilities=model.capability) as c:  # fmt: skip
            await c.call_tool("create_agent", {"name": "keeper", "persona": "keeper persona"})
            reply = structured(await c.call_tool("send_message", {"agent": "keeper", "message": "hello"}))
    assert reply["reply"] == "from the endpoint" and model.requests == []


async def test_sampling_is_chosen_explicitly_with_mcp_letta_llm(tmp_path: Path, scripted_llm: Any) -> None:
    model = HostModel(tools=True)
    env = {"MCP_LETTA_LLM": "sampling", "MCP_LETTA_LLM_BASE_URL": scripted_llm.base_url}
    settings = Settings.from_env(env).with_overrides(db_path=tmp_path / "agents.db")
    async with AgentHub(settings) as hub:
        server = build_server(hub)
        async with server.running(), Client(server.mcp, sampling_callback=model,
                                            sampling_capabilities=model.capability) as c:  # fmt: skip
            await c.call_tool("create_agent", {"name": "keeper", "persona": "keeper persona"})
            reply = structured(await c.call_tool("send_message", {"agent": "keeper", "message": "hello"}))
    assert reply["reply"] == "Your favourite colour: I do not know" and len(model.requests) == 1


def test_an_unknown_llm_source_is_refused_with_the_choices() -> None:
    from mcp_letta import Invalid

    with pytest.raises(Invalid, match=r"use 'endpoint'.*'sampling'.*'auto'"):
        Settings.from_env({"MCP_LETTA_LLM": "magic"})
