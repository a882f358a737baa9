"""An agent's LLM request: what it is built from (read from the store as a run starts, or remembered), and
the early first request of a run that is about to start.

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
from mcp_letta.store import agent_tools as agent_tools_sql
from mcp_letta.store import blocks as block_sql
from mcp_letta.store import memory as memory_sql
from mcp_letta.store import runs as runs_sql
from mcp_letta.store.agent_tools import ToolAgent
from mcp_letta.store.blocks import PromptBlock
from mcp_letta.store.db import Conn, loads_json


@dataclass(frozen=True)
class ShownMemory:
    """What an agent's core memory shows: its blocks, and how much recall and archival memory it has."""

    blocks: list[PromptBlock]
    recall: int
    archival: int
    tags: list[str]

    @classmethod
    def read(cls, conn: Conn, agent_id: str, facts: MemoryFacts) -> ShownMemory:
        """The agent's, from ``facts`` (and its archival tags, read only when it has passages)."""
        archival = facts.archival[agent_id]
        tags = memory_sql.archival_tags(conn, agent_id) if archival else []
        return cls(facts.blocks[agent_id], facts.recall[agent_id], archival, tags)

    def render(self, agent_id: str, compiled_at: datetime | None = None) -> str:
        """As the prompt shows it, compiled at ``compiled_at`` (now if None)."""
        return render_memory(
            agent_id=agent_id, blocks=self.blocks, recall_count=self.recall, archival_count=self.archival,
            archival_tags=self.tags, compiled_at=compiled_at,
        )  # fmt: skip


@dataclass(frozen=True)
class Basis:
    """What an agent's system prompt and tools are built from, as its last start read them from the store."""

    template: str
    model_settings: ModelSettings
    metadata: dict[str, Any]
    tool_agents: list[ToolAgent]
    memory: ShownMemory

    def system(self, agent_id: str, compiled_at: datetime | None) -> str:
        """The system message: the template with core memory rendered as of ``compiled_at``."""
        return compile_system(self.template, self.memory.render(agent_id, compiled_at))


@dataclass
class MemoryFacts:
    """What agents' core memory shows, read in one query each: their blocks, archival and recall counts."""

    blocks: dict[str, list[block_sql.PromptBlock]]
    archival: dict[str, int]
    recall: dict[str, int]

    @classmethod
    def read(cls, conn: Conn, agent_ids: list[str]) -> MemoryFacts:
        """The facts of these agents as the store has them now."""
        return cls(
            blocks=block_sql.blocks_in_prompts(conn, agent_ids),
            archival=memory_sql.counts_by_agent(conn, "passages", agent_ids),
            recall=memory_sql.counts_by_agent(conn, "messages", agent_ids, "in_context = 0"),
        )


def memory_of(conn: Conn, agent_id: str, facts: MemoryFacts | None = None) -> str:
    """An agent's core memory rendered as its prompt shows it (blocks and memory metadata)."""
    facts = facts if facts is not None else MemoryFacts.read(conn, [agent_id])
    return ShownMemory.read(conn, agent_id, facts).render(agent_id)


@dataclass
class Prefetched:
    """What starting agents' runs reads, in one query each however many agents start together."""

    agents: dict[str, Any]
    fingerprints: dict[str, tuple[int, int]]
    memory: MemoryFacts
    tool_agents: dict[str, list[agent_tools_sql.ToolAgent]]

    @classmethod
    def read(cls, conn: Conn, agent_ids: list[str]) -> Prefetched:
        """(In the claiming transaction, before any input is appended.)"""
        marks = ",".join("?" * len(agent_ids))
        agents = {r["id"]: r for r in conn.execute(f"SELECT * FROM agents WHERE id IN ({marks})", agent_ids)}
        return cls(
            agents=agents,
            fingerprints=runs_sql.window_fingerprints(conn, agent_ids),
            memory=MemoryFacts.read(conn, agent_ids),
            tool_agents=agent_tools_sql.for_runtimes(conn, agent_ids),
        )


def basis_of(conn: Conn, agent: Any, known: Prefetched) -> Basis:
    """What the agent's prompt and tools are built from, out of its row and what ``known`` read."""
    agent_id = agent["id"]
    return Basis(
        template=agent["system"],
        model_settings=ModelSettings.model_validate(loads_json(agent["model_settings"], {})),
        metadata=loads_json(agent["metadata"], {}),
        tool_agents=known.tool_agents[agent_id],
        memory=ShownMemory.read(conn, agent_id, known.memory),
    )


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
        given = {"role": role, "content": content}
        messages = [{"role": "system", "content": system}, *history.chat, given]
        request = chat_request(
            model, basis.model_settings, messages, history.request_json(system, given), offered, tools_json
        )
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
    model: str,
    settings: ModelSettings,
    messages: list[dict[str, Any]],
    messages_json: str,
    offered: dict[str, Tool],
    tools_json: str,
) -> ChatRequest:
    """The request of one step: ``messages`` as ``Window.request`` gives them, the tools as offered.

    Built without validation: every field comes typed from the runtime, and validating copies each
    message (14 us for a window of 100, for each of a broadcast's hundred recipients).
    """
    return ChatRequest.model_construct(
        model=model,
        messages=messages,
        messages_json=messages_json,
        tools=[tool.schema() for tool in offered.values()],
        tools_json=tools_json,
        tool_choice="auto",
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
