"""The memory half of ``AgentHub``: memory blocks (shared, versioned, atomic edits), archival memory,
recall (message history) and the core-memory view exactly as an agent's prompt shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mcp_letta.errors import Invalid
from mcp_letta.models import Block, BlockChange, BlockSpec, Message, NewMessage, Passage
from mcp_letta.runtime.context import compile_system
from mcp_letta.runtime.requests import memory_of
from mcp_letta.store import agents as agent_sql
from mcp_letta.store import blocks as block_sql
from mcp_letta.store import memory as memory_sql
from mcp_letta.store.db import Conn, Database


class MemoryHub:
    """Blocks, archival and recall memory for ``AgentHub`` (which provides ``db``)."""

    db: Database

    # -- blocks ------------------------------------------------------------------------------------
    def _block_row(self, conn: Conn, block: str, agent: str | None) -> Any:
        if agent is None:
            return block_sql.resolve_block_row(conn, block)
        agent_row = agent_sql.resolve_agent_row(conn, agent)
        return block_sql.resolve_block_row(conn, block, agent_row["id"], agent_row["name"])

    async def create_block(
        self,
        label: str,
        value: str = "",
        *,
        limit: int = 5000,
        description: str | None = None,
        read_only: bool = False,
        metadata: dict[str, Any] | None = None,
        attach_to: Sequence[str] = (),
        writer: str | None = "api",
    ) -> Block:
        """Create a block (shareable between agents), optionally attaching it to agents right away."""
        spec = BlockSpec(
            label=label, value=value, limit=limit, description=description, read_only=read_only,
            metadata=dict(metadata or {}),
        )  # fmt: skip

        def create(conn: Conn) -> Block:
            agent_rows = [agent_sql.resolve_agent_row(conn, a) for a in attach_to]
            block_id = block_sql.insert_block(conn, spec, writer=writer)
            row = conn.execute("SELECT * FROM blocks WHERE id = ?", (block_id,)).fetchone()
            for agent_row in agent_rows:
                block_sql.attach(conn, agent_row["id"], agent_row["name"], row)
            return block_sql.get_block(conn, block_id)

        return await self.db.write(create)

    async def read_block(self, block: str, *, agent: str | None = None) -> Block:
        """A block by id or label (a label is resolved within ``agent`` when given)."""
        return await self.db.read(lambda c: block_sql.get_block(c, self._block_row(c, block, agent)["id"]))

    async def list_blocks(self, *, label: str | None = None, agent: str | None = None) -> list[Block]:
        """Blocks, optionally only those with ``label`` and/or attached to ``agent``."""

        def query(conn: Conn) -> list[Block]:
            agent_id = None if agent is None else agent_sql.resolve_agent_row(conn, agent)["id"]
            return block_sql.list_blocks(conn, label=label, agent_id=agent_id)

        return await self.db.read(query)

    async def _edit(
        self,
        block: str,
        agent: str | None,
        edit: block_sql.Edit,
        *,
        op: str,
        writer: str | None,
        expected_version: int | None,
        enforce_read_only: bool = False,
    ) -> Block:
        def apply(conn: Conn) -> Block:
            row = self._block_row(conn, block, agent)
            return block_sql.edit_block(
                conn, row, edit, op=op, writer=writer, expected_version=expected_version,
                enforce_read_only=enforce_read_only,
            )  # fmt: skip

        return await self.db.write(apply)

    async def write_block(
        self,
        block: str,
        value: str,
        *,
        expected_version: int | None = None,
        agent: str | None = None,
        writer: str | None = "api",
    ) -> Block:
        """Replace a block's value. With ``expected_version`` the write fails if someone wrote first."""
        if not isinstance(value, str):
            raise Invalid("value must be a string")
        return await self._edit(
            block, agent, lambda _old: value, op="write", writer=writer, expected_version=expected_version
        )

    async def append_to_block(
        self,
        block: str,
        text: str,
        *,
        expected_version: int | None = None,
        agent: str | None = None,
        writer: str | None = "api",
    ) -> Block:
        """Append ``text`` on a new line, atomically (concurrent appends never lose each other)."""
        if not isinstance(text, str) or text == "":
            raise Invalid("text to append is empty: pass the text to add")
        return await self._edit(
            block,
            agent,
            block_sql.appender(text),
            op="append",
            writer=writer,
            expected_version=expected_version,
        )

    async def replace_in_block(
        self,
        block: str,
        old: str,
        new: str,
        *,
        replace_all: bool = False,
        expected_version: int | None = None,
        agent: str | None = None,
        writer: str | None = "api",
    ) -> Block:
        """Replace the substring ``old`` (it must occur, once unless ``replace_all``) with ``new``, atomically."""

        def apply(conn: Conn) -> Block:
            row = self._block_row(conn, block, agent)
            edit = block_sql.replacer(old, new, replace_all=replace_all, label=row["label"])
            return block_sql.edit_block(conn, row, edit, op="replace", writer=writer, expected_version=expected_version)

        return await self.db.write(apply)

    async def update_block(
        self,
        block: str,
        *,
        limit: int | None = None,
        description: str | None = None,
        read_only: bool | None = None,
        metadata: dict[str, Any] | None = None,
        agent: str | None = None,
        writer: str | None = "api",
    ) -> Block:
        """Change a block's limit, description, read-only flag or metadata."""

        def apply(conn: Conn) -> Block:
            row = self._block_row(conn, block, agent)
            return block_sql.update_block_settings(
                conn, row, limit=limit, description=description, read_only=read_only, metadata=metadata,
                writer=writer,
            )  # fmt: skip

        return await self.db.write(apply)

    async def attach_block(self, agent: str, block: str) -> Block:
        """Attach a block to an agent (no-op if already attached; a clashing label is an error)."""

        def apply(conn: Conn) -> Block:
            agent_row = agent_sql.resolve_agent_row(conn, agent)
            row = block_sql.resolve_block_row(conn, block)
            block_sql.attach(conn, agent_row["id"], agent_row["name"], row)
            return block_sql.get_block(conn, row["id"])

        return await self.db.write(apply)

    async def detach_block(self, agent: str, block: str) -> Block:
        """Detach a block from an agent (the block itself stays)."""

        def apply(conn: Conn) -> Block:
            agent_row = agent_sql.resolve_agent_row(conn, agent)
            row = block_sql.resolve_block_row(conn, block, agent_row["id"], agent_row["name"])
            block_sql.detach(conn, agent_row["id"], agent_row["name"], row)
            return block_sql.get_block(conn, row["id"])

        return await self.db.write(apply)

    async def delete_block(self, block: str, *, agent: str | None = None) -> Block:
        """Delete a block everywhere (it is detached from every agent); returns what was deleted."""

        def apply(conn: Conn) -> Block:
            row = self._block_row(conn, block, agent)
            snapshot = block_sql.get_block(conn, row["id"])
            block_sql.delete(conn, row)
            return snapshot

        return await self.db.write(apply)

    async def block_history(
        self, block: str, *, agent: str | None = None, limit: int = 50, before_version: int | None = None
    ) -> list[BlockChange]:
        """The newest writes of a block, newest first: writer, time, version, old and new value."""
        return await self.db.read(
            lambda c: block_sql.history(
                c, self._block_row(c, block, agent)["id"], limit=limit, before_version=before_version
            )
        )

    async def block_agents(self, block_id: str) -> list[tuple[str, str]]:
        """``(id, name)`` of the agents a block (by exact id) is attached to; empty if none or deleted."""
        return await self.db.read(block_sql.attached_agents, block_id)

    # -- archival memory ---------------------------------------------------------------------------
    async def archival_insert(self, agent: str, text: str, tags: Sequence[str] | None = None) -> Passage:
        """Store a passage in an agent's archival memory."""
        return await self.db.write(
            lambda c: memory_sql.insert_passage(c, agent_sql.resolve_agent_row(c, agent)["id"], text, list(tags or []))
        )

    async def archival_search(
        self,
        agent: str,
        query: str,
        *,
        tags: Sequence[str] | None = None,
        tag_match: Literal["any", "all"] = "any",
        limit: int = 10,
    ) -> list[Passage]:
        """Search an agent's archival memory (FTS5 BM25, best first), optionally filtered by tags."""
        return await self.db.read(
            lambda c: memory_sql.search_passages(
                c, agent_sql.resolve_agent_row(c, agent)["id"], query, tags=list(tags or []), tag_match=tag_match,
                limit=limit,
            )
        )  # fmt: skip

    async def archival_list(self, agent: str, *, limit: int = 50, before: str | None = None) -> list[Passage]:
        """An agent's passages, newest first."""
        return await self.db.read(
            lambda c: memory_sql.list_passages(
                c, agent_sql.resolve_agent_row(c, agent)["id"], limit=limit, before=before
            )
        )

    async def archival_delete(self, agent: str, passage_id: str) -> None:
        """Delete one passage from an agent's archival memory."""
        await self.db.write(
            lambda c: memory_sql.delete_passage(c, agent_sql.resolve_agent_row(c, agent)["id"], passage_id)
        )

    # -- recall memory (message history) -----------------------------------------------------------
    async def append_messages(self, agent: str, messages: Sequence[NewMessage]) -> list[Message]:
        """Append messages to an agent's history."""
        return await self.db.write(
            lambda c: memory_sql.append_messages(c, agent_sql.resolve_agent_row(c, agent)["id"], list(messages))
        )

    async def get_messages(self, agent: str, *, limit: int = 50, before_seq: int | None = None) -> list[Message]:
        """The newest ``limit`` messages of an agent, oldest first (page back with ``before_seq``)."""
        return await self.db.read(
            lambda c: memory_sql.list_messages(
                c, agent_sql.resolve_agent_row(c, agent)["id"], limit=limit, before_seq=before_seq
            )
        )

    async def search_messages(
        self,
        agent: str,
        query: str | None = None,
        *,
        roles: Sequence[str] | None = None,
        limit: int = 5,
        start: str | None = None,
        end: str | None = None,
    ) -> list[Message]:
        """Search an agent's whole history (in context or not) by text, role and date range."""
        return await self.db.read(
            lambda c: memory_sql.search_messages(
                c, agent_sql.resolve_agent_row(c, agent)["id"], query, roles=list(roles or []), limit=limit,
                start=start, end=end,
            )
        )  # fmt: skip

    # -- core memory view --------------------------------------------------------------------------
    def _render(self, conn: Conn, agent: str) -> tuple[Any, str]:
        row = agent_sql.resolve_agent_row(conn, agent)
        return row, memory_of(conn, row["id"])

    async def core_memory(self, agent: str) -> str:
        """An agent's core memory rendered exactly as it appears in its prompt."""
        return await self.db.read(lambda c: self._render(c, agent)[1])

    async def system_prompt(self, agent: str) -> str:
        """The full system message the agent's LLM sees: system prompt plus rendered core memory."""

        def build(conn: Conn) -> str:
            row, memory = self._render(conn, agent)
            return compile_system(row["system"], memory)

        return await self.db.read(build)
