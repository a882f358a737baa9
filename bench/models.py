"""Real models: how well agents work against a real OpenAI-compatible endpoint, scenario by scenario.

    python -m bench models --base-url http://127.0.0.1:18600/v1 --model qwen2.5-coder-1.5b [--trials 5]

Each scenario runs ``--trials`` times, every trial with fresh agents in a fresh database, through
``AgentHub`` as a host would use it. Success is judged by checks on the store and the replies, never by
another model:

- ``remember``: "My name is Ada ... remember that", then in a new message "What is my name?": the ``human``
  block holds Ada and the second reply says Ada.
- ``archival``: save a fact to archival memory, then in a new message ask for it: a passage holds it and
  the reply says it.
- ``delegate``: an orchestrator with Letta's multi-agent tools is asked a question only a researcher's memory
  answers: the orchestrator sent the researcher a message and its reply carries the answer.
- ``ask``: the same question, with the researcher attached to the orchestrator as its tool ``ask_researcher``
  (``attach_agent_tool``), whose description says what the researcher knows: the researcher was asked and the
  reply carries the answer.
- ``pipeline``: research -> write -> edit with ``run_pipeline``: completed with a non-empty final text.
- ``broadcast``: a supervisor asks every agent tagged ``worker`` for its status and sums up: each worker got
  a message from it and its reply names at least two of the workers' status words.

Printed per scenario: successes out of trials, LLM steps per trial, wall time per trial, prompt tokens and the
share of them the server reused from its prompt cache (from the second step of a run on, where a stable
prefix should be reused), and replies that were tool calls printed as text (these must never reach a user).
Beside the server's figure, "same prefix" is the share of each later step's prompt (tools and messages as
sent, in characters) that begins exactly like an earlier prompt of the trial: what a prompt cache could
reuse at best, whatever the server's slots and eviction did.
Works against llama.cpp (``llama-server --jinja``), Ollama (``http://127.0.0.1:11434/v1``), vLLM, LM Studio
or OpenAI (``--api-key`` or ``OPENAI_API_KEY``). ``--tool-mode`` picks native, json or auto (the default).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from bench.common import environment, log, write_results
from mcp_letta import AgentHub, Settings
from mcp_letta.llm import ChatRequest, ChatResponse
from mcp_letta.models import Run

TRIAL_WAIT_S = 1800.0  # a small model on two cores takes 10-40 s a step, more on a busy machine
SCENARIOS = ("remember", "archival", "delegate", "ask", "pipeline", "broadcast")
# A reply that is a tool call printed as text: JSON naming a tool, or a <tool_call> tag.
PRINTED_CALL = re.compile(r'(\{\s*"(name|tool|function)"\s*:)|(<tool_call>)|(^\s*\{\{)', re.MULTILINE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``models`` subcommand's options."""
    parser.add_argument(
        "--base-url", required=True, help="the OpenAI-compatible endpoint, e.g. http://127.0.0.1:18600/v1"
    )
    parser.add_argument("--model", required=True, help="the model name the endpoint serves")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="if the endpoint needs one")
    parser.add_argument("--trials", type=int, default=5, help="trials per scenario, each with fresh agents (5)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--tool-mode", choices=("native", "json", "auto"), default="auto")
    parser.add_argument(
        "--parallel", type=int, default=1, help="trials run at once (a server with several slots answers them together)"
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep each trial's database in DIR, to read the conversations after"
    )


@dataclass
class Calls:
    """Every LLM call of a trial: whether it was a later step of a run, its prompt and cached tokens."""

    later_step: list[bool] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)  # each prompt's length, tools and messages as sent
    same_prefix: list[int] = field(default_factory=list)  # how many of them begin like an earlier prompt
    sent: list[str] = field(default_factory=list)

    def add(self, request: ChatRequest, response: ChatResponse) -> None:
        """Note an answered call: its usage, its prompt's length and the longest beginning it shares with an
        earlier prompt of the trial."""
        text = (request.tools_json or "") + (request.messages_json or json.dumps(request.messages))
        self.later_step.append(request.messages[-1].get("role") == "tool")  # after a tool result: step 2+
        self.prompt.append(response.usage.prompt_tokens)
        self.cached.append(getattr(response.usage, "cached_tokens", 0))  # (older builds do not read it)
        self.chars.append(len(text))
        self.same_prefix.append(max((shared_start(text, earlier) for earlier in self.sent), default=0))
        self.sent.append(text)


