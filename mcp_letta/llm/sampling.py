"""Thinking with the host's model: an agent's chat requests sent to the MCP host as ``sampling/createMessage``.

``HostModels`` knows which host a run may sample through: the one whose tool call sent it (a ``Sampler`` the
server attaches when it submits the run), else the one its parent run samples through, else any host lending
its model now (waiting a bounded time for one). ``SamplingLLM`` is the ``LLMClient`` over one such host: it
turns our OpenAI-shaped request into ``CreateMessageRequestParams`` and the host's answer back into text and
tool calls. The server layer implements ``Sampler`` for each protocol era (``server/sampling.py``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ModelHint,
    ModelPreferences,
    SamplingMessage,
    TextContent,
    ToolResultContent,
    ToolUseContent,
)
from mcp_types import Tool as SamplingTool
from mcp_types import ToolChoice as SamplingToolChoice

from mcp_letta.errors import LLMUnavailable
from mcp_letta.llm.base import ChatRequest, ChatResponse, arguments_json, new_call_id
from mcp_letta.models import Run, ToolCall

DEFAULT_MAX_TOKENS = 4096  # sampling requires a bound; an agent's model_settings.max_tokens wins
WAYS_OUT = (
    "set MCP_LETTA_LLM_BASE_URL (and MCP_LETTA_MODEL; e.g. http://localhost:11434/v1 for Ollama) so agents "
    "use an endpoint of their own, or keep a host that offers its model to MCP servers (sampling, e.g. VS Code) "
    "connected while agents work"
)


class Sampler(Protocol):
    """One host's model, reached through an MCP session (the server implements it per protocol era)."""

    can_sample: bool
    """Whether the host declared the ``sampling`` capability."""
    tools: bool
    """Whether it declared ``sampling.tools`` (tool definitions in requests, ``tool_use`` in answers)."""
    alive: bool
    """False once the session (or the tool call that lends it) has ended."""

    async def create_message(
        self, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools:
        """Ask the host's model; raise ``LLMUnavailable`` with the host's reason when it refuses."""
        ...


class HostModels:
    """Which host each run samples through, and the hosts lending their model now (one per process)."""

    def __init__(self, wait_s: float, *, always_wait: bool = False) -> None:
        self.wait_s = wait_s
        # A run without a host waits for one only where hosts that sample come: this process has seen one,
        # or MCP_LETTA_LLM=sampling says they will. Elsewhere (the CLI, the REST API) it fails at once.
        self._waits = always_wait
        self._why = "MCP_LETTA_LLM=sampling" if always_wait else "no LLM endpoint is configured"
        self._by_run: dict[str, Sampler] = {}
        self._lent: list[Sampler] = []
        self._changed = anyio.Event()

    def attach(self, run_id: str, sampler: Sampler) -> None:
        """The run was sent by ``sampler``'s tool call: it (and the runs it sends) think with that host."""
        self._by_run[run_id] = sampler

    def lend(self, sampler: Sampler, *, idle: bool = False) -> None:
        """From now on, any run without a host of its own may sample through ``sampler``: a tool call in flight,
        or (``idle``, asked only when no tool call is) a connected host's session."""
        if sampler.can_sample:
            self._waits = True
            if idle:
                self._lent.append(sampler)
            else:
                self._lent.insert(0, sampler)
            self._changed.set()
            self._changed = anyio.Event()

    def withdraw(self, sampler: Sampler) -> None:
        """``sampler`` has ended: no run samples through it any more."""
        if sampler in self._lent:
            self._lent.remove(sampler)
        for run_id in [r for r, s in self._by_run.items() if s is sampler]:
            del self._by_run[run_id]

    @asynccontextmanager
    async def lending(self, sampler: Sampler) -> AsyncIterator[None]:
        """``lend`` for the duration of the block, then ``withdraw``."""
        self.lend(sampler)
        try:
            yield
        finally:
            self.withdraw(sampler)

    async def sampler_for(self, run: Run, parent_of: Callable[[str], Awaitable[str | None]]) -> Sampler:
        """The host ``run`` samples through: its own (the tool call that sent it, or its nearest ancestor's;
        ``parent_of`` reads a run's parent), else one lent now. A run whose host is gone waits up to ``wait_s``
        for one; a run sent by a host that cannot sample fails at once unless another host lends its model.
        Raises ``LLMUnavailable`` naming the ways out.
        """
        wait_s = self.wait_s if self._waits else 0
        own, ancestor, seen = self._by_run.get(run.id), run.parent_run_id, {run.id}
        while own is None and ancestor is not None and ancestor not in seen:
            seen.add(ancestor)
            own = self._by_run.get(ancestor)
            if own is None:
                ancestor = await parent_of(ancestor)
        with anyio.move_on_after(wait_s):
            while not (own is not None and own.alive and own.can_sample):
                lent = next((s for s in self._lent if s.alive), None)
                if lent is not None:
                    own = lent
                elif own is not None and own.alive:  # its host is here but cannot sample: waiting would not help
                    raise LLMUnavailable(
                        f"agent {run.agent_name!r} has no model to think with: {self._why} and "
                        f"the host that sent the message does not offer its model (MCP sampling): {WAYS_OUT}"
                    )
                else:
                    await self._changed.wait()
        if own is None or not (own.alive and own.can_sample):
            within = f" within {wait_s:g}s" if wait_s else ""
            raise LLMUnavailable(
                f"agent {run.agent_name!r} has no model to think with: {self._why} and no "
                f"connected host offered its model (MCP sampling){within}: {WAYS_OUT}"
            )
        return own


class SamplingLLM:
    """An ``LLMClient`` that asks an MCP host's model (``sampling/createMessage``) for one run.

    ``prints_calls`` is true when the host takes no tool definitions, so the runtime's ``auto`` tool mode
    offers the tools through JSON answers instead. When the run's host goes away mid-run, the next request
    looks for another one (``HostModels.sampler_for``).
    """

    def __init__(
        self, hosts: HostModels, run: Run, parent_of: Callable[[str], Awaitable[str | None]], sampler: Sampler
    ) -> None:
        self._hosts, self._run, self._parent_of = hosts, run, parent_of
        self.sampler = sampler
        self.prints_calls = not sampler.tools

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Send the request to the host's model and read its answer."""
        if not self.sampler.alive:
            self.sampler = await self._hosts.sampler_for(self._run, self._parent_of)
        tools = self.sampler.tools and not self.prints_calls
        result = await self.sampler.create_message(sampling_params(request, tools=tools))
        return chat_response(result)

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the host."""


def sampling_params(request: ChatRequest, *, tools: bool) -> CreateMessageRequestParams:
    """An OpenAI-shaped chat request as a sampling request: the system message apart, tool calls and results
    as ``tool_use``/``tool_result`` blocks when the host takes tools (``tools``), else as text."""
    system: list[str] = []
    messages: list[SamplingMessage] = []
    for index, message in enumerate(request.messages):
        role, content = message.get("role"), message.get("content") or ""
        if role == "system" and index == 0:
            system.append(content)
        elif role == "assistant" and message.get("tool_calls"):
            calls = [call["function"] | {"id": call.get("id") or new_call_id()} for call in message["tool_calls"]]
            if tools:
                blocks: list[Any] = [TextContent(type="text", text=content)] if content else []
                blocks += [
                    ToolUseContent(type="tool_use", id=c["id"], name=c["name"], input=_arguments(c.get("arguments")))
                    for c in calls
                ]
                messages.append(SamplingMessage(role="assistant", content=blocks))
            else:
                text = "\n".join(
                    json.dumps({"tool": c["name"], "arguments": _arguments(c.get("arguments"))}) for c in calls
                )
                messages.append(SamplingMessage(role="assistant", content=TextContent(type="text", text=text)))
        elif role == "tool" and tools:
            result = ToolResultContent(
                type="tool_result", tool_use_id=message.get("tool_call_id") or "",
                content=[TextContent(type="text", text=content)],
            )  # fmt: skip
            last = messages[-1] if messages else None
            if last is not None and last.role == "user" and all(b.type == "tool_result" for b in last.content_as_list):
                last.content = [*last.content_as_list, result]  # one step's results travel together
            else:
                messages.append(SamplingMessage(role="user", content=[result]))
        elif role == "tool":
            text = f"[result of {message.get('name') or 'the tool'}] {content}"
            messages.append(SamplingMessage(role="user", content=TextContent(type="text", text=text)))
        else:
            speaker = "assistant" if role == "assistant" else "user"
            messages.append(SamplingMessage(role=speaker, content=TextContent(type="text", text=content)))
    offered = [
        SamplingTool(
            name=tool["function"]["name"],
            description=tool["function"].get("description"),
            input_schema=tool["function"].get("parameters") or {"type": "object"},
        )
        for tool in request.tools
    ]
    hints = [ModelHint(name=request.model)] if request.model else None
    return CreateMessageRequestParams(
        messages=messages,
        system_prompt="\n\n".join(system) or None,
        max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=request.temperature,
        model_preferences=ModelPreferences(hints=hints) if hints else None,
        tools=offered if tools and offered else None,
        tool_choice=SamplingToolChoice(mode=request.tool_choice) if tools and offered else None,
    )


def chat_response(result: CreateMessageResult | CreateMessageResultWithTools) -> ChatResponse:
    """The host's answer as ours: its text, and its ``tool_use`` blocks as tool calls."""
    content = result.content if isinstance(result.content, list) else [result.content]
    text = "".join(block.text for block in content if isinstance(block, TextContent))
    calls = [
        ToolCall(id=block.id or new_call_id(), name=block.name, arguments=arguments_json(block.input))
        for block in content
        if isinstance(block, ToolUseContent)
    ]
    return ChatResponse(content=text or None, tool_calls=calls, finish_reason=result.stop_reason, model=result.model)


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        return {"arguments": raw}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}
