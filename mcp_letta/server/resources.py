"""The ``letta://`` resources and how store changes become resource-updated notifications.

``letta://agents/{agent}/memory`` is an agent's core memory exactly as its prompt shows it;
``letta://blocks/{block}`` is one block's value and metadata (either by id or name); ``letta://inbox``
holds the replies to the host's async messages that it has not read yet.
"""

from __future__ import annotations

import json
import logging
import re

import mcp.types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from mcp_letta.errors import LettaError
from mcp_letta.hub import AgentHub, Change
from mcp_letta.server.notify import Notifier
from mcp_letta.store.limits import MAX_PAGE

log = logging.getLogger("mcp_letta.server")

INBOX = "letta://inbox"
COMPLETION_LIMIT = 100  # the most values a completion result may carry (MCP spec)
AGENT_MEMORY = re.compile(r"^letta://agents/([^/]+)/memory$")
BLOCK = re.compile(r"^letta://blocks/([^/]+)$")


def memory_uri(agent: str) -> str:
    """The URI of an agent's rendered core memory."""
    return f"letta://agents/{agent}/memory"


def block_uri(block: str) -> str:
    """The URI of a block."""
    return f"letta://blocks/{block}"


def register_resources(mcp: MCPServer, hub: AgentHub) -> None:
    """Add the agent-memory and block resource templates to ``mcp``."""

    @mcp.resource(
        "letta://agents/{agent}/memory",
        name="agent_memory",
        title="Agent core memory",
        mime_type="text/plain",
    )
    async def agent_memory(agent: str) -> str:
        """An agent's core memory (blocks and memory metadata) exactly as it appears in its prompt."""
        try:
            return await hub.core_memory(agent)
        except LettaError as exc:
            raise ResourceNotFoundError(exc.message) from None

    @mcp.resource(INBOX, name="inbox", title="Host inbox", mime_type="application/json")
    async def inbox() -> str:
        """Replies to the host's async messages not read yet (check_replies reads and marks them)."""
        unread = await hub.check_replies(limit=100, mark_read=False)
        return json.dumps(
            {"unread": len(unread), "replies": [{"run_id": r.id, "agent": r.agent_name, "status": r.status,
                                                 "reply": r.reply, "error": r.error} for r in unread]},
            indent=2,
        )  # fmt: skip

    @mcp.resource("letta://blocks/{block}", name="block", title="Memory block", mime_type="application/json")
    async def block(block: str) -> str:
        """A memory block's value and metadata (version, limit, description, agents sharing it) as JSON."""
        try:
            found = await hub.read_block(block)
        except LettaError as exc:
            raise ResourceNotFoundError(exc.message) from None
        return found.model_dump_json(indent=2)


def register_completions(mcp: MCPServer, hub: AgentHub) -> None:
    """Answer ``completion/complete`` for the resource templates: agent names and block labels by prefix."""

    @mcp.completion()
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion:
        """Agent names for ``{agent}``, block labels for ``{block}``; nothing for anything else."""
        names: list[str] = []
        if isinstance(ref, types.ResourceTemplateReference):
            if argument.name == "agent":
                names = [a.name for a in await hub.list_agents(query=argument.value or None, limit=MAX_PAGE)]
            elif argument.name == "block":
                names = list(dict.fromkeys(b.label for b in await hub.list_blocks(limit=MAX_PAGE)))
        prefix = argument.value.lower()
        found = sorted(n for n in names if n.lower().startswith(prefix))
        return types.Completion(
            values=found[:COMPLETION_LIMIT], total=len(found), has_more=len(found) > COMPLETION_LIMIT
        )


async def check_subscription(hub: AgentHub, uri: str) -> None:
    """Refuse a subscription to a URI that names nothing, saying what exists instead."""
    if uri == INBOX:
        return
    try:
        if match := AGENT_MEMORY.match(uri):
            await hub.get_agent(match.group(1))
            return
        if match := BLOCK.match(uri):
            await hub.read_block(match.group(1))
            return
    except LettaError as exc:
        raise MCPError(INVALID_PARAMS, f"cannot subscribe to {uri}: {exc.message}") from None
    raise MCPError(
        INVALID_PARAMS,
        f"cannot subscribe to {uri}: use letta://agents/{{agent}}/memory, letta://blocks/{{block}} or {INBOX}",
    )


class ResourceFanout:
    """Turns store changes into resource-updated notifications for every URI form a client may use."""

    def __init__(self, hub: AgentHub, notifier: Notifier) -> None:
        self._hub = hub
        self._notifier = notifier
        self._names: dict[str, str] = {}  # id -> name/label, remembered so deletions can still be announced

    async def handle(self, changes: list[Change]) -> None:
        """Announce every URI affected by a batch of changes (each URI once)."""
        uris: dict[str, None] = {}
        for change in changes:
            if change.kind == "block":
                await self._block_uris(change.ref, uris)
            elif change.kind in ("agent", "agents"):
                await self._agent_uris(change.ref, uris)
            elif change.kind == "inbox":
                uris[INBOX] = None
        for uri in uris:
            await self._notifier.resource_updated(uri)

    async def _block_uris(self, block_id: str, uris: dict[str, None]) -> None:
        uris[block_uri(block_id)] = None
        try:
            found = await self._hub.read_block(block_id)
            self._names[block_id] = found.label
        except LettaError:
            pass  # deleted: its agents were announced through their own changes
        if label := self._names.get(block_id):
            uris[block_uri(label)] = None
        for agent_id, name in await self._hub.block_agents(block_id):
            self._names[agent_id] = name
            uris[memory_uri(agent_id)] = None
            uris[memory_uri(name)] = None

    async def _agent_uris(self, agent_id: str, uris: dict[str, None]) -> None:
        uris[memory_uri(agent_id)] = None
        try:
            self._names[agent_id] = (await self._hub.get_agent(agent_id)).name
        except LettaError:
            pass
        if name := self._names.get(agent_id):
            uris[memory_uri(name)] = None
