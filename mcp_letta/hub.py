"""AgentHub: the one public API of mcp-letta. Agents, memory (blocks, archival, recall), runs and messaging
between agents (send-and-wait, async replies, tag broadcast, pipelines, agents as tools), metrics.

The MCP surface, the CLI, the examples and Python users all call this; ``async with AgentHub(settings) as
hub: ...``. Every path is the same for the host and for an agent, whose messaging tools call these with
``sender`` and its current run as ``parent_run_id``: a synchronous wait by an agent is checked against the
wait-for graph before anything is stored, lends its concurrency slot while it waits, and ends within a
bound, after which the run goes on and its reply is routed to the waiting agent as a new message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ValidationError

from mcp_letta.config import Settings, db_target
from mcp_letta.errors import Invalid, LettaError, validation_problems
from mcp_letta.llm import LLMPool
from mcp_letta.llm.sampling import HostModels, Sampler
from mcp_letta.models import (
    DEFAULT_BLOCK_LIMIT,
    HUMAN_DESCRIPTION,
    PERSONA_DESCRIPTION,
    Agent,
    Block,
    BlockChange,
    BlockSpec,
    BroadcastResult,
    ContextWindow,
    Message,
    Metrics,
    ModelSettings,
    NewMessage,
    Page,
    Passage,
    PipelineResult,
    Run,
    StageResult,
    StepEvent,
)
from mcp_letta.runtime.context import (
    CHARS_PER_TOKEN,
    DEFAULT_CONTEXT_WINDOW,
    SUMMARIZE_AT,
    SUMMARY_SENDER,
    compile_system,
    context_order,
    fixed_tokens,
    memory_of,
    message_tokens,
    tools_json,
)
from mcp_letta.runtime.memory_tools import INCLUDE_MULTI_AGENT_TOOLS, builtin_toolbox
from mcp_letta.runtime.messaging_tools import agent_tool_factory, multi_agent_tools
from mcp_letta.runtime.runner import Runner
from mcp_letta.runtime.scheduler import LEASE_S, Scheduler
from mcp_letta.store import HOST, Change, Owner, Store, ToolAgent, Tx, appender, open_store
from mcp_letta.store.limits import (
    MAX_PAGE,
    MAX_SYSTEM,
    MAX_TEXT,
    check_flag,
    check_list,
    check_mapping,
    check_page,
    check_text,
    check_version,
    shown,
)

log = logging.getLogger("mcp_letta.hub")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

OnStep = Callable[[StepEvent], Awaitable[None]]
OnResult = Callable[[BroadcastResult], Awaitable[None]]
OnStage = Callable[[StageResult], Awaitable[None]]

_DEFAULT_SYSTEM_REST = (
    "a helpful agent with persistent memory. Your core memory blocks are shown below and stay in your "
    "context. The 'persona' block says who you are and how you behave. The 'human' block holds facts about the "
    "user: when the user tells you something about themselves (their name, where they live, what they like), "
    "save it in 'human' with memory_insert before you answer. Your memory blocks are always in view: when they "
    "hold the answer, use it without searching. Keep other facts worth remembering with archival_memory_insert, "
    "and look up what your memory blocks do not hold with archival_memory_search and conversation_search. If "
    "you have tools to ask other agents, ask the agent who knows instead of searching or guessing. Once you "
    "know the answer, reply to the user in plain text."
)


def default_system(name: str) -> str:
    """The system prompt of an agent created without one.

    It names the agent in its first words. Besides telling the agent who it is among others, that makes each
    agent's prompt differ from the first tokens on: a llama.cpp server gives a request the idle slot whose
    cached prompt shares the largest part of it, so with a common opening an agent's first request would take
    the slot of the agent waiting for its answer, which would then compute its whole prompt again
    (``python -m bench models`` measures the cached share).
    """
    return f"You are '{name}', {_DEFAULT_SYSTEM_REST}"


WILL_BE_DELIVERED = "your response will be delivered to the sender"
MAX_TOOL_NAME = 64  # OpenAI-compatible APIs refuse longer function names
MAX_WAIT_S = 86_400  # a day: longer waits are surely mistakes, and huge ones overflow the clock
# A broadcast stores and starts its recipients this many per transaction, so the first requests leave while
# the next batch is stored (one transaction for 100 recipients holds every request back until all are stored;
# python -m bench multiagent measures the choice).
BROADCAST_BATCH = 25
PAGE = 20  # the default page size of every listing: a host pays for each item in its context


def incoming(sender_id: str, message: str) -> str:
    """Letta's wrapper for a message from another agent (delivered with role "system")."""
    return f"[Incoming message from agent with ID '{sender_id}' - {WILL_BE_DELIVERED}] {message}"


def input_of(message: str, sender_id: str | None) -> tuple[str, str]:
    """The role and text a message arrives with: as sent, from the host; in Letta's wrapper, from an agent."""
    return ("user", message) if sender_id is None else ("system", incoming(sender_id, message))


def latency_ms(run: Run) -> float | None:
    """From sending to the reply, in milliseconds; None while the run is unfinished."""
    if run.finished_at is None:
        return None
    return round((run.finished_at - run.created_at).total_seconds() * 1000, 3)


def outcome(run: Run) -> dict[str, Any]:
    """The fields a broadcast or pipeline result takes from a run (``pending`` while it is unfinished)."""
    return {
        "run_id": run.id,
        "status": run.status if run.done else "pending",
        "reply": run.reply,
        "error": run.error,
        "latency_ms": latency_ms(run),
    }


def check_message(message: str) -> None:
    """A message to an agent: non-empty text of at most ``MAX_TEXT`` characters."""
    if not isinstance(message, str) or not message.strip():
        raise Invalid("the message is empty: pass the text to send to the agent")
    check_text(message, "the message", MAX_TEXT)


def check_wait_s(wait_s: float) -> float:
    """A wait in seconds: from 0 to a day (huge values would overflow the clock)."""
    if not isinstance(wait_s, int | float) or isinstance(wait_s, bool) or not 0 <= wait_s <= MAX_WAIT_S:
        raise Invalid(f"the wait must be between 0 and {MAX_WAIT_S} seconds (got {shown(wait_s)})")
    return float(wait_s)


