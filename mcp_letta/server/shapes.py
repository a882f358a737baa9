"""Output models of the MCP tools that are not plain hub models: lists, summaries, deletion receipts.

Hosts pay for every token a tool returns, so listings are summaries in pages; ``get_agent``/``read_block``
return the full records. Every listing and search has the same paging fields (``Paged``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mcp_letta.models import Agent, Block, BlockChange, Message, Page, Passage

PREVIEW_CHARS = 200


class Paged(BaseModel):
    """The paging fields of every listing and search result."""

    count: int = Field(description="items in this page")
    more: int = Field(description="how many more match after this page")
    next_cursor: str | None = Field(
        default=None, description="pass as cursor (with the same filters) for the next page; null at the end"
    )

    @staticmethod
    def fields_of(page: Page[Any]) -> dict[str, Any]:
        """The paging fields of a hub page."""
        return {"count": len(page), "more": page.more, "next_cursor": page.next_cursor}


class AgentSummary(BaseModel):
    """An agent in a listing: enough to pick one and call it."""

    id: str
    name: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    blocks: list[str] = Field(default_factory=list, description="labels of its memory blocks")

    @classmethod
    def of(cls, agent: Agent) -> AgentSummary:
        """Summarise an agent."""
        return cls(
            id=agent.id,
            name=agent.name,
            description=agent.description,
            tags=agent.tags,
            blocks=[b.label for b in agent.blocks],
        )


class AgentList(Paged):
    """A page of the agents matching a listing's filters, sorted by name."""

    agents: list[AgentSummary]


class BlockSummary(BaseModel):
    """A block in a listing: its value is cut to a preview (read_block gives all of it)."""

    id: str
    label: str
    version: int
    chars: int
    limit: int
    read_only: bool
    description: str | None = None
    agents: list[str] = Field(default_factory=list)
    preview: str

    @classmethod
    def of(cls, block: Block) -> BlockSummary:
        """Summarise a block."""
        preview = block.value if len(block.value) <= PREVIEW_CHARS else block.value[:PREVIEW_CHARS] + "…"
        return cls(
            id=block.id,
            label=block.label,
            version=block.version,
            chars=len(block.value),
            limit=block.limit,
            read_only=block.read_only,
            description=block.description,
            agents=block.agents,
            preview=preview,
        )


class BlockWritten(BaseModel):
    """A block right after a write: its new value and version (read_block gives every field)."""

    id: str
    label: str
    version: int
    value: str
    chars: int
    limit: int
    agents: list[str]

    @classmethod
    def of(cls, block: Block) -> BlockWritten:
        """The post-write view of a block."""
        return cls(
            id=block.id,
            label=block.label,
            version=block.version,
            value=block.value,
            chars=len(block.value),
            limit=block.limit,
            agents=block.agents,
        )


class BlockList(Paged):
    """A page of the blocks matching a listing's filters."""

    blocks: list[BlockSummary]


class Deleted(BaseModel):
    """What a delete removed."""

    deleted: str = Field(description="id of the deleted record")
    name: str = Field(description="its name or label")
    detail: str


class BlockHistory(Paged):
    """A page of a block's writes, newest first."""

    block_id: str
    label: str
    current_version: int
    changes: list[BlockChange]


class PassageList(Paged):
    """A page of archival passages, best match first for searches."""

    passages: list[Passage]


class MessageList(Paged):
    """A page of an agent's messages."""

    messages: list[Message]


class ToolCallOutcome(BaseModel):
    """One tool the agent called during a run, and whether it succeeded."""

    name: str
    ok: bool


class AgentReply(BaseModel):
    """The outcome of a message to an agent: its reply, or ``pending`` with a run id to fetch later."""

    agent: str
    run_id: str
    status: str = Field(description="completed, failed, cancelled, interrupted, or pending (still running)")
    reply: str | None = None
    error: str | None = None
    stop_reason: str | None = None
    steps: int = 0
    tool_calls: list[ToolCallOutcome] = Field(default_factory=list)
    usage: dict[str, int] = Field(default_factory=dict)