def shared_start(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` have in common from their start."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def record_calls(hub: AgentHub, calls: Calls) -> None:
    """Wrap the hub's LLM client so every call's usage lands in ``calls``."""
    client, _ = hub._llm.client_for(None)
    original = client.chat

    async def chat(request: ChatRequest) -> ChatResponse:
        response = await original(request)
        calls.add(request, response)
        return response

    client.chat = chat  # type: ignore[method-assign]


@dataclass
class Trial:
    """One trial's outcome."""

    ok: bool
    why: str
    seconds: float
    calls: Calls
    printed_replies: int


def printed(runs: list[Run]) -> int:
    """How many replies were tool calls printed as text."""
    return sum(1 for run in runs if run.reply and PRINTED_CALL.search(run.reply))


async def send(hub: AgentHub, agent: str, message: str) -> Run:
    """One message, waited for."""
    return await hub.send_message(agent, message, wait_s=TRIAL_WAIT_S)


# -- scenarios: each returns (success, why, the runs whose replies a user would read) ---------------------------
async def remember(hub: AgentHub) -> tuple[bool, str, list[Run]]:
    """Remember a fact about the user, then recall it in a new message."""
    await hub.create_agent("companion", persona="I am a helpful assistant who remembers what users tell me.")
    first = await send(hub, "companion", "My name is Ada and I live in Lisbon. Please remember that.")
    second = await send(hub, "companion", "What is my name?")
    human = (await hub.read_block("human", agent="companion")).value
    ok = bool(re.search(r"\bada\b", human, re.IGNORECASE) and re.search(r"\bada\b", second.reply or "", re.IGNORECASE))
    return ok, f"human block {human[:60]!r}; reply {(second.reply or '')[:60]!r}", [first, second]


async def archival(hub: AgentHub) -> tuple[bool, str, list[Run]]:
    """Save a fact to archival memory, then find it in a new message."""
    await hub.create_agent("archivist", persona="I keep facts in my archival memory and search it when asked.")
    first = await send(hub, "archivist", "Save this fact in your archival memory: the launch code is tulip-42.")
    second = await send(hub, "archivist", "Search your archival memory: what is the launch code?")
    passages = await hub.archival_list("archivist")
    stored = any("tulip" in p.text.lower() for p in passages)
    ok = stored and "tulip" in (second.reply or "").lower()
    return ok, f"{len(passages)} passage(s), stored={stored}; reply {(second.reply or '')[:60]!r}", [first, second]


async def delegate(hub: AgentHub) -> tuple[bool, str, list[Run]]:
    """An orchestrator asks a researcher, whose memory alone holds the answer, and uses it."""
    await hub.create_agent(
        "researcher", persona="I am the researcher. I know that the project's codename is BLUEBIRD.",
        description="knows the project's codename",
    )  # fmt: skip
    await hub.create_agent(
        "orchestrator", persona="I coordinate a team. The agent 'researcher' knows facts about the project.",
        include_multi_agent_tools=True,
    )  # fmt: skip
    run = await send(hub, "orchestrator", "What is the project's codename? Find out and tell me.")
    asked = [r for r in await hub.list_runs("researcher", limit=20) if r.sender is not None]
    ok = bool(asked) and "bluebird" in (run.reply or "").lower()
    return ok, f"researcher asked {len(asked)} time(s); reply {(run.reply or '')[:60]!r}", [run]


async def ask(hub: AgentHub) -> tuple[bool, str, list[Run]]:
    """The orchestrator asks the researcher through the tool the researcher is attached as."""
    await hub.create_agent(
        "researcher", persona="I am the researcher. I know that the project's codename is BLUEBIRD.",
        description="knows the project's codename",
    )  # fmt: skip
    await hub.create_agent(
        "orchestrator", persona="I coordinate a team. The agent 'researcher' knows facts about the project."
    )
    await hub.attach_agent_tool("orchestrator", "researcher")
    run = await send(hub, "orchestrator", "What is the project's codename? Find out and tell me.")
    asked = [r for r in await hub.list_runs("researcher", limit=20) if r.sender is not None]
    ok = bool(asked) and "bluebird" in (run.reply or "").lower()
    return ok, f"researcher asked {len(asked)} time(s); reply {(run.reply or '')[:60]!r}", [run]


async def pipeline(hub: AgentHub) -> tuple[bool, str, list[Run]]:
    """Research -> write -> edit: a non-empty final text."""
    for name, persona in (
        ("research", "I research a topic and answer with three short factual notes."),
        ("write", "I turn notes into one short paragraph."),
        ("edit", "I edit a paragraph for clarity and answer with the edited paragraph only."),
    ):
        await hub.create_agent(name, persona=persona)
    result = await hub.run_pipeline(["research", "write", "edit"], "why the sky is blue", wait_s=TRIAL_WAIT_S)
    runs = [await hub.get_run(s.run_id) for s in result.stages if s.run_id]
    ok = result.status == "completed" and bool((result.output or "").strip())
    return ok, f"{result.status}: {(result.output or result.error or '')[:60]!r}", runs


async def broadcast(hub: AgentHub) -> tuple[bool, str, list[Run]]:
    """A supervisor asks every worker for its status through a tag broadcast and sums up."""
    words = {"alpha": "testing", "beta": "deploying", "gamma": "debugging"}
    for name, word in words.items():
        await hub.create_agent(
            f"worker_{name}", persona=f"I am worker {name}. My current status: {word}.", tags=["worker"]
        )
    await hub.create_agent(
        "supervisor", persona="I supervise the agents tagged 'worker' and summarise their status.",
        include_multi_agent_tools=True,
    )  # fmt: skip
    run = await send(hub, "supervisor", "Ask all agents tagged 'worker' for their status, then summarise it for me.")
    reached = [w for w in words if any(r.sender for r in await hub.list_runs(f"worker_{w}", limit=10))]
    named = [word for word in words.values() if word in (run.reply or "").lower()]
    ok = len(reached) == len(words) and len(named) >= 2
    return ok, f"workers reached {len(reached)}/3; status words in reply {named}", [run]


SCENARIO_FUNCTIONS: dict[str, Callable[[AgentHub], Awaitable[tuple[bool, str, list[Run]]]]] = {
    "remember": remember, "archival": archival, "delegate": delegate, "ask": ask, "pipeline": pipeline,
    "broadcast": broadcast,
}  # fmt: skip


async def trial(name: str, settings: Settings) -> Trial:
    """One trial of a scenario in a fresh database."""
    calls = Calls()
    start = time.perf_counter()
    async with AgentHub(settings) as hub:
        record_calls(hub, calls)
        try:
            ok, why, runs = await SCENARIO_FUNCTIONS[name](hub)
        except Exception as exc:  # a scenario that breaks counts as a failure, with the reason
            ok, why, runs = False, f"{type(exc).__name__}: {exc}", []
    return Trial(ok, why, time.perf_counter() - start, calls, printed(runs))


async def run_all(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Every chosen scenario, ``args.trials`` times each, ``args.parallel`` trials at a time."""
    runs: dict[str, list[Trial]] = {name: [] for name in args.scenarios}
    limiter = anyio.CapacityLimiter(args.parallel)

    async def one(name: str, index: int) -> None:
        options = {"tool_mode": args.tool_mode} if hasattr(Settings, "tool_mode") else {}  # older builds: none
        settings = Settings.from_env().with_overrides(
            db_path=folder / f"{name}-{index}.db", llm_base_url=args.base_url, model=args.model,
            llm_api_key=args.api_key, llm_timeout_s=TRIAL_WAIT_S, agent_wait_s=TRIAL_WAIT_S, log_level="WARNING",
            **options,
        )  # fmt: skip
        async with limiter:
            done = await trial(name, settings)
        verdict = "ok" if done.ok else "FAILED"
        log(f"  {name} {index + 1}/{args.trials}: {verdict} in {done.seconds:.0f} s ({done.why})")
        runs[name].append(done)

    async with anyio.create_task_group() as tg:
        for name in args.scenarios:
            for index in range(args.trials):
                tg.start_soon(one, name, index)
    out: dict[str, Any] = {}
    for name, trials in runs.items():
        later = [
            (p, c)
            for t in trials
            for p, c, s in zip(t.calls.prompt, t.calls.cached, t.calls.later_step, strict=True)
            if s
        ]
        later_chars = [
            (n, same)
            for t in trials
            for n, same, s in zip(t.calls.chars, t.calls.same_prefix, t.calls.later_step, strict=True)
            if s
        ]
        out[name] = {
            "successes": sum(t.ok for t in trials), "trials": len(trials),
            "steps_per_trial": statistics.mean(len(t.calls.prompt) for t in trials),
            "seconds_per_trial": statistics.mean(t.seconds for t in trials),
            "prompt_tokens": sum(sum(t.calls.prompt) for t in trials),
            "cached_tokens": sum(sum(t.calls.cached) for t in trials),
            "later_step_prompt_tokens": sum(p for p, _ in later), "later_step_cached_tokens": sum(c for _, c in later),
            "later_step_chars": sum(n for n, _ in later_chars),
            "later_step_same_prefix_chars": sum(s for _, s in later_chars),
            "printed_replies": sum(t.printed_replies for t in trials), "why": [t.why for t in trials],
        }  # fmt: skip
    return out


def render(result: dict[str, Any]) -> str:
    """One line per scenario."""
    header = ("scenario", "success", "steps", "wall s", "prompt tok", "cached", "cached, step 2+")
    rows = [(*header, "same prefix, step 2+", "printed replies")]
    for name, r in result.items():
        later = r["later_step_prompt_tokens"]
        share = f"{r['later_step_cached_tokens'] / later:.0%}" if later else "-"
        chars = r["later_step_chars"]
        same = f"{r['later_step_same_prefix_chars'] / chars:.0%}" if chars else "-"
        rows.append((
            name, f"{r['successes']}/{r['trials']}", f"{r['steps_per_trial']:.1f}", f"{r['seconds_per_trial']:.0f}",
            str(r["prompt_tokens"]), str(r["cached_tokens"]), share, same,
            str(r["printed_replies"]),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main(args: argparse.Namespace) -> int:
    """Run the scenarios, print the table, write bench/results/models.json."""
    started = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = anyio.run(run_all, args, args.keep)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = anyio.run(run_all, args, Path(folder))
    print(f"{args.model} at {args.base_url}, tool mode {args.tool_mode}, {args.trials} trial(s) per scenario\n")
    print(render(result))
    payload = {
        "benchmark": "models", "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(), "model": args.model, "base_url": args.base_url, "tool_mode": args.tool_mode,
        "elapsed_s": time.perf_counter() - started, "scenarios": result,
    }  # fmt: skip
    print(f"written to {write_results('models', json.loads(json.dumps(payload, default=str)))}")
    return 0
