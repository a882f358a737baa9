"""The multi-agent half of ``AgentHub``: send-and-wait, async send with reply routing, the host inbox, tag
broadcast, pipelines, agents attached as tools, and metrics. ``AgentHub`` inherits it; use it from there.

Every path is the same for the host and for an agent (whose toolbox calls these with ``sender`` and its
current run as ``parent_run_id``). A synchronous wait by an agent is checked against the wait-for graph
in the store before anything is persisted (``store.waits``), lends its concurrency slot out while it
waits, and ends within a bound: when the bound passes, the run goes on and its reply is routed to the
waiting agent as a new message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import anyio

from mcp_letta.config import Settings
from mcp_letta.errors import Invalid, LettaError
from mcp_letta.models import (
    Agent,
    BroadcastResult,
    Metrics,
    PipelineResult,
    Run,
    StageResult,
    StepEvent,
)
from mcp_letta.runtime.run_feed import RunFeed
from mcp_letta.runtime.scheduler import Scheduler
from mcp_letta.runtime.submitting import Preview
from mcp_letta.store import agent_tools as agent_tools_sql
from mcp_letta.store import agents as agent_sql
from mcp_letta.store import metrics as metrics_sql
from mcp_letta.store import replies as replies_sql
from mcp_letta.store import runs as run_sql
from mcp_letta.store import waits as waits_sql
from mcp_letta.store.db import Conn, Database
from mcp_letta.store.refs import MAX_TEXT, check_text, shown

OnStep = Callable[[StepEvent], Awaitable[None]]
OnResult = Callable[[BroadcastResult], Awaitable[None]]
OnStage = Callable[[StageResult], Awaitable[None]]
WILL_BE_DELIVERED = "your response will be delivered to the sender"
MAX_TOOL_NAME = 64  # OpenAI-compatible APIs refuse longer function names


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


def _check_message(message: str) -> None:
    if not isinstance(message, str) or not message.strip():
        raise Invalid("the message is empty: pass the text to send to the agent")
    check_text(message, "the message", MAX_TEXT)


MAX_TIMEOUT_S = 86_400  # a day: longer waits are surely mistakes, and huge ones overflow the clock


def check_timeout(timeout_s: float) -> float:
    """A wait in seconds: from 0 to a day (huge values would overflow the clock)."""
    if not isinstance(timeout_s, int | float) or not 0 <= timeout_s <= MAX_TIMEOUT_S:
        raise Invalid(f"timeout_s must be between 0 and {MAX_TIMEOUT_S} seconds (got {shown(timeout_s)})")
    return float(timeout_s)


class MultiAgentHub:
    """Agent-to-agent messaging for ``AgentHub`` (which provides the attributes declared here)."""

    settings: Settings
    db: Database
    _scheduler: Scheduler
    _owner: run_sql.Owner
    _await_run: Callable[..., Awaitable[Run]]  # AgentHub's bounded wait for a submitted run
    agent_wait_s: float  # how long an agent's tool call waits on other agents (Settings.agent_wait_s)

    # -- sending -----------------------------------------------------------------------------------
    async def _submit(
        self,
        target: str,
        message: str,
        *,
        sender: str | None,
        parent_run_id: str | None,
        waited: bool,
        route_reply: bool = False,
        on_step: OnStep | None = None,
    ) -> Run:
        """Persist (after the deadlock and depth checks) and schedule one message to ``target``."""
        _check_message(message)
        creator = self._creator(target, message, sender=sender, parent_run_id=parent_run_id, waited=waited,
                                route_reply=route_reply)  # fmt: skip
        return await self._scheduler.submit(creator, on_step)

    def _creator(
        self, target: str, message: str, *, sender: str | None, parent_run_id: str | None, waited: bool,
        route_reply: bool = False,
    ) -> Callable[[Conn], Run]:  # fmt: skip
        """The function that stores one message to ``target`` as a queued run, in a write transaction."""
        owner, max_depth = self._owner.id, self.settings.max_depth

        def create(conn: Conn) -> Run:
            row = agent_sql.resolve_agent_row(conn, target)
            sender_id = None if sender is None else agent_sql.resolve_agent_row(conn, sender)["id"]
            depth = 0
            if waited and parent_run_id is not None:
                depth = waits_sql.check_wait(conn, parent_run_id, row, max_depth)
            reply_to = (sender_id or replies_sql.HOST) if route_reply else None
            role, text = input_of(message, sender_id)
            return run_sql.insert_run(
                conn, row, text, role=role, sender=sender_id, parent_run_id=parent_run_id, owner=owner,
                waited=waited and parent_run_id is not None, depth=depth, reply_to=reply_to,
            )  # fmt: skip

        return create

    async def _stop_waiting(self, runs: list[Run]) -> list[Run]:
        """The waiting run gives up on these unfinished runs: they go on, and each reply is routed to its
        sender agent as a new message. Returns them as they are now (finished meanwhile, or not)."""

        def stop(conn: Conn) -> list[Run]:
            for run in runs:
                waits_sql.stop_waiting(conn, run.id, reply_to=run.sender)
            return [run_sql.get_run(conn, run.id) for run in runs]

        return await self.db.write(stop) if runs else []

    async def send_and_wait(
        self,
        target: str,
        message: str,
        *,
        sender: str | None = None,
        parent_run_id: str | None = None,
        timeout_s: float = 50.0,
        on_step: OnStep | None = None,
        cancel_on_abort: bool = False,
    ) -> Run:
        """Send ``message`` to ``target`` and wait up to ``timeout_s`` for the reply; the run, done or as it is.

        From the host (``sender=None``) the message arrives with role "user". From an agent it arrives with
        role "system" in Letta's wrapper, and, with ``parent_run_id`` (the agent's current run), the wait
        is refused with ``Deadlock`` if it would close a cycle of waits or nest deeper than
        ``Settings.max_depth``, before anything is stored. If ``timeout_s`` passes first the run goes on;
        for an agent's run its reply is then delivered to that agent as a new message.
        """
        timeout_s = check_timeout(timeout_s)
        run = await self._submit(target, message, sender=sender, parent_run_id=parent_run_id, waited=True,
                                 on_step=on_step)  # fmt: skip
        async with self._scheduler.lend_slot(parent_run_id):
            run = await self._await_run(run, timeout_s, on_step=on_step, cancel_on_abort=cancel_on_abort)
        if not run.done and parent_run_id is not None:
            [run] = await self._stop_waiting([run])
        return run

    async def send_async(
        self, target: str, message: str, *, sender: str | None = None, parent_run_id: str | None = None
    ) -> Run:
        """Send ``message`` to ``target`` and return the queued run at once.

        When the run ends (completed, failed, cancelled or interrupted) its reply is routed: to a sending
        agent as a new incoming message that it processes in a run of its own; to the host into the host
        inbox (``check_replies``), with a ``Change("inbox", run_id)`` on the change feed.
        """
        return await self._submit(target, message, sender=sender, parent_run_id=parent_run_id, waited=False,
                                  route_reply=True)  # fmt: skip

    # -- host inbox --------------------------------------------------------------------------------
    async def check_replies(self, *, limit: int = 50, mark_read: bool = True) -> list[Run]:
        """Finished runs the host sent with ``send_async`` whose replies it has not read, oldest first.

        With ``mark_read`` (default) they leave the inbox; ``get_run`` still returns them.
        """

        def take(conn: Conn) -> list[Run]:
            ids = replies_sql.unread_ids(conn, limit)
            runs = [run_sql.get_run(conn, run_id) for run_id in ids]
            if mark_read:
                replies_sql.mark_read(conn, ids)
            return runs

        return await (self.db.write(take) if mark_read else self.db.read(take))

    async def inbox_count(self) -> int:
        """How many replies wait in the host inbox."""
        return await self.db.read(replies_sql.unread_count)

    # -- broadcast ---------------------------------------------------------------------------------
    async def broadcast(
        self,
        message: str,
        *,
        match_all: Sequence[str] = (),
        match_some: Sequence[str] = (),
        sender: str | None = None,
        parent_run_id: str | None = None,
        timeout_s: float = 50.0,
        on_result: OnResult | None = None,
    ) -> list[BroadcastResult]:
        """Send ``message`` to every agent with all tags of ``match_all`` and one of ``match_some`` (Letta's
        rule: an empty list does not filter, so both empty means every agent), the sender excluded, all at
        once (at most ``Settings.fanout_concurrency`` unfinished at a time), and wait for the replies.

        One result per recipient, by name; ``on_result`` is awaited as each one finishes. After
        ``timeout_s`` the unfinished ones come back ``pending`` with their run ids (recipients not sent to
        yet are sent to then); for an agent sender their replies are routed to it as new messages. A
        recipient that would close a cycle of waits gets a failed result, not a deadlock.
        """
        timeout_s = check_timeout(timeout_s)
        _check_message(message)

        def recipients(conn: Conn) -> tuple[str | None, list[tuple[str, str]]]:
            sender_id = None if sender is None else agent_sql.resolve_agent_row(conn, sender)["id"]
            rows = agent_sql.matching_tags(conn, list(match_all), list(match_some))
            return sender_id, [(r["id"], r["name"]) for r in rows if r["id"] != sender_id]

        sender_id, targets = await self.db.read(recipients)
        names = dict(targets)
        results: dict[str, BroadcastResult] = {}
        sent: dict[str, Run] = {}
        feed = RunFeed(self._scheduler)

        def creator(agent_id: str) -> Callable[[Conn], Run]:
            return self._creator(agent_id, message, sender=sender_id, parent_run_id=parent_run_id, waited=True)

        def record(agent_id: str, made: Run | LettaError) -> BroadcastResult | None:
            """Follow a stored run; a refused one (a cycle, too deep, its agent deleted meanwhile) has its result."""
            if isinstance(made, LettaError):
                result = BroadcastResult(agent=names[agent_id], agent_id=agent_id, status="failed", error=made.message)
                results[agent_id] = result
                return result
            sent[agent_id] = made
            feed.add(made)
            return None

        async def submit(agent_id: str) -> BroadcastResult | None:
            # Shielded: at the deadline a run already stored must not be lost track of (and sent twice).
            with anyio.CancelScope(shield=True):
                try:
                    made: Run | LettaError = await self._scheduler.submit(creator(agent_id))
                except LettaError as exc:
                    made = exc
                return record(agent_id, made)

        async def report(result: BroadcastResult) -> None:
            if on_result is not None:
                await on_result(result)

        later = iter(targets[self.settings.fanout_concurrency :])

        async def send_next() -> None:
            """A freed slot goes to the next recipient (one refused reports at once and passes the slot on)."""
            for agent_id, _ in later:
                if (result := await submit(agent_id)) is None:
                    return
                await report(result)

        try:
            async with self._scheduler.lend_slot(parent_run_id):
                with anyio.move_on_after(timeout_s):
                    # The first wave (as many as may be unfinished at once) is stored and started in one
                    # transaction; the rest are sent one by one as the first ones finish.
                    wave = targets[: self.settings.fanout_concurrency]
                    role, text = input_of(message, sender_id)
                    previews = [Preview(agent_id, role, text) for agent_id, _ in wave]
                    made = await self._scheduler.submit_many([creator(agent_id) for agent_id, _ in wave], previews)
                    refused = [r for (agent_id, _), m in zip(wave, made, strict=True) if (r := record(agent_id, m))]
                    for result in refused:
                        await report(result)
                        await send_next()
                    while feed.waiting:
                        run = await feed.next()
                        result = BroadcastResult(agent=names[run.agent_id], agent_id=run.agent_id, **outcome(run))
                        results[run.agent_id] = result
                        await report(result)
                        await send_next()
        finally:
            feed.close()
        for agent_id, _ in targets:  # not sent by the deadline: sent now, and come back pending
            if agent_id not in results and agent_id not in sent:
                await submit(agent_id)
        unfinished = [run for agent_id, run in sent.items() if agent_id not in results]
        if parent_run_id is not None:
            unfinished = await self._stop_waiting(unfinished)
        elif unfinished:  # as they are now: some may have finished since the deadline
            unfinished = await self.db.read(lambda c: [run_sql.get_run(c, run.id) for run in unfinished])
        for run in unfinished:
            results[run.agent_id] = BroadcastResult(agent=run.agent_name, agent_id=run.agent_id, **outcome(run))
        return [results[agent_id] for agent_id, _ in targets]

    # -- pipelines ---------------------------------------------------------------------------------
    async def run_pipeline(
        self, stages: Sequence[str], message: str, *, timeout_s: float = 300.0, on_stage: OnStage | None = None
    ) -> PipelineResult:
        """Send ``message`` to the first stage's agent, each next stage the previous stage's reply (the
        seed's research -> write -> edit), from the host; every stage's output is in the result.

        Every stage reference is checked before anything is sent. ``timeout_s`` bounds the whole pipeline;
        it stops at the first stage that does not complete (its status is the pipeline's).
        """
        timeout_s = check_timeout(timeout_s)
        _check_message(message)
        if isinstance(stages, str) or not stages:
            raise Invalid("stages must be a non-empty list of agent names or ids, e.g. ['researcher', 'writer']")
        agents = await self.db.read(lambda c: [agent_sql.resolve_agent_row(c, s)["id"] for s in stages])
        deadline = anyio.current_time() + timeout_s
        done: list[StageResult] = []
        text = message
        for index, agent_id in enumerate(agents, start=1):
            run = await self.send_and_wait(agent_id, text, timeout_s=max(0.0, deadline - anyio.current_time()))
            stage = StageResult(agent=run.agent_name, **outcome(run))
            error = None
            if stage.status == "pending":
                error = (
                    f"stage {index} ({run.agent_name}) did not finish within the pipeline's {timeout_s:g}s; its run "
                    f"{run.id} goes on: get_run it later"
                )
            elif stage.status != "completed":
                error = f"stage {index} ({run.agent_name}) {stage.status}: {run.error or 'no error recorded'}"
            elif not (run.reply or "").strip() and index < len(agents):
                error = f"stage {index} ({run.agent_name}) replied with nothing, so the next stage has no input"
            done.append(stage)
            if on_stage is not None:
                await on_stage(stage)
            if error is not None:
                status = "failed" if stage.status == "completed" else stage.status
                return PipelineResult(stages=done, output=None, status=status, error=error)
            text = run.reply or ""
        return PipelineResult(stages=done, output=text, status="completed")

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

        def attach(conn: Conn) -> Agent:
            row = agent_sql.resolve_agent_row(conn, agent)
            agent_tools_sql.attach(conn, row, agent_sql.resolve_agent_row(conn, tool_agent))
            return self._check_tool_names(agent_sql.to_agent(conn, row))

        return await self.db.write(attach)

    async def detach_agent_tool(self, agent: str, tool_agent: str) -> Agent:
        """Stop offering ``ask_<tool_agent>`` to ``agent`` (an error if it was not attached)."""

        def detach(conn: Conn) -> Agent:
            row = agent_sql.resolve_agent_row(conn, agent)
            agent_tools_sql.detach(conn, row, agent_sql.resolve_agent_row(conn, tool_agent))
            return agent_sql.to_agent(conn, row)

        return await self.db.write(detach)

    # -- monitoring --------------------------------------------------------------------------------
    async def get_metrics(self, *, agent: str | None = None, since: datetime | None = None) -> Metrics:
        """Messages, errors, latency p50/p95 (sent to finished) and tokens, per receiving agent and per
        sender -> receiver pair ("host" for the host), slowest (p95) first; optionally only runs to or from
        ``agent`` and created at or after ``since``."""

        def compute(conn: Conn) -> Metrics:
            agent_id = None if agent is None else agent_sql.resolve_agent_row(conn, agent)["id"]
            return metrics_sql.compute(conn, agent_id=agent_id, since=since)

        return await self.db.read(compute)
