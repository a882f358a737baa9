"""One run of an agent: the letta_v1_agent step loop (context -> LLM -> tool calls -> persist) until a reply.

Starting a run is one transaction that also appends its input to the history and loads the context. A
step whose tools only touch the store is one transaction holding its messages, its tools' effects and its
record; the step that replies also completes the run. A step with tools that wait on other agents commits
its calls first, then each result as it comes (the step's record with the last), so nothing it did is
lost or done twice if its process stops meanwhile. The system message is rebuilt every step, so memory
edits (the agent's own, or another agent's on a shared block) are in the very next prompt.

A run is resumable from what is committed: a run whose process stopped is started again by the next
process (``Claimed`` with ``run.resumes`` > 0) from its last committed step. Its input is not appended
again; an LLM request that was in flight is simply sent again; a step whose calls were committed but not
all answered finishes those calls (a message it sent is found by its call id, not sent again).
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, TypeVar

from mcp_letta.config import Settings
from mcp_letta.errors import LLMUnavailable, StorageUnavailable
from mcp_letta.llm import ChatRequest, ChatResponse, LLMClient, LLMPool
from mcp_letta.models import Message, NewMessage, Run, RunStep, RunUsage, StepEvent, ToolCall
from mcp_letta.runtime.context import (
    DEFAULT_CONTEXT_WINDOW,
    KEEP_FRACTION,
    SUMMARIZE_AT,
    SUMMARY_SENDER,
    MemoryFacts,
    ShownMemory,
    Window,
    bounded_summary,
    chat_request,
    choose_eviction,
    compile_system,
    fixed_tokens,
    read_json_step,
    summary_alert,
    summary_request,
    tools_json,
)
from mcp_letta.runtime.toolbox import PreparedCall, Tool, Toolbox, ToolContext, ToolResult
from mcp_letta.store import AgentRecord, Claimed, ClaimOutcome, Owner, Store, ToolAgent, Tx

log = logging.getLogger("mcp_letta.runner")

WINDOW_CACHE_SIZE = 256  # agents whose in-context history this process keeps between runs
HOLLOW_REPLY_RETRIES = 2  # an empty or markup-only answer is asked again this often before the run fails
CORRECTION = {
    "role": "user",
    "content": "Your last answer was empty. Answer the message above in plain text, or call one of your tools.",
}
_MARKUP_ONLY = re.compile(r"(?:\s*</?[A-Za-z_][\w:-]*\s*/?>)*\s*")


TRANSIENT = ("unreachable", "busy")  # ``StorageUnavailable`` reasons that pass by themselves


def hollow(reply: str | None) -> bool:
    """Whether an answer says nothing: empty, blank, or only markup such as ``<tools></tools>``."""
    return _MARKUP_ONLY.fullmatch(reply or "") is not None


OnStep = Callable[[StepEvent], Awaitable[None]]
T = TypeVar("T")


class RunLost(Exception):
    """The run stopped being ours (its lease passed and another process interrupted it): stop quietly."""


class CancelRequested(Exception):
    """Someone asked to cancel the run (seen at a step boundary): nothing of this step is kept."""


class AgentDeleted(Exception):
    """The agent was deleted while its run was going: the run fails, nothing of this step is kept."""


@dataclass
class RunContext:
    """A run this process started, with what its steps need: the agent's settings and attached agents as
    read when it started, the system message of its next step, and its context window."""

    run: Run
    agent: AgentRecord
    tool_agents: list[ToolAgent]
    system: str
    window: Window
    more_queued: bool = False  # the agent had more queued runs when this one was claimed
    steps: list[RunStep] = field(default_factory=list)  # committed so far
    # Resumed inside a tool step: its stored calls, and the results of those answered before the stop.
    pending: Message | None = None
    answered: dict[str, ToolResult] = field(default_factory=dict)

    @property
    def context(self) -> ToolContext:
        """Who the run's tool calls act as."""
        return ToolContext(agent_id=self.run.agent_id, agent_name=self.run.agent_name, run_id=self.run.id)


ClaimResult = RunContext | Run | Literal["empty", "blocked"]


