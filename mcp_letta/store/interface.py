"""What the hub and the runtime need from storage: the ``Store`` (transactions, the change feed) and the
``Tx`` (everything one transaction can read or write), with the values they exchange.

An engine implements both (``mcp_letta.store.sqlite``). Above this boundary nothing knows SQL, a
connection or an engine's way of noticing other processes' writes.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

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

T = TypeVar("T")

HOST = "host"  # where a reply goes when the host sent the message asynchronously: the host inbox
NO_RESPONSE = "<no response>"  # Letta's text when an agent answered with no message
Edit = Callable[[str], str]  # a block edit: old value -> new value (raise to refuse)
CancelOutcome = Literal["cancelled", "requested", "done"]
RunState = Literal["ok", "cancel", "lost", "no_agent"]


def appender(text: str) -> Edit:
    """An edit that appends ``text`` on a new line (no separator when the block is empty)."""
    return lambda old: text if old == "" else old + "\n" + text


@dataclass(frozen=True)
class Change:
    """Something changed in the store: ``kind`` is 'block', 'agent' (its memory view or tools), 'agents'
    (the list), 'run' (a run's status), 'step' (a run committed a step: ``ref`` is the run id), 'inbox' (a
    reply reached the host inbox, or was read: ``ref`` is the run id) or 'queued' (a run of agent ``ref`` was
    queued outside a send: a reply delivered to it, or a run put back to be resumed); ``ref`` is the id.
    ``local``: made by this process (else another process on the same store)."""

    kind: str
    ref: str
    local: bool = True


class Clock:
    """The wall-clock time leases and heartbeats are written in: compared across processes, so a monotonic
    clock will not do. It is the machine's, moved by ``offset`` onto the database server's clock where
    processes on several machines share the database (``follow``): a machine whose clock runs fast would
    otherwise see every other process's heartbeat as old and take over its runs, and one running slow would
    look dead to the others."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Seconds since the epoch, on the clock followed."""
        return time.time() + self.offset

    def follow(self, read_server_time: Callable[[], float | None]) -> None:
        """Take the offset to the clock ``read_server_time`` reads (``None``: the machine's is the shared
        one), taking the read to happen halfway through the call."""
        sent = time.time()
        server = read_server_time()
        if server is not None:
            self.offset = server - (sent + time.time()) / 2


@dataclass(frozen=True)
class Owner:
    """This process as an owner of runs: its id and how long its claims last unrenewed.

    ``shares_queue``: any live process may start any queued run (the store's ``shares_queue``, true for
    replicas on one PostgreSQL database); otherwise a queued run is started by the process that stored it
    (or, once that one is dead, by whoever adopts it).
    """

    id: str
    lease_s: float = 30.0
    shares_queue: bool = False
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    clock: Clock = field(default_factory=Clock, compare=False)

    def now(self) -> float:
        """The time on this process's ``clock``."""
        return self.clock.now()


@dataclass(frozen=True)
class AgentRecord:
    """An agent's own settings, without its blocks: what resolving a reference and starting a run read."""

    id: str
    name: str
    system: str
    model_settings: ModelSettings
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ToolAgent:
    """An agent attached to another as a tool: its id, current name and what its tool says it is for."""

    agent_id: str
    name: str
    description: str


class PromptBlock(NamedTuple):
    """A block as an agent's prompt shows it."""

    label: str
    description: str | None
    value: str
    limit: int
    read_only: bool


@dataclass(frozen=True)
class Claimed:
    """A run just started for this process, and whether more of its agent's runs wait behind it."""

    run: Run
    more_queued: bool


ClaimOutcome = Claimed | Literal["empty", "blocked"]