def _model_settings(value: ModelSettings | dict[str, Any] | None) -> ModelSettings | None:
    settings = (
        value if value is None or isinstance(value, ModelSettings) else _valid(ModelSettings, value, "model_settings")
    )
    url = None if settings is None else settings.base_url
    if url is not None and not url.startswith(("http://", "https://")):  # (its runs would fail, one by one)
        raise Invalid(
            f"model_settings.base_url must be an http(s) URL, e.g. http://localhost:11434/v1, or null for the "
            f"server's endpoint (got {shown(url)})"
        )
    return settings


def _valid(model: type[M], values: object, what: str) -> M:
    """``values`` as ``model``, or ``Invalid`` naming each problem (a Python caller's argument, checked as the MCP
    tools and the REST API check theirs)."""
    if not isinstance(values, dict):
        raise Invalid(f"{what} must be a dict (got {shown(values)})")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise Invalid(f"{what}: {validation_problems(exc)}") from None


async def every_page(listing: Callable[..., Awaitable[Page[T]]], *args: Any, **filters: Any) -> list[T]:
    """Every item of one of the hub's paged listings (``hub.list_agents`` and the like), following its cursors:
    for callers that need the whole list, such as a terminal or the REST API's own paging."""
    items: list[T] = []
    cursor: str | None = None
    while True:
        page = await listing(*args, **filters, limit=MAX_PAGE, cursor=cursor)
        items += page.items
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


