"""One MCP tool per exposed agent (``ask_<name>`` by default), kept in sync with the agent registry.

Agents created, renamed or deleted by this process or another one on the same database change the tool
list; ``sync()`` reconciles it and tells every client (both protocol eras) that the list changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, InputRequiredResult, ToolAnnotations

from mcp_letta.config import Settings
from mcp_letta.hub import AgentHub
from mcp_letta.models import Agent
from mcp_letta.server.messaging import AgentOutcome, TimeoutS, outcome_result
from mcp_letta.server.notify import Notifier
from mcp_letta.server.shapes import AgentReply
from mcp_letta.store.limits import MAX_PAGE

log = logging.getLogger("mcp_letta.server")

ASK = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
DESCRIPTION_CHARS = 300


# ask(agent_id, message, timeout_s, ctx) -> AgentReply (or the host's next round): as the send_message tool.
Ask = Callable[[str, str, float, Context | None], Coroutine[Any, Any, AgentReply | InputRequiredResult]]


def agent_tool_description(agent: Agent) -> str:
    """What the host shows for an agent's tool: its description, else the first line of its persona."""
    text = (agent.description or "").strip()
    if not text:
        persona = next((b.value for b in agent.blocks if b.label == "persona"), "")
        text = next((line.strip() for line in persona.splitlines() if line.strip()), "")
    text = text or f"the agent {agent.name}"
    if len(text) > DESCRIPTION_CHARS:
        text = text[: DESCRIPTION_CHARS - 1] + "…"
    return f"Stateful agent {agent.name}: {text}"


@dataclass(frozen=True)
class _Published:
    agent_id: str
    description: str


class AgentTools:
    """Publishes and withdraws the per-agent tools of one server."""

    def __init__(
        self, mcp: MCPServer, hub: AgentHub, settings: Settings, notifier: Notifier, ask: Ask, reserved: set[str]
    ) -> None:
        self._mcp = mcp
        self._hub = hub
        self._settings = settings
        self._notifier = notifier
        self._ask = ask
        self._reserved = reserved
        self._published: dict[str, _Published] = {}

    @property
    def names(self) -> list[str]:
        """The agent tool names currently published."""
        return sorted(self._published)

    def tool_name(self, agent_name: str) -> str:
        """The tool name for an agent, from ``MCP_LETTA_AGENT_TOOL`` (default ``ask_{name}``)."""
        return self._settings.agent_tool_template.replace("{name}", agent_name)

    def plan(self, agents: list[Agent]) -> dict[str, tuple[str | None, str | None]]:
        """For each agent id: ``(tool name, None)`` if this server publishes a tool for it, else
        ``(None, why not)``, by the rules ``sync`` applies (expose tags, built-in names, the tool cap)."""
        tags = set(self._settings.expose_tags)
        plan: dict[str, tuple[str | None, str | None]] = {}
        published = 0
        for agent in agents:
            name = self.tool_name(agent.name)
            if tags and not tags.intersection(agent.tags):
                plan[agent.id] = (None, f"not tagged {' or '.join(sorted(tags))} (MCP_LETTA_EXPOSE_TAGS)")
            elif name in self._reserved:
                plan[agent.id] = (None, f"{name} would shadow the built-in tool; reach it with send_message")
            elif published >= self._settings.max_agent_tools:
                plan[agent.id] = (None, f"MCP_LETTA_MAX_AGENT_TOOLS={self._settings.max_agent_tools} reached")
            else:
                plan[agent.id] = (name, None)
                published += 1
        return plan

    async def _wanted(self) -> dict[str, tuple[Agent, str]]:
        tags = list(self._settings.expose_tags)
        # Enough agents to fill every tool slot even if some names clash with built-in tools.
        limit = min(MAX_PAGE, self._settings.max_agent_tools + len(self._reserved))
        agents = await self._hub.list_agents(tags=tags or None, limit=limit)
        plan = self.plan(agents.items)
        wanted: dict[str, tuple[Agent, str]] = {}
        for agent in agents:
            name, why_not = plan[agent.id]
            if name is not None:
                wanted[name] = (agent, agent_tool_description(agent))
            elif why_not and "shadow" in why_not:
                log.warning("agent %r would shadow the built-in tool %r; reach it with send_message", agent.name,
                            self.tool_name(agent.name))  # fmt: skip
        matching = len(agents) + agents.more
        if len(wanted) < matching and len(wanted) >= self._settings.max_agent_tools:
            log.info(
                "MCP_LETTA_MAX_AGENT_TOOLS=%d reached: %d agents get no tool of their own (use send_message)",
                self._settings.max_agent_tools,
                matching - len(wanted),
            )
        return wanted

    async def sync(self) -> bool:
        """Make the published tools match the registry; notify clients if anything changed."""
        wanted = await self._wanted()
        changed = False
        for name in list(self._published):
            current = wanted.get(name)
            if current is None or _Published(current[0].id, current[1]) != self._published[name]:
                self._mcp.remove_tool(name)
                del self._published[name]
                changed = True
        for name, (agent, description) in wanted.items():
            if name not in self._published:
                self._publish(name, agent, description)
                changed = True
        if changed:
            await self._notifier.tools_changed()
        return changed

    def _publish(self, name: str, agent: Agent, description: str) -> None:
        agent_id, ask = agent.id, self._ask

        async def ask_agent(ctx: Context, message: str, timeout_s: TimeoutS = 50) -> AgentOutcome:
            return outcome_result(await ask(agent_id, message, timeout_s, ctx))

        async def ask_agent_lean(ctx: Context, message: str, timeout_s: TimeoutS = 50) -> CallToolResult:
            return outcome_result(await ask(agent_id, message, timeout_s, ctx))

        title = f"Ask {agent.name}"
        if self._settings.tools == "full":
            self._mcp.add_tool(ask_agent, name=name, title=title, description=description, annotations=ASK)
        else:
            # Context economy: the same structured reply, without repeating its schema once per agent.
            self._mcp.add_tool(
                ask_agent_lean,
                name=name,
                title=title,
                description=description,
                annotations=ASK,
                structured_output=False,
            )
        self._published[name] = _Published(agent.id, description)
