"""An agent's LLM request, and the early first request of a run that is about to start.

A broadcast's first wave used to be stored and started (one transaction, reading every recipient's
memory) before any request went out. A process that ran an agent before remembers what its prompt was
built from (``Basis``) and its window, so the first request can go out at once (``Early``) while the
transaction runs during the LLM's wait; the start then builds the request from the store as always and
the early answer is used only when the two requests are equal, else it is dropped and the run asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mcp_letta.llm import ChatRequest, ChatResponse, LLMClient
from mcp_letta.models import ModelSettings
from mcp_letta.runtime.context import (
    CHARS_PER_TOKEN,
    DEFAULT_CONTEXT_WINDOW,
    MESSAGE_OVERHEAD_TOKENS,
    SUMMARIZE_AT,
    Window,
    compile_system,
    fixed_tokens,
    render_memory,
)
from mcp_letta.runtime.toolbox import Tool, Toolbox
from mcp_letta.store.agent_tools import ToolAgent
from mcp_letta.store.blocks import PromptBlock


@dataclass(frozen=True)
class Basis:
    """What an agent's system prompt and tools are built from, as its last start read them from the store."""

    template: str
    model_settings: ModelSettings
    metadata: dict[str, Any]
    tool_agents: list[ToolAgent]
    blocks: list[PromptBlock]
    recall: int
    archival: int
    tags: list[str]

    def system(self, agent_id: str, compiled_at: datetime | None) -> str:
        """The system message: the template with core memory rendered as of ``compiled_at``."""
        memory = render_memory(
            agent_id=agent_id, blocks=self.blocks, recall_count=self.recall, archival_count=self.archival,
            archival_tags=self.tags, compiled_at=compiled_at,
        )  # fmt: skip
        return compile_system(self.template, memory)


@dataclass
class Early:
    """A run's first request, sent before the run started, with what it was built from (compared with what
    the start reads, see ``matches``); ``answer`` is what came back, or the failure."""

    agent_id: str
    client: LLMClient
    model: str
    basis: Basis
    system: str
    messages: list[dict[str, Any]]
    tools_json: str
    request: ChatRequest
    compiled_at: datetime
    answer: ChatResponse | Exception | None = None

    @classmethod
    def plan(
        cls, toolbox: Toolbox, client: LLMClient, model: str, agent_id: str, basis: Basis, history: Window,
        role: str, content: str, compiled_at: datetime,
    ) -> Early | None:  # fmt: skip
        """The first request of a run with this input, for an agent with this ``basis`` and ``history``; None
        when its first step would summarize first (or not fit)."""
        system = basis.system(agent_id, compiled_at)
        offered, tools_json = offered_tools(toolbox, agent_id, basis)
        limit = basis.model_settings.context_window or DEFAULT_CONTEXT_WINDOW
        tokens = history.estimate(system, len(tools_json)) + len(content) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS
        if fixed_tokens(system, len(tools_json)) > limit or tokens > SUMMARIZE_AT * limit:
            return None
        messages = [{"role": "system", "content": system}, *history.chat, {"role": role, "content": content}]
        request = chat_request(model, basis.model_settings, messages, offered, tools_json)
        return cls(agent_id, client, model, basis, system, messages, tools_json, request, compiled_at)

    def matches(self, toolbox: Toolbox, model: str, basis: Basis, system: str, window: Window) -> bool:
        """Whether a first step with this model, basis, system message and window sends this very request."""
        return (
            model == self.model
            and system == self.system
            and basis == self.basis
            and window.request(system) == self.messages
            and offered_tools(toolbox, self.agent_id, basis)[1] == self.tools_json
        )


def offered_tools(toolbox: Toolbox, agent_id: str, basis: Basis) -> tuple[dict[str, Tool], str]:
    """The tools offered to the agent, by name, and their schemas as one JSON array."""
    offered = toolbox.tools_for(agent_id, basis.metadata, basis.tool_agents)
    return offered, "[" + ",".join(tool.schema_json for tool in offered.values()) + "]"


def chat_request(
    model: str, settings: ModelSettings, messages: list[dict[str, Any]], offered: dict[str, Tool], tools_json: str
) -> ChatRequest:
    """The request of one step: ``messages`` as ``Window.request`` gives them, the tools as offered.

    Built without validation: every field comes typed from the runtime, and validating copies each
    message (14 us for a window of 100, for each of a broadcast's hundred recipients).
    """
    return ChatRequest.model_construct(
        model=model,
        messages=messages,
        tools=[tool.schema() for tool in offered.values()],
        tools_json=tools_json,
        tool_choice="auto",
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