def unfinished_tool_step(window: list[Message], run_id: str) -> tuple[Message | None, dict[str, ToolResult]]:
    """The run's last step, if its calls were stored but not all answered (its process stopped while they
    ran): the assistant message holding the calls, and the results of the calls answered, by call id."""
    for i in range(len(window) - 1, -1, -1):
        message = window[i]
        if message.role != "assistant" or message.run_id != run_id:
            continue
        answered = {
            m.tool_call_id: ToolResult.from_llm(m.content)
            for m in window[i + 1 :]
            if m.role == "tool" and m.run_id == run_id and m.tool_call_id
        }
        if message.tool_calls and any(call.id not in answered for call in message.tool_calls):
            return message, answered
        return None, {}
    return None, {}


SAME_ASKS = 2  # how many times a run may make one call that asks another agent, same arguments


def repeated(prepared: PreparedCall, steps: list[RunStep], offered: dict[str, Tool]) -> PreparedCall:
    """The call, or a failed result in its place if an earlier step of the run made the same call (same tool,
    same arguments) and nothing changed since: the previous step, or one before it when every step after it
    only searched (``reads_only`` tools). Small models repeat a search that found nothing, or alternate two of
    them, until they run out of steps. The result above already answers it, so the model is told to use it
    instead. A call that asks another agent is made again, since that agent answers anew, but at most
    ``SAME_ASKS`` times in a run: small models otherwise ask the same question over and over."""
    if prepared.failure is not None:
        return prepared
    arguments = _arguments(prepared.call.arguments)

    def same(made: ToolCall) -> bool:
        return made.name == prepared.call.name and _arguments(made.arguments) == arguments

    if prepared.awaited:
        if sum(same(made) for step in steps for made in step.tool_calls) < SAME_ASKS:
            return prepared
        message = (
            f"Not called again: this run made this same call {SAME_ASKS} times already, and the answers are above. "
            "Use them: answer the message, or call a different tool."
        )
        return PreparedCall(prepared.call, failure=ToolResult(False, message))
    for back, step in enumerate(reversed(steps)):
        for made in step.tool_calls:
            if same(made):
                which = "your previous step" if back == 0 else "an earlier step of this run"
                message = (
                    f"Not called again: {which} called {made.name} with these same arguments, and its result is "
                    "above. Use that result: answer the message, or call a different tool."
                )
                return PreparedCall(prepared.call, failure=ToolResult(False, message))
        if not all(made.name in offered and offered[made.name].reads_only for made in step.tool_calls):
            break  # that step may have changed what the call would find
    return prepared


def _arguments(text: str) -> object:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return None


def tool_message(prepared: PreparedCall, result: ToolResult, run_id: str) -> NewMessage:
    """The history message carrying one call's result back to the LLM."""
    call = prepared.call
    return NewMessage(role="tool", content=result.for_llm(), name=call.name, tool_call_id=call.id, run_id=run_id)


def _now() -> datetime:
    return datetime.now(UTC)


def _usage(response: ChatResponse) -> RunUsage:
    return RunUsage(**response.usage.model_dump())


