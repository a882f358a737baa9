"""One run of an agent: the letta_v1_agent step loop (context -> LLM -> tool calls -> persist) until a reply.

Claiming a run is one transaction that also appends its input to the history and loads the context. Each
step is one transaction holding its messages, its tools' store effects and its record; the step that
replies also completes the run. The system message is rebuilt every step, so memory edits (the agent's
own, or another agent's on a shared block) are in the very next prompt.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from mcp_letta.config import Settings
from mcp_letta.errors import LLMUnavailable
from mcp_letta.llm import ChatRequest, ChatResponse, LLMClient, LLMPool
from mcp_letta.models import Message, NewMessage, Run, RunStep, RunUsage, StepEvent
from mcp_letta.runtime.context import (
    DEFAULT_CONTEXT_WINDOW,
    KEEP_FRACTION,
    SUMMARIZE_AT,
    SUMMARY_SENDER,
    Window,
    bounded_summary,
    choose_eviction,
    fixed_tokens,
    summary_alert,
    summary_request,
)
from mcp_letta.runtime.group_commit import GroupCommit
from mcp_letta.runtime.requests import (
    Basis,
    Early,
    MemoryFacts,
    Prefetched,
    ShownMemory,
    basis_of,
    chat_request,
    offered_tools,
)
from mcp_letta.runtime.toolbox import PreparedCall, Toolbox, ToolContext, ToolResult
from mcp_letta.store import memory as memory_sql
from mcp_letta.store import runs as runs_sql
from mcp_letta.store.db import Conn, Database
from mcp_letta.store.refs import clean_text

log = logging.getLogger("mcp_letta.runner")

WINDOW_CACHE_SIZE = 256  # agents whose in-context history this process keeps between runs

OnStep = Callable[[StepEvent], Awaitable[None]]
T = TypeVar("T")


class RunLost(Exception):
    """The run stopped being ours (its lease passed and another process interrupted it): stop quietly."""


class CancelRequested(Exception):
    """Someone asked to cancel the run (seen at a step boundary): nothing of this step is kept."""


class AgentDeleted(Exception):
    """The agent was deleted while its run was going: the run fails, nothing of this step is kept."""


@dataclass
class Claimed:
    """A run this process just started, with what its first step needs."""

    run: Run
    basis: Basis  # model settings, tools (the attached agents offered as ask_<name>) and memory, as read
    system: str
    window: Window
    more_queued: bool = False  # the agent had more queued runs when this one was claimed
    steps: list[RunStep] = field(default_factory=list)  # committed so far
    early: Early | None = None  # its first request, sent before it started and equal to the one it would send

    @property
    def context(self) -> ToolContext:
        """Who the run's tool calls act as."""
        return ToolContext(agent_id=self.run.agent_id, agent_name=self.run.agent_name, run_id=self.run.id)


def _now() -> datetime:
    return datetime.now(UTC)


def _usage(response: ChatResponse) -> RunUsage:
    return RunUsage(**response.usage.model_dump())