class AgentHub:
    """Agents, memory blocks, archival and recall memory, runs and messaging over one store. Use it as an
    async context manager (or call ``open`` and ``close``).

    ``runs_agents=False`` makes a hub that reads and edits but runs no agent: it starts, resumes and takes
    no run (on PostgreSQL, any hub that runs agents is a replica taking queued runs). The messages it sends
    wait for a process that runs agents. ``mcp-letta doctor`` and the inspection commands use one.
    """

    def __init__(
        self, settings: Settings | None = None, *, db_path: Path | str | None = None, runs_agents: bool = True
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.runs_agents = runs_agents
        if db_path is not None:
            self.settings = self.settings.with_overrides(db_path=db_target(db_path))
        self._store: Store = open_store(
            self.settings.db_path, watch_interval_s=self.settings.watch_interval_s,
            pool_size=self.settings.pg_pool_size,
        )  # fmt: skip
        self._subscribers: list[MemoryObjectSendStream[Change]] = []
        self._task_group: TaskGroup | None = None
        self._opened = False
        self._llm = LLMPool(self.settings)
        self.agent_wait_s = self.settings.agent_wait_s  # an agent's tool call waits this long on other agents
        self._toolbox = builtin_toolbox(multi_agent_tools(self))
        self._toolbox.agent_tool_factory = agent_tool_factory(self, self.settings.agent_tool_template)
        # Replicas share the queue, unless agents think with the host's model: a run must then wait where the
        # host that sent it is connected, not start on a replica whose hosts are other people's.
        shares_queue = self._store.shares_queue and not self._llm.samples()
        self._owner = Owner(self._store.origin, lease_s=LEASE_S, shares_queue=shares_queue)
        runner = Runner(self._store, self._llm, self._toolbox, self.settings, self._owner)
        self._scheduler = Scheduler(self._store, runner, max_concurrency=self.settings.max_concurrency)
        self._store.add_listener(self._publish)  # here, not in open: a hub opened again must not hear twice

    # -- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> AgentHub:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (and migrate) the store, start the scheduler and follow changes made by other processes."""
        if self._opened:
            return
        await self._store.open()
        self._llm.prepare()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._store.follow_changes)
        await self._scheduler.start(self._task_group, takes_runs=self.runs_agents)
        self._opened = True

    def stopping(self) -> None:
        """Say this process is stopping: no new run starts here, and a call waiting on a run that is then
        cancelled (its server stopping) hands the run back instead of cancelling it. ``wind_down``, ``hand_back``
        and ``close`` say it themselves; a server says it sooner where it learns first (its input closed)."""
        self._scheduler.leave()

    async def wind_down(self, grace_s: float) -> None:
        """Start no more runs in this process and give those executing here up to ``grace_s`` seconds to
        finish (a host window closing: see ``Settings.shutdown_grace_s``). Call ``close`` after."""
        if self._opened:
            await self._scheduler.wind_down(grace_s)

    async def hand_back(self) -> None:
        """Hand the runs executing here back to the queue now, and answer the calls waiting on runs here with
        each run as it is then (``pending``, to fetch later with ``get_run``): a server about to stop answers
        its clients before their connections close. Nothing starts here after; the store stays open for the
        answers. Call ``close`` after."""
        if self._opened:
            await self._scheduler.stop()

    async def close(self) -> None:
        """Stop background work and close the store. Runs still executing here go back to the queue and
        the next process on the same store resumes them from their last committed step."""
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
        await self._llm.aclose()
        await self._store.close()

    # -- change feed -------------------------------------------------------------------------------
    def subscribe_changes(self, buffer: int = 1000) -> MemoryObjectReceiveStream[Change]:
        """A stream of every change, local or made by another process on the same store."""
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

    # == agents ====================================================================================
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
        default_limit: int = DEFAULT_BLOCK_LIMIT,
    ) -> Agent:
        """Create an agent with ``persona`` and ``human`` blocks, extra ``blocks`` and existing ``shared_blocks``.

        A ``persona`` or ``human`` block in ``blocks`` (Letta's ``memory_blocks``) or in ``shared_blocks`` takes the
        place of the default one; ``default_limit`` is the character limit of the default ones.

        ``agent_tools`` are existing agents it may call as tools (``ask_<name>``; see ``attach_agent_tool``).
        ``include_multi_agent_tools`` (Letta's flag, kept in its metadata) offers it Letta's messaging tools:
        send_message_to_agent_and_wait_for_reply, send_message_to_agent_async,
        send_message_to_agents_matching_tags and send_message_to_agents_matching_all_tags.
        """
        extra = [
            b if isinstance(b, BlockSpec) else _valid(BlockSpec, b, "a block")
            for b in check_list(blocks, "blocks", {"label": "notes"})
        ]
        defaults = [
            _valid(
                BlockSpec,
                {
                    "label": label,
                    "value": check_text(value, label, MAX_TEXT),
                    "description": about,
                    "limit": default_limit,
                },
                f"block {label!r}",
            )
            for label, value, about in (("persona", persona, PERSONA_DESCRIPTION), ("human", human, HUMAN_DESCRIPTION))
        ]
        settings = _model_settings(model_settings) or ModelSettings()
        if system is not None and not check_text(system, "system prompt", MAX_SYSTEM).strip():
            raise Invalid("system prompt cannot be empty: omit it to use the default")
        shared = check_list(shared_blocks, "shared_blocks", "team-notes")
        tag_list = check_list(tags, "tags", "research")
        tool_agents = check_list(agent_tools, "agent_tools", "researcher")
        metadata = check_mapping(metadata, "metadata")
        if check_flag(include_multi_agent_tools, "include_multi_agent_tools"):
            metadata[INCLUDE_MULTI_AGENT_TOOLS] = True

        def create(tx: Tx) -> Agent:
            given = {spec.label for spec in extra} | {tx.get_block(ref).label for ref in shared}
            for default in defaults:  # a block given under its label takes its place; a text given too would be lost
                if default.value and default.label in given:
                    raise Invalid(f"{default.label} is given twice, as {default.label}= and as a block: give it once")
            specs = [spec for spec in defaults if spec.label not in given] + extra
            created = tx.create_agent(
                name=name, system=system or default_system(name), description=description, block_specs=specs,
                shared_blocks=shared, tags=tag_list, model_settings=settings, metadata=metadata,
                writer=writer, tool_agents=tool_agents,
            )  # fmt: skip
            return self._check_tool_names(created)

        return await self._store.write(create)

    async def get_agent(self, agent: str) -> Agent:
        """An agent by id or name, with its blocks."""
        return await self._store.read(lambda tx: tx.get_agent(agent))

    async def list_agents(
        self,
        *,
        tags: Sequence[str] | None = None,
        match_all_tags: bool = False,
        query: str | None = None,
        limit: int = PAGE,
        cursor: str | None = None,
    ) -> Page[Agent]:
        """A page of agents sorted by name, filtered by tags (any, or all with ``match_all_tags``) and a text
        query. Pass the page's ``next_cursor`` as ``cursor`` (with the same filters) for the next one;
        ``more`` says how many follow."""
        tag_list = check_list(tags, "tags", "research")
        return await self._store.read(
            lambda tx: tx.list_agents(
                tags=tag_list, match_all_tags=match_all_tags, query=query, limit=limit, cursor=cursor
            )
        )

    def feed_trouble(self) -> str | None:
        """Why this process cannot hear other processes' changes right now (it keeps trying), or None: its
        clients then miss notifications, and waits on runs elsewhere rely on the heartbeat's reads."""
        return self._store.feed_trouble

    async def count_agents(self) -> int:
        """How many agents there are."""
        page = await self.list_agents(limit=1)
        return len(page) + page.more

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
        """Change the given fields of an agent; ``None`` leaves a field unchanged. ``model_settings`` changes the
        settings it names and keeps the others (``{"temperature": 0.5}`` keeps the model).

        ``include_multi_agent_tools`` offers (True) or withdraws (False) Letta's messaging tools.
        """
        settings = _model_settings(model_settings)
        tag_list = None if tags is None else check_list(tags, "tags", "research")
        if system is not None:
            check_text(system, "system prompt", MAX_SYSTEM)  # (the store refuses an empty one)
        if metadata is not None:
            metadata = check_mapping(metadata, "metadata")
        if include_multi_agent_tools is not None:
            check_flag(include_multi_agent_tools, "include_multi_agent_tools")

        def update(tx: Tx) -> Agent:
            record = tx.resolve_agent(agent)
            new_metadata = metadata
            if include_multi_agent_tools is not None:
                new_metadata = dict(record.metadata if metadata is None else metadata)
                new_metadata.pop(INCLUDE_MULTI_AGENT_TOOLS, None)
                if include_multi_agent_tools:
                    new_metadata[INCLUDE_MULTI_AGENT_TOOLS] = True
            new_system = system
            if new_system is None and name is not None and record.system == default_system(record.name):
                new_system = default_system(name)  # the default prompt names the agent: it follows a rename
            merged = None  # the fields given change, the others stay (an explicit None clears one)
            if settings is not None:
                merged = record.model_settings.model_copy(update=settings.model_dump(exclude_unset=True))
            return tx.update_agent(
                record.id, name=name, description=description, system=new_system,
                tags=tag_list, model_settings=merged, metadata=new_metadata,
            )  # fmt: skip

        return await self._store.write(update)

    async def delete_agent(self, agent: str) -> Agent:
        """Delete an agent, its history, passages and the blocks only it used; returns what was deleted. Its runs
        not yet ended end with it (failed, saying why), so no caller waits on an agent that is gone."""

        def delete(tx: Tx) -> tuple[Agent, list[Run], list[Run]]:
            snapshot = tx.get_agent(agent)
            running, ended = [], []
            cursor: str | None = None
            while True:
                page = tx.list_runs(agent_id=snapshot.id, status=["queued", "running"], limit=MAX_PAGE, cursor=cursor)
                for run in page:
                    if run.status == "running":
                        running.append(run)
                        continue
                    error = f"agent {snapshot.name!r} was deleted before this run started"
                    done = tx.finish_run(run.id, status="failed", stop_reason="error", error=error, expect=("queued",))
                    ended += [done] if done is not None else []
                if (cursor := page.next_cursor) is None:
                    break
            tx.delete_agent(snapshot.id)
            return snapshot, running, ended

        deleted, running, ended = await self._store.write(delete)
        self._scheduler.agent_deleted(running, ended)  # (before: the runs went on, the queued behind the running)
        return deleted

    # -- agents as tools ---------------------------------------------------------------------------
    def _check_tool_names(self, agent: Agent) -> Agent:
        for tool in agent.agent_tools:
            name = self.settings.agent_tool_template.replace("{name}", tool.name)
            if len(name) > MAX_TOOL_NAME:
                raise Invalid(
                    f"the tool for agent {tool.name!r} would be named {name!r}, longer than the {MAX_TOOL_NAME} "
                    "characters LLM APIs accept: give that agent a shorter name"
                )
        return agent

    async def attach_agent_tool(self, agent: str, tool_agent: str) -> Agent:
        """Attach ``tool_agent`` to ``agent``: its LLM gets ``ask_<tool_agent>(message)``, a send-and-wait.

        Attaching twice is a no-op. Stored, so every process (and the next start) offers the tool.
        """

        def attach(tx: Tx) -> Agent:
            tx.attach_agent_tool(tx.resolve_agent(agent).id, tx.resolve_agent(tool_agent).id)
            return self._check_tool_names(tx.get_agent(agent))

        return await self._store.write(attach)

    async def detach_agent_tool(self, agent: str, tool_agent: str) -> Agent:
        """Stop offering ``ask_<tool_agent>`` to ``agent`` (an error if it was not attached)."""

        def detach(tx: Tx) -> Agent:
            tx.detach_agent_tool(tx.resolve_agent(agent).id, tx.resolve_agent(tool_agent).id)
            return tx.get_agent(agent)

        return await self._store.write(detach)

    # == memory blocks ================================================================================
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
        targets = check_list(attach_to, "attach_to", "researcher")
        spec = _valid(
            BlockSpec,
            {"label": label, "value": value, "limit": limit, "description": description,
             "read_only": check_flag(read_only, "read_only"), "metadata": check_mapping(metadata, "metadata")},
            f"block {shown(label)}",
        )  # fmt: skip
        return await self._store.write(lambda tx: tx.create_block(spec, writer=writer, attach_to=targets))

    async def read_block(self, block: str, *, agent: str | None = None) -> Block:
        """A block by id or label (a label is resolved within ``agent`` when given)."""
        return await self._store.read(lambda tx: tx.get_block(block, agent=agent))

    async def list_blocks(
        self, *, label: str | None = None, agent: str | None = None, limit: int = PAGE, cursor: str | None = None
    ) -> Page[Block]:
        """A page of blocks, optionally only those with ``label`` and/or attached to ``agent`` (by label, or
        in the agent's prompt order); ``cursor`` is a previous page's ``next_cursor``."""

        def query(tx: Tx) -> Page[Block]:
            agent_id = None if agent is None else tx.resolve_agent(agent).id
            return tx.list_blocks(label=label, agent_id=agent_id, limit=limit, cursor=cursor)

        return await self._store.read(query)

    async def count_blocks(self) -> int:
        """How many blocks there are."""
        page = await self.list_blocks(limit=1)
        return len(page) + page.more

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
        check_version(expected_version)
        return await self._store.write(
            lambda tx: tx.edit_block(
                block, lambda _old: value, agent=agent, op="write", writer=writer, expected_version=expected_version
            )
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
        check_version(expected_version)
        return await self._store.write(
            lambda tx: tx.edit_block(
                block, appender(text), agent=agent, op="append", writer=writer, expected_version=expected_version
            )
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
        if not isinstance(old, str) or not isinstance(new, str):
            raise Invalid(f"old and new must be strings (got {shown(old)} and {shown(new)}): pass new='' to delete")
        check_flag(replace_all, "replace_all")
        check_version(expected_version)
        return await self._store.write(
            lambda tx: tx.replace_in_block(
                block, old, new, replace_all=replace_all, agent=agent, writer=writer,
                expected_version=expected_version,
            )
        )  # fmt: skip

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
        """Change a block's limit, description, read-only flag or metadata (not its value)."""
        if read_only is not None:
            check_flag(read_only, "read_only")
        if metadata is not None:
            metadata = check_mapping(metadata, "metadata")
        return await self._store.write(
            lambda tx: tx.update_block(
                block, agent=agent, limit=limit, description=description, read_only=read_only, metadata=metadata,
                writer=writer,
            )
        )  # fmt: skip

    async def attach_block(self, agent: str, block: str) -> Block:
        """Attach a block to an agent (no-op if already attached; a clashing label is an error)."""
        return await self._store.write(lambda tx: tx.attach_block(agent, block))

    async def detach_block(self, agent: str, block: str) -> Block:
        """Detach a block from an agent (the block itself stays)."""
        return await self._store.write(lambda tx: tx.detach_block(agent, block))

    async def delete_block(self, block: str, *, agent: str | None = None) -> Block:
        """Delete a block everywhere (it is detached from every agent); returns what was deleted."""
        return await self._store.write(lambda tx: tx.delete_block(block, agent=agent))

    async def block_history(
        self, block: str, *, agent: str | None = None, limit: int = PAGE, cursor: str | None = None
    ) -> Page[BlockChange]:
        """A page of a block's writes, newest first: writer, time, version, old and new value; ``cursor``
        (a previous page's ``next_cursor``) goes further back."""
        return await self._store.read(lambda tx: tx.block_history(block, agent=agent, limit=limit, cursor=cursor))

    async def block_agents(self, block_id: str) -> list[tuple[str, str]]:
        """``(id, name)`` of the agents a block (by exact id) is attached to; empty if none or deleted."""
        return await self._store.read(lambda tx: tx.block_agents(block_id))

    # == archival and recall memory ===================================================================
    async def archival_insert(self, agent: str, text: str, *, tags: Sequence[str] | None = None) -> Passage:
        """Store a passage in an agent's archival memory."""
        tag_list = check_list(tags, "tags", "meetings")
        return await self._store.write(lambda tx: tx.insert_passage(tx.resolve_agent(agent).id, text, tag_list))

    async def archival_search(
        self,
        agent: str,
        query: str,
        *,
        tags: Sequence[str] | None = None,
        tag_match: Literal["any", "all"] = "any",
        limit: int = 10,
        cursor: str | None = None,
    ) -> Page[Passage]:
        """A page of a search of an agent's archival memory (full-text, best first), optionally filtered by
        tags; ``cursor`` (a previous page's ``next_cursor``) gives the next best."""
        tag_list = check_list(tags, "tags", "meetings")
        return await self._store.read(
            lambda tx: tx.search_passages(
                tx.resolve_agent(agent).id, query, tags=tag_list, tag_match=tag_match, limit=limit,
                cursor=cursor,
            )
        )  # fmt: skip

    async def archival_list(
        self,
        agent: str,
        *,
        limit: int = PAGE,
        cursor: str | None = None,
        oldest_first: bool = False,
        after_id: str | None = None,
    ) -> Page[Passage]:
        """A page of an agent's passages, newest first (or ``oldest_first``); ``cursor`` (a previous page's
        ``next_cursor``) goes on, as does ``after_id``, the id of the passage the page starts after."""
        return await self._store.read(
            lambda tx: tx.list_passages(
                tx.resolve_agent(agent).id, limit=limit, cursor=cursor, oldest_first=oldest_first, after_id=after_id
            )
        )

    async def archival_delete(self, agent: str, passage_id: str) -> None:
        """Delete one passage from an agent's archival memory."""
        await self._store.write(lambda tx: tx.delete_passage(tx.resolve_agent(agent).id, passage_id))

    async def append_messages(self, agent: str, messages: Sequence[NewMessage]) -> list[Message]:
        """Append messages to an agent's history."""
        return await self._store.write(lambda tx: tx.append_messages(tx.resolve_agent(agent).id, list(messages)))

    async def get_messages(self, agent: str, *, limit: int = PAGE, cursor: str | None = None) -> Page[Message]:
        """A page of an agent's history: the newest ``limit`` messages, oldest first; ``cursor`` (a previous
        page's ``next_cursor``) pages back in time."""
        return await self._store.read(
            lambda tx: tx.get_messages(tx.resolve_agent(agent).id, limit=limit, cursor=cursor)
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
        cursor: str | None = None,
    ) -> Page[Message]:
        """A page of a search of an agent's whole history (in context or not) by text (best first; newest
        first without ``query``), role and date range; ``cursor`` is a previous page's ``next_cursor``."""
        role_list = check_list(roles, "roles", "assistant")
        return await self._store.read(
            lambda tx: tx.search_messages(
                tx.resolve_agent(agent).id, query, roles=role_list, limit=limit, start=start, end=end,
                cursor=cursor,
            )
        )  # fmt: skip

    async def reset_messages(self, agent: str) -> int:
        """Empty an agent's context window (Letta's reset-messages); the messages stay searchable in recall.
        Returns how many messages left the window."""

        def reset(tx: Tx) -> int:
            agent_id = tx.resolve_agent(agent).id
            seqs = [m.seq for m in tx.in_context_messages(agent_id)]
            if seqs:
                tx.take_out_of_context(agent_id, seqs)
            return len(seqs)

        return await self._store.write(reset)

    async def run_messages(self, run_id: str) -> list[Message]:
        """The messages a run added to its agent's history (its input, tool calls, tool results, reply),
        oldest first. Pages back through the history only as far as the run's first message."""

        def collect(tx: Tx) -> list[Message]:
            run = tx.get_run(run_id)
            found: list[Message] = []
            cursor: str | None = None
            while True:
                page = tx.get_messages(run.agent_id, limit=MAX_PAGE, cursor=cursor)  # newest first, page by page
                found = [m for m in page if m.run_id == run_id] + found
                if page.next_cursor is None or not page.items or page[0].created_at < run.created_at:
                    return found
                cursor = page.next_cursor

        return await self._store.read(collect)

    async def core_memory(self, agent: str) -> str:
        """An agent's core memory rendered exactly as it appears in its prompt."""
        return await self._store.read(lambda tx: memory_of(tx, tx.resolve_agent(agent).id))

    async def system_prompt(self, agent: str) -> str:
        """The full system message the agent's LLM sees: system prompt plus rendered core memory."""

        def build(tx: Tx) -> str:
            record = tx.resolve_agent(agent)
            return compile_system(record.system, memory_of(tx, record.id))

        return await self._store.read(build)

    async def context_window(self, agent: str) -> ContextWindow:
        """What the agent's LLM would be sent now, section by section: its system prompt, rendered core memory
        (and each block against its limit), the tool definitions, the in-context history with the summary of
        what compaction evicted, and token estimates (as the runtime makes them) against the window."""

        def view(tx: Tx) -> ContextWindow:
            record = tx.resolve_agent(agent)
            memory = memory_of(tx, record.id)
            offered = self._toolbox.tools_for(
                record.id, record.metadata, tx.tool_agents([record.id]).get(record.id, [])
            )
            history = context_order(tx.in_context_messages(record.id))
            summaries = [m.content for m in history if m.sender == SUMMARY_SENDER]
            system_tokens = len(record.system) // CHARS_PER_TOKEN
            memory_tokens = fixed_tokens(compile_system(record.system, memory)) - system_tokens
            tools_tokens = len(tools_json(offered)) // CHARS_PER_TOKEN
            messages_tokens = sum(message_tokens(m) for m in history)
            window = record.model_settings.context_window or DEFAULT_CONTEXT_WINDOW
            return ContextWindow(
                agent_id=record.id, agent_name=record.name, context_window=window,
                summarize_at=int(SUMMARIZE_AT * window), system=record.system, system_tokens=system_tokens,
                memory=memory, memory_tokens=memory_tokens, blocks=tx.get_agent(record.id).blocks,
                tools=[tool.schema() for tool in offered.values()], tools_tokens=tools_tokens, messages=history,
                messages_tokens=messages_tokens, summary="\n\n".join(summaries) or None,
                out_of_context=tx.recall_counts([record.id]).get(record.id, 0),
                total_tokens=system_tokens + memory_tokens + tools_tokens + messages_tokens,
            )  # fmt: skip

        return await self._store.read(view)

    # == runs =======================================================================================
    # Sending a message stores a queued Run first; the scheduler executes it (FIFO and one at a time per
    # agent, across processes; agents in parallel up to max_concurrency). Waiting is bounded: when the
    # bound passes the caller gets the run as it is, and the run goes on.

    @property
    def host_models(self) -> HostModels | None:
        """Which MCP host each run samples through, when agents think with the host's model (``MCP_LETTA_LLM``
        sampling, or no endpoint configured); ``None`` when they use an endpoint."""
        return self._llm.hosts if self._llm.samples() else None

    async def send_message(
        self,
        agent: str,
        message: str,
        *,
        sender: str | None = None,
        role: Literal["user", "system"] = "user",
        parent_run_id: str | None = None,
        wait_s: float | None = None,
        on_step: OnStep | None = None,
        cancel_on_abort: bool = False,
        host: Sampler | None = None,
    ) -> Run:
        """Send a message to an agent: store a queued run, then wait up to ``wait_s`` seconds for it.

        Returns the finished run, or (``wait_s`` passed, or ``None``: return at once) the run as it is then,
        e.g. "queued" or "running"; fetch it later with ``get_run``. ``sender`` is who sent it (``None``
        for the host/API, else e.g. an agent id) and ``parent_run_id`` the run it was sent from.
        ``on_step`` is awaited after each step, while this call waits (for the whole run if ``wait_s`` is
        ``None``). With ``cancel_on_abort``, cancelling this call (e.g. the client went away) cancels the run,
        unless this process is stopping (``stopping``): then the run is handed back, not cancelled.
        ``host`` is the MCP session that sent it: when agents think with the host's model, the run (and the
        runs it sends) sample through it.
        """
        owner = self._owner.id

        def create(tx: Tx) -> Run:
            record = tx.resolve_agent(agent)
            return tx.insert_run(record, message, role=role, sender=sender, parent_run_id=parent_run_id, owner=owner)

        if wait_s is not None:
            wait_s = check_wait_s(wait_s)
        run = await self._scheduler.submit(create, on_step)
        if host is not None:  # before the run's worker task first runs: no checkpoint since it was started
            self._llm.hosts.attach(run.id, host)
        if wait_s is None:
            return run
        return await self._await_run(run, wait_s, on_step=on_step, cancel_on_abort=cancel_on_abort)

    async def _await_run(self, run: Run, wait_s: float, *, on_step: OnStep | None, cancel_on_abort: bool) -> Run:
        """Wait up to ``wait_s`` for a submitted run; the run as it is then. Stops its ``on_step`` listener."""
        try:
            return await self._scheduler.wait(run.id, wait_s, current=run)
        except anyio.get_cancelled_exc_class():
            # This process stopping is not the caller going away: the run goes back to the queue, resumed by
            # the next process (another replica at once), and its reply waits for the caller in get_run.
            if cancel_on_abort and not self._scheduler.leaving:
                with anyio.CancelScope(shield=True):
                    await self._scheduler.cancel(run.id)
            raise
        finally:
            if on_step is not None:
                self._scheduler.remove_listener(run.id, on_step)

    async def get_run(self, run_id: str, *, wait_s: float = 0) -> Run:
        """A run by id; with ``wait_s`` > 0, waits up to that long for it to finish (never raises on time)."""
        if check_wait_s(wait_s) > 0:
            return await self._scheduler.wait(run_id, wait_s)
        return await self._scheduler.get(run_id)

    async def wait_run(self, run_id: str, *, wait_s: float | None = None) -> Run:
        """The run once finished; raises ``Timeout`` if ``wait_s`` seconds pass first (the run goes on)."""
        return await self._scheduler.wait_done(run_id, None if wait_s is None else check_wait_s(wait_s))

    def tool_names(self, agent: Agent) -> list[str]:
        """The names of the tools ``agent``'s LLM is offered, in the order it sees them."""
        attached = [ToolAgent(t.agent_id, t.name, description="") for t in agent.agent_tools]  # (names only)
        return list(self._toolbox.tools_for(agent.id, agent.metadata, attached))

    def known_tool_names(self) -> list[str]:
        """Every built-in tool an agent can be given (Letta's memory, search and multi-agent tools)."""
        return self._toolbox.names

    async def list_runs(
        self,
        agent: str | None = None,
        *,
        status: str | Sequence[str] | None = None,
        limit: int = PAGE,
        cursor: str | None = None,
        oldest_first: bool = False,
        after_id: str | None = None,
    ) -> Page[Run]:
        """A page of runs in the order they were sent, newest first (or ``oldest_first``), optionally of one
        agent and/or in one status (or any of several); ``cursor`` (a previous page's ``next_cursor``) goes on,
        as does ``after_id``, the id of the run the page starts after."""

        def query(tx: Tx) -> Page[Run]:
            agent_id = None if agent is None else tx.resolve_agent(agent).id
            return tx.list_runs(
                agent_id=agent_id, status=status, limit=limit, cursor=cursor, oldest_first=oldest_first,
                after_id=after_id,
            )  # fmt: skip

        return await self._store.read(query)

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel a run: a queued one at once, a running one (here or in another process) at its next step."""
        return await self._scheduler.cancel(run_id)

    # == messaging between agents =====================================================================
    async def _submit(
        self,
        agent: str,
        message: str,
        *,
        sender: str | None,
        parent_run_id: str | None,
        waited: bool,
        route_reply: bool = False,
        on_step: OnStep | None = None,
        call_id: str | None = None,
    ) -> Run:
        """Persist (after the deadlock and depth checks) and schedule one message to ``agent``."""
        check_message(message)
        creator = self._creator(agent, message, sender=sender, parent_run_id=parent_run_id, waited=waited,
                                route_reply=route_reply, call_id=call_id)  # fmt: skip
        return await self._scheduler.submit(creator, on_step)

    def _creator(
        self, agent: str, message: str, *, sender: str | None, parent_run_id: str | None, waited: bool,
        route_reply: bool = False, call_id: str | None = None,
    ) -> Callable[[Tx], Run]:  # fmt: skip
        """The function that stores one message to ``agent`` as a queued run, in a write transaction; with
        ``call_id``, the run that call of ``parent_run_id`` already sent to ``agent``, if it did."""
        owner, max_depth = self._owner.id, self.settings.max_depth

        def create(tx: Tx) -> Run:
            record = tx.resolve_agent(agent)
            if call_id is not None and parent_run_id is not None:
                sent = tx.sent_run(parent_run_id, call_id, record.id)
                if sent is not None:  # a resumed run making its call again: the message went already
                    return sent
            sender_id = None if sender is None else tx.resolve_agent(sender).id
            depth = 0
            if waited and parent_run_id is not None:
                depth = tx.check_wait(parent_run_id, record, max_depth)
            reply_to = (sender_id or HOST) if route_reply else None
            role, text = input_of(message, sender_id)
            return tx.insert_run(
                record, text, role=role, sender=sender_id, parent_run_id=parent_run_id, owner=owner,
                waited=waited and parent_run_id is not None, depth=depth, reply_to=reply_to, call_id=call_id,
            )  # fmt: skip

        return create

    async def _stop_waiting(self, runs: list[Run]) -> list[Run]:
        """The waiting run gives up on these unfinished runs: they go on, and each reply is routed to its
        sender agent as a new message. Returns them as they are now (finished meanwhile, or not)."""

        def stop(tx: Tx) -> list[Run]:
            for run in runs:
                tx.stop_waiting(run.id, reply_to=run.sender)
            return [tx.get_run(run.id) for run in runs]

        return await self._store.write(stop) if runs else []

    async def send_and_wait(
        self,
        agent: str,
        message: str,
        *,
        sender: str | None = None,
        parent_run_id: str | None = None,
        wait_s: float = 50.0,
        on_step: OnStep | None = None,
        cancel_on_abort: bool = False,
        call_id: str | None = None,
    ) -> Run:
        """Send ``message`` to ``agent`` and wait up to ``wait_s`` for the reply; the run, done or as it is.

        From the host (``sender=None``) the message arrives with role "user". From an agent it arrives with
        role "system" in Letta's wrapper, and, with ``parent_run_id`` (the agent's current run), the wait
        is refused with ``Deadlock`` if it would close a cycle of waits or nest deeper than
        ``Settings.max_depth``, before anything is stored. If ``wait_s`` passes first the run goes on;
        for an agent's run its reply is then delivered to that agent as a new message.

        ``call_id`` names the tool call of ``parent_run_id`` that sends it: made again (by the run resumed
        after its process stopped), the call finds the run it sent and waits on it instead of sending twice.
        """
        wait_s = check_wait_s(wait_s)
        run = await self._submit(agent, message, sender=sender, parent_run_id=parent_run_id, waited=True,
                                 on_step=on_step, call_id=call_id)  # fmt: skip
        async with self._scheduler.lend_slot(parent_run_id):
            run = await self._await_run(run, wait_s, on_step=on_step, cancel_on_abort=cancel_on_abort)
        if not run.done and parent_run_id is not None:
            [run] = await self._stop_waiting([run])
        return run

    async def send_async(
        self, agent: str, message: str, *, sender: str | None = None, parent_run_id: str | None = None,
        call_id: str | None = None,
    ) -> Run:  # fmt: skip
        """Send ``message`` to ``agent`` and return the queued run at once.

        When the run ends (completed, failed, cancelled or interrupted) its reply is routed: to a sending
        agent as a new incoming message that it processes in a run of its own; to the host into the host
        inbox (``check_replies``), with a ``Change("inbox", run_id)`` on the change feed. A run whose
        process stops is resumed by the next one, and its reply routed then. ``call_id``: as in
        ``send_and_wait``.
        """
        return await self._submit(agent, message, sender=sender, parent_run_id=parent_run_id, waited=False,
                                  route_reply=True, call_id=call_id)  # fmt: skip

    # -- host inbox --------------------------------------------------------------------------------
    async def check_replies(self, *, limit: int = PAGE, mark_read: bool = True) -> Page[Run]:
        """Finished runs the host sent with ``send_async`` whose replies it has not read, oldest first, at
        most ``limit``; ``more`` says how many further replies wait.

        With ``mark_read`` (default) they leave the inbox, so the next call gives the next ones (the page has
        no cursor); ``get_run`` still returns them.
        """
        check_page(limit)

        def take(tx: Tx) -> Page[Run]:
            ids = tx.unread_replies(limit)
            runs = [tx.get_run(run_id) for run_id in ids]
            if mark_read:
                tx.mark_read(ids)
            return Page(items=runs, more=tx.unread_count() - (0 if mark_read else len(ids)))

        return await (self._store.write(take) if mark_read else self._store.read(take))

    async def inbox_count(self) -> int:
        """How many replies wait in the host inbox."""
        return await self._store.read(lambda tx: tx.unread_count())

    # -- broadcast ---------------------------------------------------------------------------------
    async def broadcast(
        self,
        message: str,
        *,
        match_all: Sequence[str] = (),
        match_some: Sequence[str] = (),
        sender: str | None = None,
        parent_run_id: str | None = None,
        wait_s: float = 50.0,
        on_result: OnResult | None = None,
        call_id: str | None = None,
    ) -> list[BroadcastResult]:
        """Send ``message`` to every agent with all tags of ``match_all`` and one of ``match_some`` (Letta's
        rule: an empty list does not filter, so both empty means every agent), the sender excluded, all at
        once (at most ``Settings.fanout_concurrency`` unfinished at a time), and wait for the replies.

        One result per recipient, by name; ``on_result`` is awaited as each one finishes. After ``wait_s``
        the unfinished ones come back ``pending`` with their run ids (recipients not sent to yet are sent
        to then); for an agent sender their replies are routed to it as new messages. A recipient that
        would close a cycle of waits gets a failed result, not a deadlock. ``call_id``: as in
        ``send_and_wait`` (a recipient sent to already is waited on, not sent to again).
        """
        wait_s = check_wait_s(wait_s)
        check_message(message)
        every, some = check_list(match_all, "match_all", "worker"), check_list(match_some, "match_some", "worker")

        def recipients(tx: Tx) -> tuple[str | None, list[tuple[str, str]]]:
            sender_id = None if sender is None else tx.resolve_agent(sender).id
            found = tx.agents_matching_tags(every, some)
            return sender_id, [(a.id, a.name) for a in found if a.id != sender_id]

        sender_id, targets = await self._store.read(recipients)
        names = dict(targets)
        results: dict[str, BroadcastResult] = {}
        sent: dict[str, Run] = {}
        later = iter(targets[self.settings.fanout_concurrency :])

        def creator(agent_id: str) -> Callable[[Tx], Run]:
            return self._creator(
                agent_id, message, sender=sender_id, parent_run_id=parent_run_id, waited=True, call_id=call_id
            )

        async def report(agent_id: str, result: BroadcastResult) -> None:
            results[agent_id] = result
            if on_result is not None:
                await on_result(result)

        async def follow(agent_id: str, made: Run | LettaError) -> None:
            """One recipient at a time: wait for its run, report it, then send to the next recipient."""
            while True:
                if isinstance(made, LettaError):  # refused (a cycle, too deep, its agent deleted meanwhile)
                    failed = BroadcastResult(
                        agent=names[agent_id], agent_id=agent_id, status="failed", error=made.message
                    )
                    await report(agent_id, failed)
                else:
                    run = await self._scheduler.wait(made.id, None, current=made)
                    await report(agent_id, BroadcastResult(agent=names[agent_id], agent_id=agent_id, **outcome(run)))
                next_target = next(later, None)
                if next_target is None:
                    return
                agent_id = next_target[0]
                made = await submit(agent_id)

        async def submit(agent_id: str) -> Run | LettaError:
            # Shielded: at the deadline a run already stored must not be lost track of (and sent twice).
            with anyio.CancelScope(shield=True):
                try:
                    made: Run | LettaError = await self._scheduler.submit(creator(agent_id))
                except LettaError as exc:
                    return exc
                sent[agent_id] = made
                return made

        async with self._scheduler.lend_slot(parent_run_id):
            with anyio.move_on_after(wait_s):
                # The first wave (as many as may be unfinished at once) is stored and started a batch per
                # transaction, so one batch's requests go out while the next batch is stored; each next
                # recipient is sent to as one of them finishes.
                wave = targets[: self.settings.fanout_concurrency]
                async with anyio.create_task_group() as tg:
                    for i in range(0, len(wave), BROADCAST_BATCH):
                        batch = wave[i : i + BROADCAST_BATCH]
                        made = await self._scheduler.submit_many([creator(agent_id) for agent_id, _ in batch])
                        sent.update((r.agent_id, r) for r in made if isinstance(r, Run))
                        for (agent_id, _), first in zip(batch, made, strict=True):
                            tg.start_soon(follow, agent_id, first)
        for agent_id, _ in targets:  # not sent by the deadline: sent now, and come back pending
            if agent_id not in results and agent_id not in sent:
                if isinstance(refused := await submit(agent_id), LettaError):
                    failed = BroadcastResult(
                        agent=names[agent_id], agent_id=agent_id, status="failed", error=refused.message
                    )
                    results[agent_id] = failed
        unfinished = [run for agent_id, run in sent.items() if agent_id not in results]
        if parent_run_id is not None:
            unfinished = await self._stop_waiting(unfinished)
        elif unfinished:  # as they are now: some may have finished since the deadline
            unfinished = await self._store.read(lambda tx: tx.get_runs([run.id for run in unfinished]))
        for run in unfinished:
            results[run.agent_id] = BroadcastResult(agent=run.agent_name, agent_id=run.agent_id, **outcome(run))
        return [results[agent_id] for agent_id, _ in targets]

    # -- pipelines ---------------------------------------------------------------------------------
    async def run_pipeline(
        self, stages: Sequence[str], message: str, *, wait_s: float = 300.0, on_stage: OnStage | None = None
    ) -> PipelineResult:
        """Send ``message`` to the first stage's agent, each next stage the previous stage's reply (the
        seed's research -> write -> edit), from the host; every stage's output is in the result.

        Every stage reference is checked before anything is sent. ``wait_s`` bounds the whole pipeline;
        it stops at the first stage that does not complete (its status is the pipeline's).
        """
        wait_s = check_wait_s(wait_s)
        check_message(message)
        if isinstance(stages, str) or not stages:
            raise Invalid("stages must be a non-empty list of agent names or ids, e.g. ['researcher', 'writer']")
        agents = await self._store.read(lambda tx: [tx.resolve_agent(s).id for s in stages])
        deadline = anyio.current_time() + wait_s
        done: list[StageResult] = []
        text = message
        for index, agent_id in enumerate(agents, start=1):
            run = await self.send_and_wait(agent_id, text, wait_s=max(0.0, deadline - anyio.current_time()))
            stage = StageResult(agent=run.agent_name, **outcome(run))
            error = None
            if stage.status == "pending":
                error = (
                    f"stage {index} ({run.agent_name}) did not finish within the pipeline's {wait_s:g}s; its run "
                    f"{run.id} goes on: get its reply later"
                )
            elif stage.status != "completed":
                error = f"stage {index} ({run.agent_name}) {stage.status}: {run.error or 'no error recorded'}"
            elif not (run.reply or "").strip():
                error = f"stage {index} ({run.agent_name}) replied with nothing" + (
                    ", so the next stage has no input" if index < len(agents) else ": the pipeline has no output"
                )
            done.append(stage)
            if on_stage is not None:
                await on_stage(stage)
            if error is not None:
                status = "failed" if stage.status == "completed" else stage.status
                return PipelineResult(stages=done, output=None, status=status, error=error)
            text = run.reply or ""
        return PipelineResult(stages=done, output=text, status="completed")

    # -- monitoring --------------------------------------------------------------------------------
    async def get_metrics(
        self, *, agent: str | None = None, since: datetime | None = None, limit: int = PAGE
    ) -> Metrics:
        """Messages, errors, latency p50/p95 (sent to finished) and tokens, per receiving agent and per
        sender -> receiver pair ("host" for the host), slowest (p95) first; optionally only runs to or from
        ``agent`` and created at or after ``since``.

        Each list holds its ``limit`` slowest; ``more_agents`` and ``more_pairs`` count the rest (a ranking
        of live figures has no stable cursor: narrow it with ``agent`` instead).
        """
        check_page(limit)
        if since is not None and not isinstance(since, datetime):
            raise Invalid(f"since must be a datetime, e.g. datetime.now(UTC) - timedelta(days=1) (got {shown(since)})")

        def compute(tx: Tx) -> Metrics:
            agent_id = None if agent is None else tx.resolve_agent(agent).id
            return tx.metrics(agent_id=agent_id, since=since)

        found = await self._store.read(compute)
        return found.model_copy(
            update={
                "agents": found.agents[:limit], "pairs": found.pairs[:limit],
                "more_agents": max(0, len(found.agents) - limit), "more_pairs": max(0, len(found.pairs) - limit),
            }
        )  # fmt: skip
