"""The SQLite engine: one file (WAL) holding agents, blocks, history, archival and recall memory, runs.

``SQLiteStore`` implements ``Store`` over a ``Database``; ``SQLiteTx`` implements ``Tx`` over one
connection in a transaction, with the SQL of each idea in its own module (``agents``, ``blocks``,
``memory``, ``runs``, ``waits``, ``replies``, ``tool_agents``, ``metrics``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from mcp_letta.errors import StorageUnavailable
from mcp_letta.models import (
    Agent,
    Block,
    BlockChange,
    BlockSpec,
    Message,
    Metrics,
    ModelSettings,
    NewMessage,
    Page,
    Passage,
    Run,
    RunStep,
    RunUsage,
)
from mcp_letta.store.failures import migrated_while_open
from mcp_letta.store.interface import (
    AgentRecord,
    CancelOutcome,
    Change,
    ClaimOutcome,
    Edit,
    Owner,
    PromptBlock,
    RunState,
    Store,
    ToolAgent,
    Tx,
)
from mcp_letta.store.sqlite import agents, blocks, memory, metrics, replies, runs, tool_agents, waits
from mcp_letta.store.sqlite.db import Conn, Database, latest_schema_version, loads_json, schema_version

T = TypeVar("T")
log = logging.getLogger("mcp_letta.store")
SCHEMA_CHECK_S = 5.0  # how often a write first checks that no newer mcp-letta has migrated the database


def _record(row: Any) -> AgentRecord:
    return AgentRecord(
        id=row["id"],
        name=row["name"],
        system=row["system"],
        model_settings=ModelSettings.model_validate(loads_json(row["model_settings"], {})),
        metadata=loads_json(row["metadata"], {}),
    )


class SQLiteTx(Tx):
    """``Tx`` over one SQLite connection inside a transaction (see ``Tx`` for each method)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def _block_row(self, block: str, agent: str | None) -> Any:
        if agent is None:
            return blocks.resolve_block_row(self.conn, block)
        row = agents.resolve_agent_row(self.conn, agent)
        return blocks.resolve_block_row(self.conn, block, row["id"], row["name"])

    def savepoint(self) -> AbstractContextManager[None]:
        return self.conn.savepoint()

    # -- agents ------------------------------------------------------------------------------------
    def resolve_agent(self, agent: str) -> AgentRecord:
        return _record(agents.resolve_agent_row(self.conn, agent))

    def agent_records(self, agent_ids: Sequence[str]) -> dict[str, AgentRecord]:
        marks = ",".join("?" * len(agent_ids))
        rows = self.conn.execute(f"SELECT * FROM agents WHERE id IN ({marks})", list(agent_ids))
        return {row["id"]: _record(row) for row in rows}

    def get_agent(self, agent: str) -> Agent:
        return agents.to_agent(self.conn, agents.resolve_agent_row(self.conn, agent))

    def create_agent(
        self, *, name: str, system: str, description: str | None, block_specs: list[BlockSpec],
        shared_blocks: list[str], tags: list[str], model_settings: ModelSettings, metadata: dict[str, Any],
        writer: str | None, tool_agents: list[str],
    ) -> Agent:  # fmt: skip
        return agents.create(
            self.conn, name=name, system=system, description=description, block_specs=block_specs,
            shared_block_refs=shared_blocks, tags=tags, model_settings=model_settings, metadata=metadata,
            writer=writer, tool_agent_refs=tool_agents,
        )  # fmt: skip

    def list_agents(
        self, *, tags: list[str], match_all_tags: bool, query: str | None, limit: int, cursor: str | None
    ) -> Page[Agent]:
        return agents.list_agents(
            self.conn, tags=tags, match_all_tags=match_all_tags, query=query, limit=limit, cursor=cursor
        )

    def agents_matching_tags(self, match_all: list[str], match_some: list[str]) -> list[AgentRecord]:
        return [_record(row) for row in agents.matching_tags(self.conn, match_all, match_some)]

    def update_agent(
        self, agent_id: str, *, name: str | None, description: str | None, system: str | None,
        tags: list[str] | None, model_settings: ModelSettings | None, metadata: dict[str, Any] | None,
    ) -> Agent:  # fmt: skip
        return agents.update(
            self.conn, agents.resolve_agent_row(self.conn, agent_id), name=name, description=description,
            system=system, tags=tags, model_settings=model_settings, metadata=metadata,
        )  # fmt: skip

    def delete_agent(self, agent_id: str) -> None:
        agents.delete(self.conn, agents.resolve_agent_row(self.conn, agent_id))

    def attach_agent_tool(self, agent_id: str, tool_agent_id: str) -> bool:
        row, tool = (agents.resolve_agent_row(self.conn, ref) for ref in (agent_id, tool_agent_id))
        return tool_agents.attach(self.conn, row, tool)

    def detach_agent_tool(self, agent_id: str, tool_agent_id: str) -> None:
        row, tool = (agents.resolve_agent_row(self.conn, ref) for ref in (agent_id, tool_agent_id))
        tool_agents.detach(self.conn, row, tool)

    def tool_agents(self, agent_ids: Sequence[str]) -> dict[str, list[ToolAgent]]:
        return tool_agents.for_runtimes(self.conn, list(agent_ids))

    # -- blocks ------------------------------------------------------------------------------------
    def create_block(self, spec: BlockSpec, *, writer: str | None, attach_to: list[str]) -> Block:
        agent_rows = [agents.resolve_agent_row(self.conn, ref) for ref in attach_to]
        block_id = blocks.insert_block(self.conn, spec, writer=writer)
        row = blocks.resolve_block_row(self.conn, block_id)
        for agent_row in agent_rows:
            blocks.attach(self.conn, agent_row["id"], agent_row["name"], row)
        return blocks.get_block(self.conn, block_id)

    def get_block(self, block: str, *, agent: str | None = None) -> Block:
        return blocks.get_block(self.conn, self._block_row(block, agent)["id"])

    def list_blocks(self, *, label: str | None, agent_id: str | None, limit: int, cursor: str | None) -> Page[Block]:
        return blocks.list_blocks(self.conn, label=label, agent_id=agent_id, limit=limit, cursor=cursor)

    def block_labels(self, agent_id: str) -> list[str]:
        rows = self.conn.execute("SELECT label FROM agent_blocks WHERE agent_id = ? ORDER BY position", (agent_id,))
        return [row[0] for row in rows]

    def edit_block(
        self, block: str, edit: Edit, *, agent: str | None = None, op: str, writer: str | None,
        expected_version: int | None = None, enforce_read_only: bool = False,
    ) -> Block:  # fmt: skip
        return blocks.edit_block(
            self.conn, self._block_row(block, agent), edit, op=op, writer=writer, expected_version=expected_version,
            enforce_read_only=enforce_read_only,
        )  # fmt: skip

    def replace_in_block(
        self, block: str, old: str, new: str, *, replace_all: bool, agent: str | None, writer: str | None,
        expected_version: int | None,
    ) -> Block:  # fmt: skip
        row = self._block_row(block, agent)
        edit = blocks.replacer(old, new, replace_all=replace_all, label=row["label"])
        return blocks.edit_block(self.conn, row, edit, op="replace", writer=writer, expected_version=expected_version)

    def update_block(
        self, block: str, *, agent: str | None, limit: int | None, description: str | None,
        read_only: bool | None, metadata: dict[str, Any] | None, writer: str | None,
    ) -> Block:  # fmt: skip
        return blocks.update_block_settings(
            self.conn, self._block_row(block, agent), limit=limit, description=description, read_only=read_only,
            metadata=metadata, writer=writer,
        )  # fmt: skip

    def attach_block(self, agent: str, block: str) -> Block:
        agent_row = agents.resolve_agent_row(self.conn, agent)
        row = blocks.resolve_block_row(self.conn, block)
        blocks.attach(self.conn, agent_row["id"], agent_row["name"], row)
        return blocks.get_block(self.conn, row["id"])

    def detach_block(self, agent: str, block: str) -> Block:
        agent_row = agents.resolve_agent_row(self.conn, agent)
        row = blocks.resolve_block_row(self.conn, block, agent_row["id"], agent_row["name"])
        blocks.detach(self.conn, agent_row["id"], agent_row["name"], row)
        return blocks.get_block(self.conn, row["id"])

    def delete_block(self, block: str, *, agent: str | None) -> Block:
        row = self._block_row(block, agent)
        snapshot = blocks.get_block(self.conn, row["id"])
        blocks.delete(self.conn, row)
        return snapshot

    def block_history(self, block: str, *, agent: str | None, limit: int, cursor: str | None) -> Page[BlockChange]:
        block_id = self._block_row(block, agent)["id"]
        return blocks.history(self.conn, block_id, limit=limit, cursor=cursor)

    def block_agents(self, block_id: str) -> list[tuple[str, str]]:
        return blocks.attached_agents(self.conn, block_id)

    def prompt_blocks(self, agent_ids: Sequence[str]) -> dict[str, list[PromptBlock]]:
        return blocks.blocks_in_prompts(self.conn, list(agent_ids))

    # -- archival and recall memory ------------------------------------------------------------------
    def insert_passage(self, agent_id: str, text: str, tags: list[str]) -> Passage:
        return memory.insert_passage(self.conn, agent_id, text, tags)

    def insert_passages(self, agent_id: str, passages: Sequence[tuple[str, list[str]]]) -> int:
        return memory.insert_passages(self.conn, agent_id, passages)

    def search_passages(
        self, agent_id: str, query: str, *, tags: list[str], tag_match: str, limit: int, cursor: str | None = None
    ) -> Page[Passage]:
        return memory.search_passages(
            self.conn, agent_id, query, tags=tags, tag_match=tag_match, limit=limit, cursor=cursor,  # type: ignore[arg-type]
        )  # fmt: skip

    def list_passages(
        self, agent_id: str, *, limit: int, cursor: str | None, oldest_first: bool = False, after_id: str | None = None
    ) -> Page[Passage]:
        return memory.list_passages(
            self.conn, agent_id, limit=limit, cursor=cursor, oldest_first=oldest_first, after_id=after_id
        )

    def delete_passage(self, agent_id: str, passage_id: str) -> None:
        memory.delete_passage(self.conn, agent_id, passage_id)

    def archival_tags(self, agent_id: str) -> list[str]:
        return memory.archival_tags(self.conn, agent_id)

    def archival_counts(self, agent_ids: Sequence[str]) -> dict[str, int]:
        return memory.archival_counts(self.conn, list(agent_ids))

    def recall_counts(self, agent_ids: Sequence[str]) -> dict[str, int]:
        return memory.counts_by_agent(self.conn, "messages", list(agent_ids), "in_context = 0")

    def append_messages(self, agent_id: str, messages: list[NewMessage]) -> list[Message]:
        return memory.append_messages(self.conn, agent_id, messages)

    def get_messages(self, agent_id: str, *, limit: int, cursor: str | None) -> Page[Message]:
        return memory.list_messages(self.conn, agent_id, limit=limit, cursor=cursor)

    def search_messages(
        self, agent_id: str, query: str | None, *, roles: list[str], limit: int, start: str | None, end: str | None,
        cursor: str | None = None,
    ) -> Page[Message]:  # fmt: skip
        return memory.search_messages(
            self.conn, agent_id, query, roles=roles, limit=limit, start=start, end=end, cursor=cursor
        )

    def in_context_messages(self, agent_id: str) -> list[Message]:
        return memory.in_context_messages(self.conn, agent_id)

    def window_fingerprints(self, agent_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        return runs.window_fingerprints(self.conn, list(agent_ids))

    def take_out_of_context(self, agent_id: str, seqs: list[int]) -> None:
        runs.take_out_of_context(self.conn, agent_id, seqs)
        self.conn.log_change("agent", agent_id)  # its memory metadata (recall count) changed

    # -- runs --------------------------------------------------------------------------------------
    def insert_run(
        self, agent: AgentRecord, text: str, *, role: str, sender: str | None, parent_run_id: str | None,
        owner: str, waited: bool = False, depth: int = 0, reply_to: str | None = None, call_id: str | None = None,
    ) -> Run:  # fmt: skip
        return runs.insert_run(
            self.conn, {"id": agent.id, "name": agent.name}, text, role=role, sender=sender,
            parent_run_id=parent_run_id, owner=owner, waited=waited, depth=depth, reply_to=reply_to,
            call_id=call_id,
        )  # fmt: skip

    def sent_run(self, parent_run_id: str, call_id: str, agent_id: str) -> Run | None:
        return runs.sent_run(self.conn, parent_run_id, call_id, agent_id)

    def get_run(self, run_id: str) -> Run:
        return runs.get_run(self.conn, run_id)

    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        marks = ",".join("?" * len(run_ids))
        rows = self.conn.execute(f"SELECT * FROM runs WHERE id IN ({marks})", list(run_ids)).fetchall()
        return runs.to_runs(self.conn, rows)

    def list_runs(
        self,
        *,
        agent_id: str | None,
        status: str | Sequence[str] | None,
        limit: int,
        cursor: str | None,
        oldest_first: bool = False,
        after_id: str | None = None,
    ) -> Page[Run]:
        return runs.list_runs(
            self.conn, agent_id=agent_id, status=status, limit=limit, cursor=cursor, oldest_first=oldest_first,
            after_id=after_id,
        )  # fmt: skip

    def claim_next(self, agent_id: str, owner: Owner) -> ClaimOutcome:
        return runs.claim_next(self.conn, agent_id, owner)

    def claim_many(self, agent_ids: Sequence[str], owner: Owner) -> list[ClaimOutcome]:
        return runs.claim_many(self.conn, list(agent_ids), owner)

    def run_state(self, run_id: str, owner: Owner) -> RunState:
        return runs.run_state(self.conn, run_id, owner)

    def add_step(self, run_id: str, step: RunStep, *, count_usage: bool = True) -> None:
        runs.add_step(self.conn, run_id, step, count_usage=count_usage)

    def finish_run(
        self, run_id: str, *, status: str, stop_reason: str, reply: str | None = None, error: str | None = None,
        expect: tuple[str, ...] = ("running",), add_usage: RunUsage | None = None, owner: Owner | None = None,
    ) -> Run | None:  # fmt: skip
        ended = runs.finish_run(
            self.conn, run_id, status=status, reply=reply, error=error, stop_reason=stop_reason, expect=expect,
            add_usage=add_usage, owner=None if owner is None else owner.id,
        )  # fmt: skip
        return None if ended is None else runs.run_of(ended, [])

    def cancel_with_waited(self, run_id: str) -> list[tuple[str, CancelOutcome]]:
        return runs.cancel_with_waited(self.conn, run_id)

    def check_wait(self, parent_run_id: str, target: AgentRecord, max_depth: int) -> int:
        return waits.check_wait(self.conn, parent_run_id, {"id": target.id, "name": target.name}, max_depth)

    def stop_waiting(self, run_id: str, *, reply_to: str | None) -> bool:
        return waits.stop_waiting(self.conn, run_id, reply_to=reply_to)

    def heartbeat(self, owner: Owner, executing: Sequence[str]) -> None:
        runs.heartbeat(self.conn, owner, executing)

    def schema_version(self) -> int:
        return schema_version(self.conn)

    def server_time(self) -> float | None:
        return None  # one machine's processes share a file, and its clock

    def recover(self, owner: Owner) -> list[str]:
        return runs.recover(self.conn, owner)

    def forget_process(self, owner: Owner) -> None:
        runs.forget_process(self.conn, owner)

    def announce_waiting(self, agent_ids: Sequence[str]) -> None:
        for agent_id in agent_ids:
            self.conn.log_change("queued", agent_id)

    def startable_agents(self, limit: int, besides: Sequence[str] = ()) -> list[str]:
        return runs.startable_agents(self.conn, limit, besides)

    # -- host inbox and monitoring ---------------------------------------------------------------------
    def unread_replies(self, limit: int) -> list[str]:
        return replies.unread_ids(self.conn, limit)

    def mark_read(self, run_ids: list[str]) -> None:
        replies.mark_read(self.conn, run_ids)

    def unread_count(self) -> int:
        return replies.unread_count(self.conn)

    def metrics(self, *, agent_id: str | None, since: datetime | None) -> Metrics:
        return metrics.compute(self.conn, agent_id=agent_id, since=since)


class SQLiteStore(Store):
    """``Store`` over one SQLite file; other processes' commits are noticed by polling ``PRAGMA data_version``
    every ``watch_interval_s``."""

    tx_class: type[SQLiteTx] = SQLiteTx  # what a transaction's ``fn`` is given (the PostgreSQL engine's extends it)
    shares_queue = False  # a run is started by the process that stored it (processes on one file are one user's)

    def __init__(self, path: Path | str, *, watch_interval_s: float = 0.2) -> None:
        self._use(Database(path), watch_interval_s)

    def _use(self, db: Any, watch_interval_s: float) -> None:
        self.db = db
        self.origin = db.origin
        self.watch_interval_s = watch_interval_s
        self.refusal: StorageUnavailable | None = None
        self._schema_checked = time.monotonic()

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self.db.open)  # (it refuses a database from a newer mcp-letta)
        self._schema_checked = time.monotonic()

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.db.close)

    async def read(self, fn: Callable[[Tx], T]) -> T:
        if self.refusal is not None:
            raise self.refusal
        return await self.db.read(lambda conn: fn(self.tx_class(conn)))

    async def write(self, fn: Callable[[Tx], T]) -> T:
        if self.refusal is not None:
            raise self.refusal
        if time.monotonic() - self._schema_checked < SCHEMA_CHECK_S:
            return await self.db.write(lambda conn: fn(self.tx_class(conn)))
        self._schema_checked = time.monotonic()

        def checked(tx: Tx) -> T:
            found, known = tx.schema_version(), self.latest_schema_version()
            if found > known:  # before this write writes anything
                self.refusal = self.migrated_while_open(found, known)
                log.error("%s", self.refusal)
                raise self.refusal
            return fn(tx)

        return await self.db.write(lambda conn: checked(self.tx_class(conn)))

    def latest_schema_version(self) -> int:
        """The newest migration this mcp-letta ships for this engine."""
        return latest_schema_version()

    def migrated_while_open(self, found: int, known: int) -> StorageUnavailable:
        """The refusal once a newer mcp-letta has migrated the database to ``found``."""
        return migrated_while_open(str(self.db.path), found, known)

    def add_listener(self, listener: Callable[[list[Change]], None]) -> None:
        def on_commit(changes: list[tuple[str, str]], local: bool) -> None:
            if self.refusal is None:  # (once refused, nothing here acts on changes)
                listener([Change(kind, ref, local) for kind, ref in changes])

        self.db.add_listener(on_commit)

    async def follow_changes(self) -> None:
        await self.db.follow(self.watch_interval_s)

    @property
    def feed_trouble(self) -> str | None:
        return self.db.feed_trouble  # type: ignore[no-any-return]


__all__ = ["SQLiteStore", "SQLiteTx"]
