"""AgentHub: the one public API of mcp-letta (agents, blocks, archival and recall memory, changes, runs).

The MCP surface, the CLI, the examples and Python users all call this. It is async; every database
call runs on a worker thread. ``async with AgentHub(settings) as hub: ...`` This module holds the
lifecycle, the change feed, agents and runs; memory (blocks, archival, recall) is in ``hub_memory`` and
multi-agent messaging (send-and-wait, async replies, broadcast, pipelines, agents as tools, metrics) in
``hub_multiagent``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcp_letta.config import Settings
from mcp_letta.errors import Invalid
from mcp_letta.hub_memory import MemoryHub
from mcp_letta.hub_multiagent import MultiAgentHub, check_timeout
from mcp_letta.llm import LLMPool
from mcp_letta.models import (
    HUMAN_DESCRIPTION,
    PERSONA_DESCRIPTION,
    Agent,
    BlockSpec,
    ModelSettings,
    Run,
    StepEvent,
)
from mcp_letta.runtime.builtin_tools import INCLUDE_MULTI_AGENT_TOOLS, builtin_toolbox
from mcp_letta.runtime.multiagent import agent_tool_factory, multi_agent_tools
from mcp_letta.runtime.runner import Runner
from mcp_letta.runtime.scheduler import LEASE_S, Scheduler
from mcp_letta.store import agents as agent_sql
from mcp_letta.store import runs as run_sql
from mcp_letta.store.db import Conn, Database, loads_json

log = logging.getLogger("mcp_letta.hub")

RUN_FEED_BUFFER = 1_000_000

DEFAULT_SYSTEM = (
    "You are a helpful agent with persistent memory. Your core memory blocks are shown below and stay in "
    "your context; edit them with your memory tools when you learn something worth keeping. Older messages "
    "and archival memory can be searched with your search tools. Reply to the user in plain text."
)


@dataclass(frozen=True)
class Change:
    """Something changed in the store: ``kind`` is 'block', 'agent' (its memory view or tools), 'agents'
    (the list), 'run' (a run's status or steps), 'inbox' (a reply reached the host inbox, or was read:
    ``ref`` is the run id) or 'queued' (internal: a reply was queued for agent ``ref``); ``ref`` is the id."""

    kind: str
    ref: str
    local: bool = True


class AgentHub(MemoryHub, MultiAgentHub):
    """Agents, memory blocks, archival and recall memory over one SQLite file. Use as an async context."""

    def __init__(self, settings: Settings | None = None, *, db_path: Path | str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        if db_path is not None:
            self.settings = self.settings.with_overrides(db_path=Path(db_path))
        self.db = Database(self.settings.db_path)
        self._subscribers: list[MemoryObjectSendStream[Change]] = []
        self._task_group: TaskGroup | None = None
        self._opened = False
        self.llm = LLMPool(self.settings)
        self.agent_wait_s = self.settings.agent_wait_s  # an agent's tool call waits this long on other agents
        self.toolbox = builtin_toolbox(multi_agent_tools(self))
        self.toolbox.agent_tool_factory = agent_tool_factory(self, self.settings.agent_tool_template)
        self._owner = run_sql.Owner(self.db.origin, lease_s=LEASE_S)
        runner = Runner(self.db, self.llm, self.toolbox, self.settings, self._owner)
        self._scheduler = Scheduler(self.db, runner, max_concurrency=self.settings.max_concurrency)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> AgentHub:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (and migrate) the database and start following changes made by other processes."""
        if self._opened:
            return
        await anyio.to_thread.run_sync(self.db.open)
        self.db.add_listener(self._on_local_changes)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        start_id = await self.db.run_sync(self.db.last_change_id_sync)
        self._task_group.start_soon(self._follow_other_processes, start_id)
        # The scheduler must see every run change, so its feed is never allowed to drop one.
        await self._scheduler.start(self._task_group, self.subscribe_changes(buffer=RUN_FEED_BUFFER))
        self._opened = True

    async def close(self) -> None:
        """Stop background work and close the database."""
        if not self._opened:
            return
        self._opened = False
        await self._scheduler.stop()
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
            self._task_group = None
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()
        await self.llm.aclose()
        await anyio.to_thread.run_sync(self.db.close)

    # -- change feed -------------------------------------------------------------------------------
    def subscribe_changes(self, buffer: int = 1000) -> MemoryObjectReceiveStream[Change]:
        """A stream of every change, local or made by another process on the same database."""
        send, receive = anyio.create_memory_object_stream[Change](buffer)
        self._subscribers.append(send)
        return receive

    def _publish(self, changes: Sequence[Change]) -> None:
        for stream in list(self._subscribers):
            for change in dict.fromkeys(changes):  # dedupe, keep order
                try:
                    stream.send_nowait(change)
                except anyio.WouldBlock:
                    log.warning("a change subscriber is not keeping up; dropping %s", change)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._subscribers.remove(stream)
                    break

    def _on_local_changes(self, changes: list[tuple[str, str]]) -> None:
        self._publish([Change(kind, ref) for kind, ref in changes])

    async def _follow_other_processes(self, last_id: int) -> None:
        interval = self.settings.watch_interval_s
        version = await self.db.run_sync(self.db.data_version_sync)
        polls = 0
        while True:
            await anyio.sleep(interval)
            polls += 1
            try:
                current = await self.db.run_sync(self.db.data_version_sync)
                if current != version:
                    version = current
                    last_id, foreign = await self.db.run_sync(partial(self.db.foreign_changes_sync, last_id))
                    if foreign:
                        self._publish([Change(kind, ref, local=False) for kind, ref in foreign])
                if polls % max(1, int(300 / max(interval, 0.01))) == 0:
                    await self.db.run_sync(self.db.prune_changes_sync)
            except Exception:  # a follower must survive a transient error (busy file, disk hiccup)
                log.exception("following other processes' changes failed; retrying")

    # -- agents ------------------------------------------------------------------------------------
    async def create_agent(
        self,
        name: str,
        *,
        system: str | None = None,
        description: str | None = None,
        persona: str = "",
        human: str = "",
        blocks: Sequence[BlockSpec | dict[str, Any]] = (),
        shared_blocks: Sequence[str] = (),
        tags: Sequence[str] = (),
        model_settings: ModelSettings | dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        writer: str | None = "api",
        agent_tools: Sequence[str] = (),
        include_multi_agent_tools: bool = False,
    ) -> Agent:
        """Create an agent with ``persona`` and ``human`` blocks, extra ``blocks`` and existing ``shared_blocks``.

        ``agent_tools`` are existing agents it may call as tools (``ask_<name>``; see ``attach_agent_tool``).
        ``include_multi_agent_tools`` (Letta's flag, kept in its metadata) offers it Letta's messaging tools:
        send_message_to_agent_and_wait_for_reply, send_message_to_agent_async,
        send_message_to_agents_matching_tags and send_message_to_agents_matching_all_tags.
        """
        specs = [
            BlockSpec(label="persona", value=persona, description=PERSONA_DESCRIPTION),
            BlockSpec(label="human", value=human, description=HUMAN_DESCRIPTION),
        ]
        specs += [b if isinstance(b, BlockSpec) else BlockSpec.model_validate(b) for b in blocks]
        settings = (
            model_settings
            if isinstance(model_settings, ModelSettings)
            else ModelSettings.model_validate(model_settings or {})
        )
        if system is not None and not system.strip():
            raise Invalid("system prompt cannot be empty: omit it to use the default")
        if isinstance(agent_tools, str):
            raise Invalid("agent_tools must be a list of agent names or ids, not one string")
        metadata = dict(metadata or {})
        if include_multi_agent_tools:
            metadata[INCLUDE_MULTI_AGENT_TOOLS] = True

        def create(conn: Conn) -> Agent:
            created = agent_sql.create(
                conn,
                name=name,
                system=system or DEFAULT_SYSTEM,
                description=description,
                block_specs=specs,
                shared_block_refs=list(shared_blocks),
                tags=list(tags),
                model_settings=settings,
                metadata=metadata,
                writer=writer,
                tool_agent_refs=list(agent_tools),
            )
            return self._check_tool_names(created)

        return await self.db.write(create)

    async def get_agent(self, agent: str) -> Agent:
        """An agent by id or name, with its blocks."""
        return await self.db.read(lambda c: agent_sql.to_agent(c, agent_sql.resolve_agent_row(c, agent)))

    async def list_agents(
        self,
        *,
        tags: Sequence[str] | None = None,
        match_all_tags: bool = False,
        query: str | None = None,
        limit: int | None = None,
    ) -> list[Agent]:
        """Agents sorted by name, filtered by tags (any, or all with ``match_all_tags``) and a text query."""
        return await self.db.read(
            agent_sql.list_agents,
            tags=list(tags or []),
            match_all_tags=match_all_tags,
            query=query,
            limit=limit,
        )

    async def update_agent(
        self,
        agent: str,
        *,
        name: str | None = None,
        description: str | None = None,
        system: str | None = None,
        tags: Sequence[str] | None = None,
        model_settings: ModelSettings | dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        include_multi_agent_tools: bool | None = None,
    ) -> Agent:
        """Change the given fields of an agent; ``None`` leaves a field unchanged.

        ``include_multi_agent_tools`` offers (True) or withdraws (False) Letta's messaging tools.
        """
        settings = (
            None
            if model_settings is None
            else model_settings
            if isinstance(model_settings, ModelSettings)
            else ModelSettings.model_validate(model_settings)
        )

        def update(conn: Conn) -> Agent:
            row = agent_sql.resolve_agent_row(conn, agent)
            new_metadata = metadata
            if include_multi_agent_tools is not None:
                new_metadata = dict(loads_json(row["metadata"], {}) if metadata is None else metadata)
                new_metadata.pop(INCLUDE_MULTI_AGENT_TOOLS, None)
                if include_multi_agent_tools:
                    new_metadata[INCLUDE_MULTI_AGENT_TOOLS] = True
            return agent_sql.update(
                conn,
                row,
                name=name,
                description=description,
                system=system,
                tags=None if tags is None else list(tags),
                model_settings=settings,
                metadata=new_metadata,
            )

        return await self.db.write(update)

    async def delete_agent(self, agent: str) -> Agent:
        """Delete an agent, its history, passages and the blocks only it used; returns what was deleted."""

        def delete(conn: Conn) -> Agent:
            row = agent_sql.resolve_agent_row(conn, agent)
            snapshot = agent_sql.to_agent(conn, row)
            agent_sql.delete(conn, row)
            return snapshot

        return await self.db.write(delete)

    # == runs and messaging ========================================================================
    # Sending a message persists a queued Run first; the scheduler executes it (FIFO and one at a time per
    # agent, across processes; agents in parallel up to max_concurrency). Waiting is bounded: when the
    # bound passes the caller gets the run as it is, and the run goes on.

    async def send_message(
        self,
        agent: str,
        message: str,
        *,
        sender: str | None = None,
        role: Literal["user", "system"] = "user",
        parent_run_id: str | None = None,
        wait_s: float | None = None,
        on_step: Callable[[StepEvent], Awaitable[None]] | None = None,
        cancel_on_abort: bool = False,
    ) -> Run:
        """Send a message to an agent: persist a queued run, then wait up to ``wait_s`` seconds for it.

        Returns the finished run, or (``wait_s`` passed, or ``None``: return at once) the run as it is then,
        e.g. "queued" or "running"; fetch it later with ``get_run``. ``sender`` is who sent it (``None``
        for the host/API, else e.g. an agent id) and ``parent_run_id`` the run it was sent from.
        ``on_step`` is awaited after each step, while this call waits (for the whole run if ``wait_s`` is
        ``None``). With ``cancel_on_abort``, cancelling this call (e.g. the client went away) cancels the run.
        """
        owner = self._owner.id

        def create(conn: Conn) -> Run:
            row = agent_sql.resolve_agent_row(conn, agent)
            return run_sql.insert_run(
                conn, row, message, role=role, sender=sender, parent_run_id=parent_run_id, owner=owner
            )

        if wait_s is not None:
            wait_s = check_timeout(wait_s)
        run = await self._scheduler.submit(create, on_step)
        if wait_s is None:
            return run
        return await self._await_run(run, wait_s, on_step=on_step, cancel_on_abort=cancel_on_abort)

    async def _await_run(
        self,
        run: Run,
        wait_s: float,
        *,
        on_step: Callable[[StepEvent], Awaitable[None]] | None,
        cancel_on_abort: bool,
    ) -> Run:
        """Wait up to ``wait_s`` for a submitted run; the run as it is then. Stops its ``on_step`` listener."""
        try:
            return await self._scheduler.wait(run.id, wait_s, current=run)
        except anyio.get_cancelled_exc_class():
            if cancel_on_abort:
                with anyio.CancelScope(shield=True):
                    await self._scheduler.cancel(run.id)
            raise
        finally:
            if on_step is not None:
                self._scheduler.remove_listener(run.id, on_step)

    async def get_run(self, run_id: str, *, wait_s: float = 0) -> Run:
        """A run by id; with ``wait_s`` > 0, waits up to that long for it to finish (never raises on time)."""
        if wait_s and wait_s > 0:
            return await self._scheduler.wait(run_id, wait_s)
        return await self._scheduler.get(run_id)

    async def wait_run(self, run_id: str, timeout_s: float | None = None) -> Run:
        """The run once finished; raises ``Timeout`` if ``timeout_s`` seconds pass first (the run goes on)."""
        return await self._scheduler.wait_done(run_id, timeout_s)

    async def list_runs(self, agent: str | None = None, status: str | None = None, limit: int = 50) -> list[Run]:
        """Runs, newest first, optionally of one agent and/or in one status."""

        def query(conn: Conn) -> list[Run]:
            agent_id = None if agent is None else agent_sql.resolve_agent_row(conn, agent)["id"]
            return run_sql.list_runs(conn, agent_id=agent_id, status=status, limit=limit)

        return await self.db.read(query)

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel a run: a queued one at once, a running one (here or in another process) at its next step."""
        return await self._scheduler.cancel(run_id)