class Tx(Protocol):
    """One transaction. Read methods see one consistent snapshot; in a write transaction every method's
    effects commit together or not at all. References (``agent``, ``block``) are an id or a unique name
    or label; ``*_id`` arguments are exact ids."""

    # -- agents ------------------------------------------------------------------------------------
    def resolve_agent(self, agent: str) -> AgentRecord:
        """The agent with this id or name; ``NotFound`` naming the closest names otherwise."""
        ...

    def agent_records(self, agent_ids: Sequence[str]) -> dict[str, AgentRecord]:
        """These agents' records by id (deleted ones are missing)."""
        ...

    def get_agent(self, agent: str) -> Agent:
        """An agent with its blocks, tags and attached agents."""
        ...

    def create_agent(
        self, *, name: str, system: str, description: str | None, block_specs: list[BlockSpec],
        shared_blocks: list[str], tags: list[str], model_settings: ModelSettings, metadata: dict[str, Any],
        writer: str | None, tool_agents: list[str],
    ) -> Agent:  # fmt: skip
        """A new agent with new blocks from ``block_specs``, existing ``shared_blocks`` and agents attached as
        tools (all references)."""
        ...

    def list_agents(
        self, *, tags: list[str], match_all_tags: bool, query: str | None, limit: int, cursor: str | None
    ) -> Page[Agent]:
        """A page of agents by name, with any (or all) of ``tags`` and matching a text query; ``cursor`` is
        a previous page's ``next_cursor`` (see ``store.paging``: the key is the name)."""
        ...

    def agents_matching_tags(self, match_all: list[str], match_some: list[str]) -> list[AgentRecord]:
        """Agents with every tag of ``match_all`` and one of ``match_some`` (an empty list does not filter)."""
        ...

    def update_agent(
        self, agent_id: str, *, name: str | None, description: str | None, system: str | None,
        tags: list[str] | None, model_settings: ModelSettings | None, metadata: dict[str, Any] | None,
    ) -> Agent:  # fmt: skip
        """Change the given fields (``None``: unchanged)."""
        ...

    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent, its history, passages and the blocks only it used."""
        ...

    def attach_agent_tool(self, agent_id: str, tool_agent_id: str) -> bool:
        """Offer ``tool_agent_id`` to ``agent_id`` as a tool; False if it already was."""
        ...

    def detach_agent_tool(self, agent_id: str, tool_agent_id: str) -> None:
        """Stop offering it; ``NotFound`` naming what is attached if it was not."""
        ...

    def tool_agents(self, agent_ids: Sequence[str]) -> dict[str, list[ToolAgent]]:
        """The agents attached to each of these agents as tools, in attachment order."""
        ...

    # -- blocks ------------------------------------------------------------------------------------
    def create_block(self, spec: BlockSpec, *, writer: str | None, attach_to: list[str]) -> Block:
        """A new block, attached to the agents ``attach_to`` (references)."""
        ...

    def get_block(self, block: str, *, agent: str | None = None) -> Block:
        """A block by id, or by label (within ``agent`` when given)."""
        ...

    def list_blocks(self, *, label: str | None, agent_id: str | None, limit: int, cursor: str | None) -> Page[Block]:
        """A page of blocks, optionally only those with ``label`` and/or attached to ``agent_id``: by label,
        creation time and id, or in the agent's prompt order (position, id) with ``agent_id``."""
        ...

    def block_labels(self, agent_id: str) -> list[str]:
        """The labels of an agent's blocks, in prompt order."""
        ...

    def edit_block(
        self, block: str, edit: Edit, *, agent: str | None = None, op: str, writer: str | None,
        expected_version: int | None = None, enforce_read_only: bool = False,
    ) -> Block:  # fmt: skip
        """Apply ``edit`` atomically (limit, version and read-only checks, history, change)."""
        ...

    def replace_in_block(
        self, block: str, old: str, new: str, *, replace_all: bool, agent: str | None, writer: str | None,
        expected_version: int | None,
    ) -> Block:  # fmt: skip
        """Replace the substring ``old`` (it must occur, once unless ``replace_all``), atomically."""
        ...

    def update_block(
        self, block: str, *, agent: str | None, limit: int | None, description: str | None,
        read_only: bool | None, metadata: dict[str, Any] | None, writer: str | None,
    ) -> Block:  # fmt: skip
        """Change a block's limit, description, read-only flag or metadata (not its value)."""
        ...

    def attach_block(self, agent: str, block: str) -> Block:
        """Attach a block to an agent (no-op if attached; a clashing label is an error)."""
        ...

    def detach_block(self, agent: str, block: str) -> Block:
        """Detach a block from an agent (the block stays)."""
        ...

    def delete_block(self, block: str, *, agent: str | None) -> Block:
        """Delete a block everywhere; returns what was deleted."""
        ...

    def block_history(self, block: str, *, agent: str | None, limit: int, cursor: str | None) -> Page[BlockChange]:
        """A page of a block's writes, newest first (the key is the version)."""
        ...

    def block_agents(self, block_id: str) -> list[tuple[str, str]]:
        """``(id, name)`` of the agents a block is attached to."""
        ...

    def prompt_blocks(self, agent_ids: Sequence[str]) -> dict[str, list[PromptBlock]]:
        """Each agent's blocks as its prompt shows them, in order."""
        ...

    # -- archival and recall memory ------------------------------------------------------------------
    def insert_passage(self, agent_id: str, text: str, tags: list[str]) -> Passage:
        """Store a passage in an agent's archival memory."""
        ...

    def insert_passages(self, agent_id: str, passages: Sequence[tuple[str, list[str]]]) -> int:
        """Store many ``(text, tags)`` passages in an agent's archival memory at once, in order (bulk loading);
        how many. A bad one raises and none is stored."""
        ...

    def search_passages(
        self, agent_id: str, query: str, *, tags: list[str], tag_match: str, limit: int, cursor: str | None = None
    ) -> Page[Passage]:
        """A page of a full-text search of an agent's passages, best first (rank, then passage order). Later
        pages leave out passages stored after the first page was read."""
        ...

    def list_passages(
        self, agent_id: str, *, limit: int, cursor: str | None, oldest_first: bool = False, after_id: str | None = None
    ) -> Page[Passage]:
        """A page of an agent's passages, newest first (or ``oldest_first``); ``after_id`` starts it after that
        passage."""
        ...

    def delete_passage(self, agent_id: str, passage_id: str) -> None:
        """Delete one passage of an agent."""
        ...

    def archival_tags(self, agent_id: str) -> list[str]:
        """The tags used in an agent's archival memory."""
        ...

    def archival_counts(self, agent_ids: Sequence[str]) -> dict[str, int]:
        """How many passages each agent has."""
        ...

    def recall_counts(self, agent_ids: Sequence[str]) -> dict[str, int]:
        """How many of each agent's messages are out of its context window (in recall only)."""
        ...

    def append_messages(self, agent_id: str, messages: list[NewMessage]) -> list[Message]:
        """Append messages to an agent's history, in order."""
        ...

    def get_messages(self, agent_id: str, *, limit: int, cursor: str | None) -> Page[Message]:
        """A page of an agent's history going back in time: the newest ``limit`` messages older than the
        cursor, oldest first within the page (the key is ``seq``)."""
        ...

    def search_messages(
        self, agent_id: str, query: str | None, *, roles: list[str], limit: int, start: str | None, end: str | None,
        cursor: str | None = None,
    ) -> Page[Message]:  # fmt: skip
        """A page of a search of an agent's whole history by text (best first; newest first without a
        query), role and date range. Later pages leave out messages stored after the first page was read."""
        ...

    def in_context_messages(self, agent_id: str) -> list[Message]:
        """The messages in an agent's context window, oldest first."""
        ...

    def window_fingerprints(self, agent_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(count, newest seq) of each agent's in-context messages: changes whenever the window changes."""
        ...

    def take_out_of_context(self, agent_id: str, seqs: list[int]) -> None:
        """Evict these messages from the context window (compaction; they stay in recall)."""
        ...

    # -- runs --------------------------------------------------------------------------------------
    def insert_run(
        self, agent: AgentRecord, text: str, *, role: str, sender: str | None, parent_run_id: str | None,
        owner: str, waited: bool = False, depth: int = 0, reply_to: str | None = None, call_id: str | None = None,
    ) -> Run:  # fmt: skip
        """A queued run for ``agent``, to be executed by process ``owner``; ``waited``: its parent waits on it;
        ``call_id``: the tool call of run ``parent_run_id`` that sends it (kept for ``sent_run``; ignored
        without a parent). At most one run per (parent, call, agent)."""
        ...

    def sent_run(self, parent_run_id: str, call_id: str, agent_id: str) -> Run | None:
        """The run that tool call ``call_id`` of run ``parent_run_id`` sent to ``agent_id``, if any: a resumed
        run making the call again waits on that run instead of sending the message twice."""
        ...

    def get_run(self, run_id: str) -> Run:
        """A run with its steps; ``NotFound`` naming recent runs otherwise."""
        ...

    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """These runs (unknown ids are skipped)."""
        ...

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
        """A page of runs in queue order, newest first (or ``oldest_first``), of one agent or all, in one or
        more statuses or any; ``after_id`` starts it after that run."""
        ...

    def claim_next(self, agent_id: str, owner: Owner) -> ClaimOutcome:
        """Start the agent's oldest queued run for ``owner`` if nothing of it runs and no other live process
        owns it (unless ``owner.shares_queue``: then any process may start it).
        A running run whose process died or whose lease passed is released first (see ``recover``).
        The claimed run's ``resumes`` > 0 says it had started before: resume it, do not start it afresh."""
        ...

    def claim_many(self, agent_ids: Sequence[str], owner: Owner) -> list[ClaimOutcome]:
        """``claim_next`` for each agent (a broadcast's recipients), in as few reads as the engine can."""
        ...

    def run_state(self, run_id: str, owner: Owner) -> RunState:
        """Whether ``owner`` may go on with a running run: 'ok', 'cancel', 'lost' or 'no_agent'."""
        ...

    def add_step(self, run_id: str, step: RunStep, *, count_usage: bool = True) -> None:
        """Record a finished step (and add its tokens to the run's, unless the caller does)."""
        ...

    def finish_run(
        self, run_id: str, *, status: str, stop_reason: str, reply: str | None = None, error: str | None = None,
        expect: tuple[str, ...] = ("running",), add_usage: RunUsage | None = None, owner: Owner | None = None,
    ) -> Run | None:  # fmt: skip
        """End a run still in one of ``expect`` (and, given ``owner``, still that process's), and route its
        reply; the run as ended without its steps, or None if it was not."""
        ...

    def cancel_with_waited(self, run_id: str) -> list[tuple[str, CancelOutcome]]:
        """Cancel a run and every unfinished run it waits on; ``(run id, outcome)`` each, the run first."""
        ...

    def check_wait(self, parent_run_id: str, target: AgentRecord, max_depth: int) -> int:
        """The depth of a new run of ``target`` that ``parent_run_id`` would wait on; ``Deadlock`` if the wait
        would close a cycle or nest deeper than ``max_depth``."""
        ...

    def stop_waiting(self, run_id: str, *, reply_to: str | None) -> bool:
        """The parent gave up on this unfinished run: route its reply to ``reply_to``; False if it finished."""
        ...

    def heartbeat(self, owner: Owner, executing: Sequence[str]) -> None:
        """``owner`` is alive: renew the leases of the runs it is ``executing`` (ids). A run it owns but no
        longer executes (its end could not be written) keeps its lease, which passes: ``recover`` then
        puts it back in the queue."""
        ...

    def schema_version(self) -> int:
        """The newest migration applied to the database: a newer mcp-letta may have migrated it since this
        process opened it."""
        ...

    def server_time(self) -> float | None:
        """The database server's clock (seconds since the epoch) where processes on other machines share the
        database; ``None`` where they cannot (a file is shared by one machine's processes)."""
        ...

    def recover(self, owner: Owner) -> list[str]:
        """Release the running runs of dead processes, and those whose lease passed (``owner``'s own included),
        and adopt dead processes' queued runs; the agents with queued runs ``owner`` owns.

        Releasing puts a run back in the queue, owned by ``owner``, with ``resumes`` + 1, to be resumed from
        its last committed step; it ends instead when resuming cannot help: cancelled if a cancel was
        asked, interrupted (the reason in its error) if the run waiting on it has ended or its process
        died too many times running it."""
        ...

    def forget_process(self, owner: Owner) -> None:
        """``owner`` shuts down cleanly: its running runs are released (as in ``recover``, not counted as a
        crash) and others may adopt them and its queued runs at once."""
        ...

    def announce_waiting(self, agent_ids: Sequence[str]) -> None:
        """Tell every process (a "queued" change) that these agents have runs waiting that their process had no
        slot for: where the queue is shared, one with an idle slot takes them."""
        ...

    def startable_agents(self, limit: int, besides: Sequence[str] = ()) -> list[str]:
        """Up to ``limit`` agents, not those in ``besides``, whose next queued run (any process's) may start
        now (no run of theirs is running), oldest first: where a process with idle slots takes work from when
        the queue is shared. In a write transaction on an engine that shares its queue, each agent returned
        is locked as a claim would lock it, and agents another transaction is claiming are passed over."""
        ...

    # -- host inbox and monitoring ---------------------------------------------------------------------
    def unread_replies(self, limit: int) -> list[str]:
        """Ids of finished runs whose replies wait in the host inbox, oldest first."""
        ...

    def mark_read(self, run_ids: list[str]) -> None:
        """Take replies out of the host inbox."""
        ...

    def unread_count(self) -> int:
        """How many replies wait in the host inbox."""
        ...

    def metrics(self, *, agent_id: str | None, since: datetime | None) -> Metrics:
        """Messages, errors, latency and tokens per agent and per sender -> receiver pair."""
        ...

    def savepoint(self) -> Any:
        """A context manager: a nested transaction whose writes an exception inside undoes."""
        ...


class Store(Protocol):
    """A store engine: transactions run off the event loop, and a feed of what changed."""

    origin: str  # this process's id as the store knows it (in the change log)
    shares_queue: bool  # any process on the store may start any queued run (see ``Owner``)
    refusal: StorageUnavailable | None  # why it no longer reads or writes (see ``write``), or None

    async def open(self) -> None:
        """Create or migrate the storage; after this, transactions work."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn(tx)`` in a read transaction."""
        ...

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn(tx)`` in a write transaction and return its result once it is durable (or raise).

        Every few seconds a write first checks the schema version: once a newer mcp-letta has migrated the
        database, this store refuses every transaction (``StorageUnavailable``, reason "newer_schema";
        ``refusal`` holds it)."""
        ...

    def add_listener(self, listener: Callable[[list[Change]], None]) -> None:
        """Call ``listener(changes)`` after every commit: this process's own at once, others' while
        ``follow_changes`` runs."""
        ...

    async def follow_changes(self) -> None:
        """Until cancelled: tell the listeners what other processes change (each engine its own way)."""
        ...

    @property
    def feed_trouble(self) -> str | None:
        """Why ``follow_changes`` cannot hear the other processes right now (it keeps trying), or None."""
        ...
