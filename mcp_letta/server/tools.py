"""The built-in MCP tools: agents, memory blocks, archival memory and message history.

Each tool is a thin typed adapter over ``AgentHub``: validate, call the hub, shape the result. Errors
a caller can act on become ``ToolError``s whose text says what to do next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field, ValidationError

from mcp_letta.errors import LettaError, VersionConflict
from mcp_letta.hub import PAGE, AgentHub
from mcp_letta.models import Agent, Block, BlockSpec, ModelSettings, Passage
from mcp_letta.server.shapes import (
    AgentList,
    AgentSummary,
    BlockHistory,
    BlockList,
    BlockSummary,
    BlockWritten,
    Deleted,
    MessageList,
    Paged,
    PassageList,
)
from mcp_letta.store.limits import MAX_PAGE

T = TypeVar("T")

WRITER = "mcp"

AgentRef = Annotated[str, Field(description="agent name or id")]
BlockRef = Annotated[str, Field(description="block id or label")]
ScopeAgent = Annotated[str | None, Field(description="resolve the label among this agent's blocks")]
Cursor = Annotated[
    str | None, Field(description="next_cursor of the previous page (same filters); omit for the first page")
]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE, description="items per page")]
ExpectedVersion = Annotated[
    int | None, Field(description="compare-and-set: fail unless the block is still at this version")
]

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
CREATE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
SET = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
ADD = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
LINK = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)

# Tools a host sees with MCP_LETTA_TOOLS=core (the rest only with "full").
CORE_TOOLS = frozenset({"list_agents", "read_block", "write_block", "append_to_block"})


# The tool that lists what a reference can name, for errors about a reference of that kind.
LISTING_TOOLS = {"agent": "list_agents", "block": "list_blocks", "run": "list_runs"}


def tool_error(exc: Exception) -> ToolError:
    """The ToolError a caller reads for one of our errors (or a validation error); an error about a
    reference says which tool lists what exists."""
    if isinstance(exc, VersionConflict):
        return ToolError(f"{exc.message}. Current value (version {exc.current_version}):\n{exc.current_value}")
    if isinstance(exc, LettaError):
        listing = LISTING_TOOLS.get(exc.details.get("kind", ""))
        return ToolError(f"{exc.message} ({listing} shows them)" if listing else exc.message)
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}" for err in exc.errors()[:5]
        )
        return ToolError(f"invalid input: {problems}")
    raise exc


async def call(work: Awaitable[T]) -> T:
    """Await hub work, turning our errors into ToolErrors with the same message."""
    try:
        return await work
    except (LettaError, ValidationError) as exc:
        raise tool_error(exc) from None


def register_builtin_tools(mcp: MCPServer, hub: AgentHub, *, tools: str = "full") -> list[str]:
    """Add the agent, block, archival and history tools to ``mcp``; returns the names registered."""
    registered: list[str] = []

    def tool(annotations: ToolAnnotations, title: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            if tools == "full" or fn.__name__ in CORE_TOOLS:
                mcp.tool(title=title, annotations=annotations)(fn)
                registered.append(fn.__name__)
            return fn

        return decorate

    # -- agents ------------------------------------------------------------------------------------
    @tool(READ, "List agents")
    async def list_agents(
        tags: Annotated[list[str] | None, Field(description="only agents with these tags")] = None,
        match_all_tags: Annotated[bool, Field(description="require every tag, not any")] = False,
        query: Annotated[str | None, Field(description="text to find in name, description or system")] = None,
        limit: Limit = PAGE,
        cursor: Cursor = None,
    ) -> AgentList:
        """List agents by name (name, description, tags, block labels), filtered by tags and text, a page at a
        time: 'more' says how many follow, pass 'next_cursor' as cursor for them."""
        page = await call(
            hub.list_agents(tags=tags, match_all_tags=match_all_tags, query=query, limit=limit, cursor=cursor)
        )
        return AgentList(**Paged.fields_of(page), agents=[AgentSummary.of(a) for a in page])

    @tool(CREATE, "Create agent")
    async def create_agent(
        name: Annotated[str, Field(description="unique; letters, digits, '-' and '_'")],
        description: Annotated[str | None, Field(description="what the agent is for (its tool description)")] = None,
        system: Annotated[str | None, Field(description="system prompt (default: a general one)")] = None,
        persona: Annotated[str, Field(description="initial value of its persona block")] = "",
        human: Annotated[str, Field(description="initial value of its human block")] = "",
        blocks: Annotated[list[BlockSpec] | None, Field(description="extra blocks of its own")] = None,
        shared_blocks: Annotated[list[str] | None, Field(description="existing blocks to attach")] = None,
        tags: list[str] | None = None,
        model_settings: ModelSettings | None = None,
        metadata: dict[str, Any] | None = None,
        agent_tools: Annotated[list[str] | None, Field(description="agents it may call as ask_<name> tools")] = None,
        include_multi_agent_tools: Annotated[
            bool, Field(description="offer it Letta's agent-to-agent messaging tools")
        ] = False,
    ) -> Agent:
        """Create a stateful agent with persona and human memory blocks, extra and shared blocks, and tags."""
        return await call(
            hub.create_agent(
                name, description=description, system=system, persona=persona, human=human, blocks=blocks or [],
                shared_blocks=shared_blocks or [], tags=tags or [], model_settings=model_settings, metadata=metadata,
                writer=WRITER, agent_tools=agent_tools or [], include_multi_agent_tools=include_multi_agent_tools,
            )
        )  # fmt: skip

    @tool(READ, "Get agent")
    async def get_agent(agent: AgentRef) -> Agent:
        """Get an agent with its system prompt, memory blocks, tags and model settings."""
        return await call(hub.get_agent(agent))

    @tool(SET, "Update agent")
    async def update_agent(
        agent: AgentRef,
        name: str | None = None,
        description: str | None = None,
        system: str | None = None,
        tags: Annotated[list[str] | None, Field(description="replaces all tags")] = None,
        model_settings: Annotated[
            ModelSettings | None, Field(description="changes the settings given, keeps the others (null clears one)")
        ] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="replaces all metadata")] = None,
        include_multi_agent_tools: Annotated[
            bool | None, Field(description="offer (true) or withdraw (false) the agent-to-agent messaging tools")
        ] = None,
    ) -> Agent:
        """Change an agent's name, description, system prompt, tags, model settings or metadata."""
        return await call(
            hub.update_agent(
                agent, name=name, description=description, system=system, tags=tags, model_settings=model_settings,
                metadata=metadata, include_multi_agent_tools=include_multi_agent_tools,
            )
        )  # fmt: skip

    @tool(DELETE, "Delete agent")
    async def delete_agent(agent: AgentRef) -> Deleted:
        """Delete an agent with its history, archival memory and the blocks only it used; its runs not yet ended
        fail, saying so."""
        gone = await call(hub.delete_agent(agent))
        return Deleted(deleted=gone.id, name=gone.name, detail="agent, its messages, passages and own blocks deleted")

    # -- blocks ------------------------------------------------------------------------------------
    @tool(CREATE, "Create block")
    async def create_block(
        label: Annotated[str, Field(description="its tag in the prompt, e.g. project_notes")],
        value: str = "",
        limit: Annotated[int, Field(description="maximum characters", ge=1)] = 5000,
        description: Annotated[str | None, Field(description="tells agents what the block is for")] = None,
        read_only: Annotated[bool, Field(description="agents may read but not edit it")] = False,
        attach_to: Annotated[list[str] | None, Field(description="agents to attach it to")] = None,
    ) -> Block:
        """Create a memory block, shareable by several agents, optionally attaching it right away."""
        return await call(
            hub.create_block(
                label, value, limit=limit, description=description, read_only=read_only, attach_to=attach_to or [],
                writer=WRITER,
            )
        )  # fmt: skip

    @tool(READ, "List blocks")
    async def list_blocks(
        label: Annotated[str | None, Field(description="only blocks with this label")] = None,
        agent: Annotated[str | None, Field(description="only blocks attached to this agent")] = None,
        limit: Limit = PAGE,
        cursor: Cursor = None,
    ) -> BlockList:
        """List memory blocks (label, version, size, agents, preview of the value), a page at a time."""
        page = await call(hub.list_blocks(label=label, agent=agent, limit=limit, cursor=cursor))
        return BlockList(**Paged.fields_of(page), blocks=[BlockSummary.of(b) for b in page])

    @tool(READ, "Read block")
    async def read_block(block: BlockRef, agent: ScopeAgent = None) -> Block:
        """Read a memory block: value, version, limit, description and the agents sharing it."""
        return await call(hub.read_block(block, agent=agent))

    @tool(SET, "Write block")
    async def write_block(
        block: BlockRef, value: str, expected_version: ExpectedVersion = None, agent: ScopeAgent = None
    ) -> BlockWritten:
        """Replace a block's value. Pass expected_version to fail instead of overwriting a newer write."""
        written = await call(
            hub.write_block(block, value, expected_version=expected_version, agent=agent, writer=WRITER)
        )
        return BlockWritten.of(written)

    @tool(ADD, "Append to block")
    async def append_to_block(
        block: BlockRef, text: str, expected_version: ExpectedVersion = None, agent: ScopeAgent = None
    ) -> BlockWritten:
        """Append text on a new line of a block, atomically (concurrent appends are never lost)."""
        written = await call(
            hub.append_to_block(block, text, expected_version=expected_version, agent=agent, writer=WRITER)
        )
        return BlockWritten.of(written)

    @tool(ADD, "Replace in block")
    async def replace_in_block(
        block: BlockRef,
        old: Annotated[str, Field(description="exact text to replace; must occur")],
        new: str,
        replace_all: Annotated[bool, Field(description="replace every occurrence, not just a unique one")] = False,
        expected_version: ExpectedVersion = None,
        agent: ScopeAgent = None,
    ) -> BlockWritten:
        """Replace a substring of a block atomically; it must occur (once, unless replace_all)."""
        written = await call(
            hub.replace_in_block(
                block, old, new, replace_all=replace_all, expected_version=expected_version, agent=agent,
                writer=WRITER,
            )
        )  # fmt: skip
        return BlockWritten.of(written)

    @tool(SET, "Update block settings")
    async def update_block(
        block: BlockRef,
        limit: Annotated[int | None, Field(description="new maximum characters", ge=1)] = None,
        description: Annotated[str | None, Field(description="new description")] = None,
        read_only: Annotated[bool | None, Field(description="agents may read but not edit it")] = None,
        agent: ScopeAgent = None,
    ) -> Block:
        """Change a block's limit, description or read-only flag (not its value; write_block does that)."""
        return await call(
            hub.update_block(
                block, limit=limit, description=description, read_only=read_only, agent=agent, writer=WRITER
            )
        )

    @tool(LINK, "Attach block")
    async def attach_block(agent: AgentRef, block: BlockRef) -> Block:
        """Attach a block to an agent so it appears in its core memory (labels are unique per agent)."""
        return await call(hub.attach_block(agent, block))

    @tool(DELETE, "Detach block")
    async def detach_block(agent: AgentRef, block: BlockRef) -> Block:
        """Detach a block from an agent; the block and its other attachments stay."""
        return await call(hub.detach_block(agent, block))

    @tool(DELETE, "Delete block")
    async def delete_block(block: BlockRef, agent: ScopeAgent = None) -> Deleted:
        """Delete a block and its history, detaching it from every agent."""
        gone = await call(hub.delete_block(block, agent=agent))
        agents = ", ".join(gone.agents) or "no agents"
        return Deleted(deleted=gone.id, name=gone.label, detail=f"block deleted and detached from {agents}")

    @tool(READ, "Block history")
    async def block_history(
        block: BlockRef,
        agent: ScopeAgent = None,
        limit: Limit = PAGE,
        cursor: Cursor = None,
    ) -> BlockHistory:
        """Show a block's writes, newest first (version, writer, time, old and new value), a page at a time."""
        current = await call(hub.read_block(block, agent=agent))
        page = await call(hub.block_history(current.id, limit=limit, cursor=cursor))
        return BlockHistory(
            **Paged.fields_of(page), block_id=current.id, label=current.label, current_version=current.version,
            changes=page.items,
        )  # fmt: skip

    # -- archival memory and history ---------------------------------------------------------------
    @tool(ADD, "Insert archival memory")
    async def archival_memory_insert(
        agent: AgentRef,
        content: str,
        tags: Annotated[list[str] | None, Field(description="labels to filter by")] = None,
    ) -> Passage:
        """Store a passage in an agent's archival memory (long-term, searchable)."""
        return await call(hub.archival_insert(agent, content, tags=tags))

    @tool(READ, "Search archival memory")
    async def archival_memory_search(
        agent: AgentRef,
        query: str,
        tags: list[str] | None = None,
        tag_match_mode: Literal["any", "all"] = "any",
        limit: Limit = 10,
        cursor: Cursor = None,
    ) -> PassageList:
        """Search an agent's archival memory by keywords (BM25, best first), optionally by tags, a page at a time."""
        page = await call(
            hub.archival_search(agent, query, tags=tags, tag_match=tag_match_mode, limit=limit, cursor=cursor)
        )
        return PassageList(**Paged.fields_of(page), passages=page.items)

    @tool(READ, "List archival memory")
    async def archival_memory_list(
        agent: AgentRef,
        limit: Limit = PAGE,
        cursor: Cursor = None,
    ) -> PassageList:
        """List an agent's archival passages, newest first, a page at a time."""
        page = await call(hub.archival_list(agent, limit=limit, cursor=cursor))
        return PassageList(**Paged.fields_of(page), passages=page.items)

    @tool(DELETE, "Delete archival memory")
    async def archival_memory_delete(agent: AgentRef, passage_id: str) -> Deleted:
        """Delete one passage from an agent's archival memory."""
        await call(hub.archival_delete(agent, passage_id))
        return Deleted(deleted=passage_id, name=agent, detail="passage deleted from archival memory")

    @tool(READ, "Get messages")
    async def get_messages(
        agent: AgentRef,
        limit: Limit = PAGE,
        cursor: Cursor = None,
    ) -> MessageList:
        """Get an agent's newest messages (oldest first within the page); next_cursor pages back in time."""
        page = await call(hub.get_messages(agent, limit=limit, cursor=cursor))
        return MessageList(**Paged.fields_of(page), messages=page.items)

    @tool(READ, "Search conversation")
    async def conversation_search(
        agent: AgentRef,
        query: Annotated[str | None, Field(description="keywords; omit for the newest messages")] = None,
        roles: list[Literal["user", "assistant", "tool", "system"]] | None = None,
        limit: Limit = 5,
        start_date: Annotated[str | None, Field(description="ISO date, inclusive")] = None,
        end_date: Annotated[str | None, Field(description="ISO date, inclusive")] = None,
        cursor: Cursor = None,
    ) -> MessageList:
        """Search an agent's whole message history by keywords, role and date range, a page at a time."""
        page = await call(
            hub.search_messages(agent, query, roles=roles, limit=limit, start=start_date, end=end_date, cursor=cursor)
        )
        return MessageList(**Paged.fields_of(page), messages=page.items)

    return registered