class Runner:
    """Executes claimed runs for one process; shared by every agent (it keeps no per-run state).

    It remembers the context window each agent ended its last run with, and reuses it when the store
    shows nobody changed that agent's history since (so a claim does not reload the whole history).
    """

    def __init__(self, db: Database, llm: LLMPool, toolbox: Toolbox, settings: Settings, owner: runs_sql.Owner):
        self.db = db
        self.llm = llm
        self.toolbox = toolbox
        self.settings = settings
        self.owner = owner
        self._windows: OrderedDict[str, Window] = OrderedDict()
        self._bases: OrderedDict[str, Basis] = OrderedDict()
        self._writes = GroupCommit(db)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a write transaction, one transaction at a time from this process's
        runtime, shared with the writes queued meanwhile (``GroupCommit``).

        SQLite lets one writer in and makes the others sleep-poll its lock (1, 2, 5, 10 ms...): with
        many agents that polling, not the work, would set the pace. Queueing here costs nothing, and
        sharing the commit saves an fsync per write.
        """
        return await self._writes.write(fn, *args)

    def _window(self, conn: Conn, agent_id: str, fingerprint: tuple[int, int]) -> Window:
        """The agent's window: the one this process kept, if the store's ``fingerprint`` says it is current."""
        cached = self._windows.pop(agent_id, None)
        if cached is not None and cached.fingerprint == fingerprint:
            return cached.copy()
        return Window(memory_sql.in_context_messages(conn, agent_id))

    def _keep_window(self, agent_id: str, window: Window) -> None:
        self._remember(self._windows, agent_id, window)

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], agent_id: str, value: Any) -> None:
        cache[agent_id] = value
        cache.move_to_end(agent_id)
        while len(cache) > WINDOW_CACHE_SIZE:
            cache.popitem(last=False)

    # -- claiming ----------------------------------------------------------------------------------
    def claim(self, conn: Conn, agent_id: str) -> Claimed | Run | Literal["empty", "blocked"]:
        """Start the agent's next run (inside a write transaction): append its input, load the context.

        Returns the ``Claimed`` run, "empty"/"blocked" (see ``runs.claim_next``), or a ``Run`` that
        failed at once (its agent was deleted, or its context could not be loaded).
        """
        state, claim = runs_sql.claim_next(conn, agent_id, self.owner)
        if claim is None:
            return state
        row, more_queued = claim
        return self._start(conn, row, more_queued, Prefetched.read(conn, [agent_id]), None)

    def claim_many(
        self, conn: Conn, agent_ids: list[str], compiled_at: dict[str, datetime] | None = None
    ) -> list[Claimed | Run | Literal["empty", "blocked"]]:
        """``claim`` for many agents at once (a broadcast's recipients), reading what every start needs in one
        query each; an agent whose queue is not simply "our run, nothing running" gets the single claim.

        ``compiled_at``: the time an agent's prompt says it was compiled (that of its early request)."""
        active = runs_sql.active_runs(conn, agent_ids)
        simple = {
            agent_id: runs[0]
            for agent_id, runs in active.items()
            if runs and runs[0]["status"] == "queued" and runs[0]["owner"] == self.owner.id
            and all(r["status"] == "queued" for r in runs)
        }  # fmt: skip
        started = runs_sql.start_runs(conn, [head["id"] for head in simple.values()], self.owner)
        known = Prefetched.read(conn, [a for a, head in simple.items() if head["id"] in started])
        out: list[Claimed | Run | Literal["empty", "blocked"]] = []
        seen: set[str] = set()
        for agent_id in agent_ids:
            head = simple.get(agent_id)
            if head is None or head["id"] not in started or agent_id in seen:
                out.append(self.claim(conn, agent_id))  # (a repeated agent finds its run running: "blocked")
                continue
            seen.add(agent_id)
            when = (compiled_at or {}).get(agent_id)
            out.append(self._start(conn, started[head["id"]], len(active[agent_id]) > 1, known, when))
        return out

    def _start(
        self, conn: Conn, row: Any, more_queued: bool, known: Prefetched, compiled_at: datetime | None
    ) -> Claimed | Run:
        """(The run is claimed.) Load its context, or fail it when its agent is gone or the load fails."""
        agent = known.agents.get(row["agent_id"])
        if agent is None:
            error = f"agent {row['agent_name']!r} was deleted before this run started"
        else:
            conn.execute("SAVEPOINT load_context")
            try:
                claimed = self._load(conn, row, agent, more_queued, known, compiled_at)
            except Exception as exc:  # a run that cannot start must fail, not block its agent's queue
                conn.execute("ROLLBACK TO load_context")
                log.exception("could not start run %s of agent %s", row["id"], row["agent_name"])
                error = f"internal error while starting the run: {type(exc).__name__}: {exc}"
            else:
                conn.execute("RELEASE load_context")
                return claimed
        runs_sql.finish_run(conn, row["id"], status="failed", stop_reason="error", error=error)
        return runs_sql.get_run(conn, row["id"])

    def _load(
        self, conn: Conn, row: Any, agent: Any, more_queued: bool, known: Prefetched, compiled_at: datetime | None
    ) -> Claimed:
        agent_id = agent["id"]
        window = self._window(conn, agent_id, known.fingerprints[agent_id])
        window.add(
            memory_sql.append_messages(
                conn,
                agent_id,
                [NewMessage(role=row["role"], content=row["input"], sender=row["sender"], run_id=row["id"])],
            )
        )
        basis = basis_of(conn, agent, known)
        self._remember(self._bases, agent_id, basis)  # (a guess for the next start: that start checks it)
        return Claimed(
            run=runs_sql.run_of(row, []),
            basis=basis,
            system=basis.system(agent_id, compiled_at),
            window=window,
            more_queued=more_queued,
        )

    # -- sending early -----------------------------------------------------------------------------
    def plan_early(self, agent_id: str, role: str, content: str) -> Early | None:
        """The first request of a run about to start for ``agent_id`` with this input, built from what this
        process remembers (the agent's last start and its window), or None when it remembers too little
        or the first step would summarize. ``takes_early`` decides, once the run started, whether it is used."""
        basis, history = self._bases.get(agent_id), self._windows.get(agent_id)
        if basis is None or history is None:
            return None
        try:
            client, model = self.llm.client_for(basis.model_settings)
        except LLMUnavailable:
            return None
        return Early.plan(self.toolbox, client, model, agent_id, basis, history, role, clean_text(content), _now())

    def takes_early(self, claimed: Claimed, early: Early) -> bool:
        """Whether the run's first step would send exactly ``early.request``; if so, ``early`` is that step's."""
        try:
            _, model = self.llm.client_for(claimed.basis.model_settings)
        except LLMUnavailable:
            return False
        if not early.matches(self.toolbox, model, claimed.basis, claimed.system, claimed.window):
            return False
        claimed.early = early
        return True

    # -- the loop ----------------------------------------------------------------------------------
    async def execute(self, claimed: Claimed, on_step: OnStep | None = None) -> Run:
        """Run the step loop to the end and return the finished run.

        Raises ``CancelRequested`` or ``RunLost`` (and lets cancellation through) for the scheduler.
        """
        try:
            return await self._loop(claimed, on_step)
        except LLMUnavailable as exc:
            return await self._finish(claimed, "failed", error=str(exc), stop_reason="llm_api_error")
        except AgentDeleted as exc:
            return await self._finish(claimed, "failed", error=str(exc), stop_reason="error")
        except (CancelRequested, RunLost):
            raise
        except Exception as exc:  # a bug must fail this run, not the scheduler
            log.exception("run %s of agent %s failed", claimed.run.id, claimed.run.agent_name)
            error = f"internal error while running agent {claimed.run.agent_name!r}: {type(exc).__name__}: {exc}"
            return await self._finish(claimed, "failed", error=error, stop_reason="error")

    async def _loop(self, claimed: Claimed, on_step: OnStep | None) -> Run:
        run, settings = claimed.run, claimed.basis.model_settings
        client, model = self.llm.client_for(settings)
        offered, tools_json = offered_tools(self.toolbox, run.agent_id, claimed.basis)
        tools_chars = len(tools_json)
        window = settings.context_window or DEFAULT_CONTEXT_WINDOW
        last_calls = ""
        for index in range(self.settings.max_steps):
            started, usage = _now(), RunUsage()
            if fixed_tokens(claimed.system, tools_chars) > window:
                return await self._finish(
                    claimed, "failed", stop_reason="context_window_overflow_in_system_prompt",
                    error=f"agent {run.agent_name!r}'s system prompt, memory blocks and tools alone exceed its "
                    f"context window ({window} tokens): shorten its blocks or raise model_settings.context_window",
                )  # fmt: skip
            if claimed.window.estimate(claimed.system, tools_chars) > SUMMARIZE_AT * window:
                usage = usage.plus(await self._summarize(claimed, client, model, window))
            if claimed.early is not None:  # (equal to the request below: see takes_early)
                early, claimed.early = claimed.early, None
                started = min(started, early.compiled_at)
                if isinstance(early.answer, Exception):
                    raise early.answer
                assert early.answer is not None
                response = early.answer
            else:
                history, system = claimed.window, claimed.system
                messages, encoded = history.request(system), history.request_json(system)
                response = await client.chat(chat_request(model, settings, messages, encoded, offered, tools_json))
            usage = usage.plus(_usage(response))
            if not response.tool_calls:
                step = RunStep(index=index, usage=usage, started_at=started, finished_at=_now())
                finished = await self.write(self._commit_reply, claimed, response.content or "", step)
                await self._emit(on_step, run, step)
                return finished
            prepared = [self.toolbox.prepare(call, offered) for call in response.tool_calls]
            results = None
            if any(p.awaited for p in prepared):
                results = [await self._run_outside(p, claimed) for p in prepared]
            step, added, claimed.system = await self.write(
                self._commit_tools, claimed, response, prepared, results, index, started, usage
            )
            claimed.steps.append(step)
            claimed.window.add(added)
            await self._emit(on_step, run, step)
            last_calls = ", ".join(call.name for call in response.tool_calls)
        error = (
            f"agent {run.agent_name!r} used all {self.settings.max_steps} steps of this run without a final reply "
            f"(its last step called {last_calls}): ask for less at once, or raise MCP_LETTA_MAX_STEPS"
        )
        return await self._finish(claimed, "failed", error=error, stop_reason="max_steps")

    async def _run_outside(self, prepared: PreparedCall, claimed: Claimed) -> ToolResult:
        if prepared.awaited:
            return await self.toolbox.run_awaited(prepared, claimed.context)
        return await self.write(lambda conn: self.toolbox.run_in_transaction(conn, prepared, claimed.context))

    @staticmethod
    async def _emit(on_step: OnStep | None, run: Run, step: RunStep) -> None:
        if on_step is not None:
            await on_step(StepEvent(run_id=run.id, agent_id=run.agent_id, agent_name=run.agent_name, step=step))

    # -- transactions ------------------------------------------------------------------------------
    def _check(self, conn: Conn, claimed: Claimed) -> None:
        """Before a step commits: the run must still be ours, not cancelled, and its agent must exist."""
        state = runs_sql.run_state(conn, claimed.run.id, self.owner)
        if state == "cancel":
            raise CancelRequested(claimed.run.id)
        if state == "lost":
            raise RunLost(claimed.run.id)
        if state == "no_agent":
            raise AgentDeleted(f"agent {claimed.run.agent_name!r} was deleted while this run was going")

    def _system_now(self, conn: Conn, claimed: Claimed) -> str:
        """The system message for the run's next step: the agent's template and memory as the store has them
        now (its tools may have edited memory). What it is built from is remembered for the agent's next
        start, with the settings and tools the run started with (that start checks them all again)."""
        agent_id = claimed.run.agent_id
        row = conn.execute("SELECT system FROM agents WHERE id = ?", (agent_id,)).fetchone()
        if row is None:
            raise AgentDeleted(f"agent {claimed.run.agent_name!r} was deleted while this run was going")
        memory = ShownMemory.read(conn, agent_id, MemoryFacts.read(conn, [agent_id]))
        basis = replace(claimed.basis, template=row["system"], memory=memory)
        self._remember(self._bases, agent_id, basis)
        return basis.system(agent_id, None)

    def _commit_reply(self, conn: Conn, claimed: Claimed, reply: str, step: RunStep) -> Run:
        run = claimed.run
        self._check(conn, claimed)
        added = memory_sql.append_messages(
            conn, run.agent_id, [NewMessage(role="assistant", content=reply, run_id=run.id)]
        )
        runs_sql.add_step(conn, run.id, step, count_usage=False)
        ended = runs_sql.finish_run(
            conn, run.id, status="completed", reply=reply, stop_reason="end_turn", add_usage=step.usage
        )
        claimed.window.add(added)
        self._keep_window(run.agent_id, claimed.window)  # were the commit to fail, the fingerprint would not match
        return runs_sql.run_of(ended, [*claimed.steps, step])  # _check saw it running: it ended here

    def _commit_tools(
        self,
        conn: Conn,
        claimed: Claimed,
        response: ChatResponse,
        prepared: list[PreparedCall],
        results: list[ToolResult] | None,
        index: int,
        started: datetime,
        usage: RunUsage,
    ) -> tuple[RunStep, list[Message], str]:
        """Run the step's store-only tools and commit them with its messages and record; the next prompt."""
        run, ctx = claimed.run, claimed.context
        self._check(conn, claimed)
        if results is None:
            results = [self.toolbox.run_in_transaction(conn, p, ctx) for p in prepared]
        new = [
            NewMessage(role="assistant", content=response.content or "", tool_calls=response.tool_calls, run_id=run.id)
        ]
        new += [
            NewMessage(role="tool", content=result.for_llm(), name=p.call.name, tool_call_id=p.call.id, run_id=run.id)
            for p, result in zip(prepared, results, strict=True)
        ]
        added = memory_sql.append_messages(conn, run.agent_id, new)
        step = RunStep(
            index=index,
            tool_calls=[result.record(p.call) for p, result in zip(prepared, results, strict=True)],
            usage=usage,
            started_at=started,
            finished_at=_now(),
        )
        runs_sql.add_step(conn, run.id, step)
        return step, added, self._system_now(conn, claimed)

    async def _finish(self, claimed: Claimed, status: str, *, error: str, stop_reason: str) -> Run:
        def finish(conn: Conn) -> Run:
            ended = runs_sql.finish_run(conn, claimed.run.id, status=status, error=error, stop_reason=stop_reason)
            return runs_sql.get_run(conn, claimed.run.id) if ended is None else runs_sql.run_of(ended, claimed.steps)

        return await self.write(finish)

    # -- summarization -----------------------------------------------------------------------------
    async def _summarize(self, claimed: Claimed, client: LLMClient, model: str, window: int) -> RunUsage:
        """Summarize the window's oldest messages into one system_alert message; they stay in recall."""
        ordered = claimed.window.messages
        cut = choose_eviction(ordered, int(KEEP_FRACTION * window))
        if cut == 0:
            return RunUsage()
        evicted, kept = ordered[:cut], ordered[cut:]
        response = await client.chat(ChatRequest(model=model, messages=summary_request(evicted, window)))
        summary = bounded_summary((response.content or "").strip() or "(the summarizer returned no text)", window)
        run = claimed.run

        def commit(conn: Conn) -> tuple[Message, str]:
            self._check(conn, claimed)
            runs_sql.take_out_of_context(conn, run.agent_id, [m.seq for m in evicted])
            hidden = memory_sql.recall_stats(conn, run.agent_id)
            [message] = memory_sql.append_messages(
                conn,
                run.agent_id,
                [NewMessage(role="user", content=summary_alert(hidden, summary), sender=SUMMARY_SENDER, run_id=run.id)],
            )
            conn.log_change("agent", run.agent_id)  # its memory metadata (recall count) changed
            return message, self._system_now(conn, claimed)

        message, claimed.system = await self.write(commit)
        claimed.window = Window([message, *kept])
        log.info("agent %s: summarized %d messages out of its context window", run.agent_name, len(evicted))
        return _usage(response)