class Runner:
    """Starts and executes runs for one process; shared by every agent (it keeps no per-run state).

    It remembers the context window each agent ended its last run with, and reuses it when the store
    shows nobody changed that agent's history since (so a start does not reload the whole history), and
    each agent's system message with what it was compiled from (see ``_system``). Only write transactions
    touch that memory, and they run one at a time.
    """

    def __init__(self, store: Store, llm: LLMPool, toolbox: Toolbox, settings: Settings, owner: Owner):
        self.store = store
        self.llm = llm
        self.toolbox = toolbox
        self.settings = settings
        self.owner = owner
        self._windows: OrderedDict[str, Window] = OrderedDict()
        self._systems: OrderedDict[str, tuple[tuple[object, ...], str]] = OrderedDict()

    def _window(self, tx: Tx, agent_id: str, fingerprint: tuple[int, int]) -> Window:
        """The agent's window: the one this process kept, if the store's ``fingerprint`` says it is current."""
        cached = self._windows.pop(agent_id, None)
        if cached is not None and cached.fingerprint == fingerprint:
            return cached.copy()
        return Window(tx.in_context_messages(agent_id))

    def _system(self, agent: AgentRecord, shown: ShownMemory) -> str:
        """The agent's system message, compiled again only when its template or what its memory shows changed
        (blocks, archival passages and their tags), as Letta recompiles on memory edits. The clock and the
        growing recall count alone never change it, so from step to step and run to run the prompt begins with
        the same bytes, which a provider's prompt cache reuses (the tools and history follow it)."""
        basis = (agent.system, tuple(shown.blocks), shown.archival, tuple(shown.tags))
        kept = self._systems.pop(agent.id, None)
        system = (
            kept[1] if kept is not None and kept[0] == basis else compile_system(agent.system, shown.render(agent.id))
        )
        self._systems[agent.id] = (basis, system)
        while len(self._systems) > WINDOW_CACHE_SIZE:
            self._systems.popitem(last=False)
        return system

    def _keep_window(self, agent_id: str, window: Window) -> None:
        self._windows[agent_id] = window
        self._windows.move_to_end(agent_id)
        while len(self._windows) > WINDOW_CACHE_SIZE:
            self._windows.popitem(last=False)

    # -- claiming ----------------------------------------------------------------------------------
    def claim(self, tx: Tx, agent_ids: list[str]) -> list[ClaimResult]:
        """(In a write transaction.) Start each agent's next run: append its input, load its context. A resumed
        run (it had started in a process that stopped) has its input and committed steps stored already.

        Per agent: the ``RunContext``, "empty"/"blocked" (see ``Tx.claim_next``), or a ``Run`` that failed
        at once (its agent was deleted, or its context could not be loaded). What the starts read is read in
        one query each, however many agents start together.
        """
        outcomes: list[ClaimOutcome] = tx.claim_many(agent_ids, self.owner)
        started = [o.run.agent_id for o in outcomes if isinstance(o, Claimed)]
        if not started:
            return list(outcomes)  # type: ignore[arg-type]
        agents, fingerprints = tx.agent_records(started), tx.window_fingerprints(started)
        facts, tools = MemoryFacts.read(tx, started), tx.tool_agents(started)

        def start(claimed: Claimed) -> RunContext | Run:
            run = claimed.run
            agent = agents.get(run.agent_id)
            if agent is None:
                error = f"agent {run.agent_name!r} was deleted before this run started"
            else:
                try:
                    with tx.savepoint():
                        window = self._window(tx, agent.id, fingerprints[agent.id])
                        steps, pending, answered = [], None, {}
                        if run.resumes:
                            steps = tx.get_run(run.id).steps
                            pending, answered = unfinished_tool_step(window.messages, run.id)
                        else:
                            given = NewMessage(role=run.role, content=run.input, sender=run.sender, run_id=run.id)
                            window.add(tx.append_messages(agent.id, [given]))
                        system = self._system(agent, facts.shown(tx, agent.id))
                        return RunContext(
                            run, agent, tools[agent.id], system, window, claimed.more_queued, steps, pending, answered
                        )
                except Exception as exc:  # a run that cannot start must fail, not block its agent's queue
                    log.exception("could not start run %s of agent %s", run.id, run.agent_name)
                    error = f"internal error while starting the run: {type(exc).__name__}: {exc}"
            ended = tx.finish_run(run.id, status="failed", stop_reason="error", error=error)
            return ended if ended is not None else tx.get_run(run.id)

        return [start(o) if isinstance(o, Claimed) else o for o in outcomes]

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self, rc: RunContext, on_step: OnStep | None = None) -> Run:
        """Run the step loop to the end and return the finished run.

        Raises ``CancelRequested``, ``RunLost`` or ``StorageUnavailable`` for the scheduler, and lets
        cancellation through. On a ``StorageUnavailable`` that passes (the server out of reach or busy), or
        that leaves nothing writable, the run stays unfinished and is resumed from its last committed step
        once its lease passes; on any other (a full disk) it fails with the reason.
        """
        try:
            return await self._loop(rc, on_step)
        except LLMUnavailable as exc:
            return await self._finish(rc, "failed", error=str(exc), stop_reason="llm_api_error")
        except AgentDeleted as exc:
            return await self._finish(rc, "failed", error=str(exc), stop_reason="error")
        except (CancelRequested, RunLost):
            raise
        except StorageUnavailable as exc:
            if exc.reason in TRANSIENT:  # it answers again soon: the run resumes from its last step meanwhile
                raise
            error = f"the database refused this run's step: {exc}"  # (a full disk would refuse it again)
            return await self._finish(rc, "failed", error=error, stop_reason="error")
        except Exception as exc:  # a bug must fail this run, not the scheduler
            log.exception("run %s of agent %s failed", rc.run.id, rc.run.agent_name)
            error = f"internal error while running agent {rc.run.agent_name!r}: {type(exc).__name__}: {exc}"
            return await self._finish(rc, "failed", error=error, stop_reason="error")

    async def _loop(self, rc: RunContext, on_step: OnStep | None) -> Run:
        run, settings = rc.run, rc.agent.model_settings
        client, model = await self.llm.client_for_run(settings, run, self._parent_of)
        offered = self.toolbox.tools_for(run.agent_id, rc.agent.metadata, rc.tool_agents)
        tools_chars = len(tools_json(offered))
        window = settings.context_window or DEFAULT_CONTEXT_WINDOW
        for index in range(len(rc.steps), self.settings.max_steps):
            started, usage = _now(), RunUsage()
            stored, rc.pending = rc.pending, None
            if stored is not None:  # resumed inside this step: finish its stored calls, ask the LLM nothing
                content, calls = stored.content, stored.tool_calls
            else:
                if fixed_tokens(rc.system, tools_chars) > window:
                    return await self._finish(
                        rc, "failed", stop_reason="context_window_overflow_in_system_prompt",
                        error=f"agent {run.agent_name!r}'s system prompt, memory blocks and tools alone exceed "
                        f"its context window ({window} tokens): shorten its blocks or raise "
                        "model_settings.context_window",
                    )  # fmt: skip
                if rc.window.estimate(rc.system, tools_chars) > SUMMARIZE_AT * window:
                    usage = usage.plus(await self._summarize(rc, client, model, window))
                response, used = await self._answer(rc, client, model, offered, index)
                usage = usage.plus(used)
                if not response.tool_calls:
                    step = RunStep(index=index, usage=usage, started_at=started, finished_at=_now())
                    reply = response.content or ""
                    if hollow(reply):
                        return await self._finish(
                            rc, "failed", stop_reason="invalid_llm_response",
                            error=f"agent {run.agent_name!r}'s model answered with no text ({reply[:80]!r}), also "
                            f"when asked again {HOLLOW_REPLY_RETRIES} times: check the model (MCP_LETTA_MODEL) can "
                            "chat, or send the message again",
                        )  # fmt: skip
                    finished = await self.store.write(lambda tx: self._commit_reply(tx, rc, reply, step))  # noqa: B023
                    await self._emit(on_step, run, step)
                    return finished
                content, calls = response.content or "", response.tool_calls
            prepared = [self.toolbox.prepare(call, offered) for call in calls]
            if stored is None and rc.steps:
                prepared = [repeated(p, rc.steps, offered) for p in prepared]
            if stored is None and not any(p.awaited for p in prepared):
                step, added, rc.system = await self.store.write(
                    lambda tx: self._commit_tools(tx, rc, content, prepared, index, started, usage)  # noqa: B023
                )
                rc.window.add(added)
            else:
                step = await self._staged_tools(rc, content, prepared, index, started, usage, stored is not None)
            rc.steps.append(step)
            await self._emit(on_step, run, step)
        last_calls = ", ".join(call.name for call in rc.steps[-1].tool_calls) if rc.steps else ""
        error = (
            f"agent {run.agent_name!r} used all {self.settings.max_steps} steps of this run without a final reply "
            f"(its last step called {last_calls}): ask for less at once, or raise MCP_LETTA_MAX_STEPS"
        )
        return await self._finish(rc, "failed", error=error, stop_reason="max_steps")

    async def _parent_of(self, run_id: str) -> str | None:
        return (await self.store.read(lambda tx: tx.get_run(run_id))).parent_run_id

    async def _answer(
        self, rc: RunContext, client: LLMClient, model: str, offered: dict[str, Tool], index: int
    ) -> tuple[ChatResponse, RunUsage]:
        """The model's answer for step ``index`` and the tokens it took: asked again with a short correction
        (at most ``HOLLOW_REPLY_RETRIES`` times) while it says nothing.

        The tools are offered natively, or in JSON tool mode through a schema (``tool_mode`` json, or auto once
        the endpoint's model printed a call as text). In JSON mode the first step must call a tool: a small
        model otherwise answers at once from what it sees, without saving what it was told or asking the
        agent who knows.
        """
        settings = rc.agent.model_settings
        mode = settings.tool_mode or self.settings.tool_mode
        json_mode = mode == "json" or (mode == "auto" and client.prints_calls)
        usage = RunUsage()
        for attempt in range(1 + HOLLOW_REPLY_RETRIES):
            request = chat_request(
                model, settings, rc.window, rc.system, offered, json_mode=json_mode,
                must_call=json_mode and index == 0 and attempt == 0, then=[CORRECTION] if attempt else (),
            )  # fmt: skip
            response = await client.chat(request)
            if request.response_format is not None:
                response = read_json_step(response)
            usage = usage.plus(_usage(response))
            if response.tool_calls or not hollow(response.content):
                break
            log.info("agent %s answered %r; asking again", rc.run.agent_name, response.content)
        return response, usage

    async def _staged_tools(
        self, rc: RunContext, content: str, prepared: list[PreparedCall], index: int, started: datetime,
        usage: RunUsage, resumed: bool,
    ) -> RunStep:  # fmt: skip
        """A step with calls that wait on other agents: the calls are committed first, then each result as it
        comes (a store-only call with its effects), the step's record with the last result. ``resumed``: the
        calls were committed by a process that stopped; those it answered (``rc.answered``) are not run
        again, and a call that sent a message finds that run again by its ``call_id``."""
        run = rc.run
        answered = rc.answered if resumed else {}
        rc.answered = {}
        added: list[Message] = []
        if not resumed:
            added += await self.store.write(lambda tx: self._commit_calls(tx, rc, content, [p.call for p in prepared]))
        results: list[ToolResult] = []
        record: tuple[RunStep, str] | None = None
        for position, p in enumerate(prepared):
            if p.call.id in answered:
                results.append(answered[p.call.id])
                continue
            ctx = replace(rc.context, call_id=f"{index}.{position}")
            awaited = await self.toolbox.run_awaited(p, ctx) if p.awaited else None
            last = position == len(prepared) - 1

            def commit(tx: Tx, p: PreparedCall = p, ctx: ToolContext = ctx, awaited: ToolResult | None = awaited,
                       last: bool = last) -> tuple[ToolResult, list[Message], tuple[RunStep, str] | None]:  # fmt: skip
                self._check(tx, rc)
                result = awaited if awaited is not None else self.toolbox.run_in_transaction(tx, p, ctx)
                stored = tx.append_messages(run.agent_id, [tool_message(p, result, run.id)])
                done = [*results, result]
                return (
                    result,
                    stored,
                    (self._record_step(tx, rc, prepared, done, index, started, usage) if last else None),
                )

            result, stored, record = await self.store.write(commit)
            results.append(result)
            added += stored
        if record is None:  # every call had been answered: only the step's record is missing
            record = await self.store.write(
                lambda tx: self._record_step(tx, rc, prepared, results, index, started, usage, check=True)
            )
        step, rc.system = record
        if resumed:  # the window holds part of this step: a call and its result must be added together
            rc.window = await self.store.read(lambda tx: Window(tx.in_context_messages(run.agent_id)))
        else:
            rc.window.add(added)
        return step

    @staticmethod
    async def _emit(on_step: OnStep | None, run: Run, step: RunStep) -> None:
        if on_step is not None:
            await on_step(StepEvent(run_id=run.id, agent_id=run.agent_id, agent_name=run.agent_name, step=step))

    # -- transactions ------------------------------------------------------------------------------
    def _check(self, tx: Tx, rc: RunContext) -> None:
        """Before a step commits: the run must still be ours, not cancelled, and its agent must exist."""
        state = tx.run_state(rc.run.id, self.owner)
        if state == "cancel":
            raise CancelRequested(rc.run.id)
        if state == "lost":
            raise RunLost(rc.run.id)
        if state == "no_agent":
            raise AgentDeleted(f"agent {rc.run.agent_name!r} was deleted while this run was going")

    def _system_now(self, tx: Tx, rc: RunContext) -> str:
        """The system message for the run's next step: the agent's template and memory as stored now (its
        tools may have edited memory)."""
        agent = tx.agent_records([rc.run.agent_id]).get(rc.run.agent_id)
        if agent is None:
            raise AgentDeleted(f"agent {rc.run.agent_name!r} was deleted while this run was going")
        return self._system(agent, MemoryFacts.read(tx, [agent.id]).shown(tx, agent.id))

    def _commit_reply(self, tx: Tx, rc: RunContext, reply: str, step: RunStep) -> Run:
        run = rc.run
        self._check(tx, rc)
        added = tx.append_messages(run.agent_id, [NewMessage(role="assistant", content=reply, run_id=run.id)])
        tx.add_step(run.id, step, count_usage=False)
        ended = tx.finish_run(run.id, status="completed", reply=reply, stop_reason="end_turn", add_usage=step.usage)
        assert ended is not None  # _check saw it running: it ends here
        rc.window.add(added)
        self._keep_window(run.agent_id, rc.window)  # were the commit to fail, the fingerprint would not match
        return ended.model_copy(update={"steps": [*rc.steps, step]})

    def _commit_calls(self, tx: Tx, rc: RunContext, content: str, calls: list[ToolCall]) -> list[Message]:
        """Store the LLM's tool calls of a staged step before any of them runs."""
        self._check(tx, rc)
        return tx.append_messages(
            rc.run.agent_id, [NewMessage(role="assistant", content=content, tool_calls=calls, run_id=rc.run.id)]
        )

    def _record_step(
        self, tx: Tx, rc: RunContext, prepared: list[PreparedCall], results: list[ToolResult], index: int,
        started: datetime, usage: RunUsage, *, check: bool = False,
    ) -> tuple[RunStep, str]:  # fmt: skip
        """Record a staged step once all its calls are answered; the step and the next prompt."""
        if check:
            self._check(tx, rc)
        step = RunStep(
            index=index,
            tool_calls=[result.record(p.call) for p, result in zip(prepared, results, strict=True)],
            usage=usage,
            started_at=started,
            finished_at=_now(),
        )
        tx.add_step(rc.run.id, step)
        return step, self._system_now(tx, rc)

    def _commit_tools(
        self,
        tx: Tx,
        rc: RunContext,
        content: str,
        prepared: list[PreparedCall],
        index: int,
        started: datetime,
        usage: RunUsage,
    ) -> tuple[RunStep, list[Message], str]:
        """Run the step's store-only tools and commit them with its messages and record; the next prompt."""
        run, ctx = rc.run, rc.context
        self._check(tx, rc)
        results = [self.toolbox.run_in_transaction(tx, p, ctx) for p in prepared]
        new = [NewMessage(role="assistant", content=content, tool_calls=[p.call for p in prepared], run_id=run.id)]
        new += [tool_message(p, result, run.id) for p, result in zip(prepared, results, strict=True)]
        added = tx.append_messages(run.agent_id, new)
        step = RunStep(
            index=index,
            tool_calls=[result.record(p.call) for p, result in zip(prepared, results, strict=True)],
            usage=usage,
            started_at=started,
            finished_at=_now(),
        )
        tx.add_step(run.id, step)
        return step, added, self._system_now(tx, rc)

    async def _finish(self, rc: RunContext, status: str, *, error: str, stop_reason: str) -> Run:
        def finish(tx: Tx) -> Run:
            ended = tx.finish_run(rc.run.id, status=status, error=error, stop_reason=stop_reason, owner=self.owner)
            if ended is not None:
                return ended.model_copy(update={"steps": rc.steps})
            run = tx.get_run(rc.run.id)
            if not run.done:  # taken over (its lease passed while this process could not renew it)
                raise RunLost(rc.run.id)
            return run

        return await self.store.write(finish)

    # -- summarization -----------------------------------------------------------------------------
    async def _summarize(self, rc: RunContext, client: LLMClient, model: str, window: int) -> RunUsage:
        """Summarize the window's oldest messages into one system_alert message; they stay in recall."""
        ordered = rc.window.messages
        cut = choose_eviction(ordered, int(KEEP_FRACTION * window))
        if cut == 0:
            return RunUsage()
        evicted, kept = ordered[:cut], ordered[cut:]
        response = await client.chat(ChatRequest(model=model, messages=summary_request(evicted, window)))
        summary = bounded_summary((response.content or "").strip() or "(the summarizer returned no text)", window)
        run = rc.run

        def commit(tx: Tx) -> tuple[Message, str]:
            self._check(tx, rc)
            tx.take_out_of_context(run.agent_id, [m.seq for m in evicted])
            hidden = tx.recall_counts([run.agent_id])[run.agent_id]
            alert = NewMessage(
                role="user", content=summary_alert(hidden, summary), sender=SUMMARY_SENDER, run_id=run.id
            )
            [message] = tx.append_messages(run.agent_id, [alert])
            return message, self._system_now(tx, rc)

        message, rc.system = await self.store.write(commit)
        rc.window = Window([message, *kept])
        log.info("agent %s: summarized %d messages out of its context window", run.agent_name, len(evicted))
        return _usage(response)
