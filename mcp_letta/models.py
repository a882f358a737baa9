"""Pydantic models for everything mcp-letta stores and returns: agents, blocks, passages, messages, runs.

These are the shapes of the Python API and of the MCP tools' structured output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_BLOCK_LIMIT = 5000
T = TypeVar("T")
ToolMode = Literal["native", "json", "auto"]
TOOL_MODES: tuple[ToolMode, ...] = ("native", "json", "auto")

HUMAN_DESCRIPTION = (
    "The human block: Stores key details about the person you are conversing with, allowing for more "
    "personalized and friend-like conversation."
)
PERSONA_DESCRIPTION = (
    "The persona block: Stores details about your current persona, guiding how you behave and respond. "
    "This helps you to maintain consistency and personality in your interactions."
)


LETTA_TIME_FORMAT = "%Y-%m-%d %I:%M:%S %p UTC%z"  # how agents are shown times, e.g. 2026-11-21 07:30:19 PM UTC+0000


def read_moment(text: str) -> datetime:
    """A date or time a model passed: ISO 8601 (``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM``, ...) or the format agents
    are shown times in (small models copy it). Naive times are UTC. Raises ``ValueError``."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = datetime.strptime(text, LETTA_TIME_FORMAT)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Model(BaseModel):
    """Base for our models: unknown fields are refused, so typos in input fail loudly."""

    model_config = ConfigDict(extra="forbid")


class ModelSettings(Model):
    """Per-agent LLM settings, like Letta's ``llm_config``; unset fields fall back to the process defaults."""

    model: str | None = None
    base_url: str | None = None
    context_window: int | None = Field(default=None, ge=256)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    tool_mode: ToolMode | None = Field(
        default=None,
        description="how the model calls tools: 'native' (OpenAI tool_calls), 'json' (a JSON-schema constrained "
        "answer, for small local models) or 'auto' (native until the model prints its calls, then json)",
    )


class BlockSpec(Model):
    """A memory block to create: a label, its value and how it may be edited."""

    label: str
    value: str = ""
    limit: int = Field(default=DEFAULT_BLOCK_LIMIT, ge=1)
    description: str | None = None
    read_only: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class Block(Model):
    """A labelled piece of core memory. Attached to any number of agents; every write bumps ``version``."""

    id: str
    label: str
    value: str
    limit: int
    description: str | None = None
    read_only: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None
    agents: list[str] = Field(default_factory=list, description="names of the agents the block is attached to")


class BlockChange(Model):
    """One write to a block, as kept in its history."""

    block_id: str
    version: int
    writer: str | None
    op: str
    old_value: str | None
    new_value: str
    at: datetime


class AgentTool(Model):
    """Another agent attached to this one as a callable tool (``ask_<name>``)."""

    agent_id: str
    name: str


class Agent(Model):
    """A stateful agent: system prompt, core memory blocks, tags and model settings."""

    id: str
    name: str
    description: str | None = None
    system: str
    agent_type: str = "letta_v1_agent"
    tags: list[str] = Field(default_factory=list)
    model_settings: ModelSettings = Field(default_factory=ModelSettings)
    metadata: dict[str, Any] = Field(default_factory=dict)
    blocks: list[Block] = Field(default_factory=list)
    agent_tools: list[AgentTool] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


class Passage(Model):
    """One archival memory entry of an agent."""

    id: str
    agent_id: str
    text: str
    tags: list[str] = Field(default_factory=list)
    created_at: datetime
    score: float | None = Field(default=None, description="BM25 relevance (higher is better) in searches")


Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(Model):
    """A tool call requested by the LLM."""

    id: str
    name: str
    arguments: str = Field(description="the arguments as a JSON string, exactly as the LLM produced them")


class Message(Model):
    """One message of an agent's history (recall memory). Every message is kept forever."""

    id: str
    agent_id: str
    seq: int
    role: Role
    content: str
    name: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    run_id: str | None = None
    sender: str | None = None
    in_context: bool = True
    created_at: datetime


class NewMessage(Model):
    """A message to append to an agent's history."""

    role: Role
    content: str
    name: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    run_id: str | None = None
    sender: str | None = None
    in_context: bool = True


# -- runs ------------------------------------------------------------------------------------------
RunStatus = Literal["queued", "running", "completed", "failed", "cancelled", "interrupted"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "interrupted"})


class RunUsage(Model):
    """Tokens used, as reported by the LLM server (zero when it reported none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = Field(default=0, description="prompt tokens the LLM server reused from its prompt cache")

    def plus(self, other: RunUsage) -> RunUsage:
        """The sum of two usages."""
        return RunUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )


class ToolCallRecord(Model):
    """One tool call an agent made in a step, and whether it succeeded."""

    name: str
    arguments: str = Field(description="the arguments as a JSON string, as the LLM produced them")
    ok: bool
    result_preview: str = Field(description="the start of what the tool returned to the agent")


class RunStep(Model):
    """One LLM call of a run and the tool calls it asked for (none in the step that replied)."""

    index: int
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    usage: RunUsage = Field(default_factory=RunUsage)
    started_at: datetime
    finished_at: datetime


class Run(Model):
    """One message sent to an agent and everything it did about it; the unit the scheduler executes.

    ``status`` goes queued -> running -> completed | failed | cancelled | interrupted; a running run whose
    process stopped goes back to queued and is resumed from its last committed step (``resumes`` counts
    that), interrupted only when it cannot be (the reason in ``error``). ``stop_reason`` uses
    Letta's names: end_turn, max_steps, error, llm_api_error, cancelled, interrupted,
    context_window_overflow_in_system_prompt.
    """

    id: str
    agent_id: str
    agent_name: str
    status: RunStatus
    input: str
    role: Literal["user", "system"] = "user"
    sender: str | None = Field(default=None, description="who sent the input: None for the host/API, or an agent id")
    parent_run_id: str | None = Field(default=None, description="the run that sent this message, if any")
    depth: int = Field(default=0, description="synchronous waits above this run (0: sent by the host, or async)")
    reply_to: str | None = Field(
        default=None,
        description="where the reply goes when the run ends: 'host' (the host inbox, see check_replies), an "
        "agent id (delivered to that agent as a new message), or None (fetch it with get_run)",
    )
    resumes: int = Field(
        default=0,
        description="times the run was resumed from its last committed step after its process stopped",
    )
    steps: list[RunStep] = Field(default_factory=list)
    reply: str | None = None
    error: str | None = None
    stop_reason: str | None = None
    usage: RunUsage = Field(default_factory=RunUsage)
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        """Whether the run has reached a final status."""
        return self.status in TERMINAL_STATUSES


class StepEvent(Model):
    """Progress of a run: sent to ``on_step`` callbacks each time a step completes."""

    run_id: str
    agent_id: str
    agent_name: str
    step: RunStep


# -- multi-agent -----------------------------------------------------------------------------------
OutcomeStatus = Literal["completed", "failed", "cancelled", "interrupted", "pending"]


class BroadcastResult(Model):
    """What one recipient of a broadcast did: its reply, its error, or ``pending`` with the run to fetch later."""

    agent: str = Field(description="the recipient's name")
    agent_id: str
    run_id: str | None = Field(default=None, description="None only when the message was refused before sending")
    status: OutcomeStatus
    reply: str | None = None
    error: str | None = None
    latency_ms: float | None = Field(default=None, description="from sending to the reply; None while pending")


class StageResult(Model):
    """One stage of a pipeline: the agent, its run and what it replied."""

    agent: str
    run_id: str | None = None
    status: OutcomeStatus
    reply: str | None = None
    error: str | None = None
    latency_ms: float | None = None


class PipelineResult(Model):
    """A pipeline's stages in order (up to the first that did not complete) and the last stage's reply."""

    stages: list[StageResult] = Field(default_factory=list)
    output: str | None = Field(default=None, description="the last stage's reply when every stage completed")
    status: OutcomeStatus = Field(description="'completed', or the status of the stage that stopped the pipeline")
    error: str | None = Field(default=None, description="why the pipeline stopped early, naming the stage")


class AgentMetrics(Model):
    """Messages one agent received: how many, how many failed, and how long they took (sent to finished)."""

    agent: str
    agent_id: str
    messages: int
    errors: int = Field(description="runs that failed or were interrupted")
    pending: int = Field(description="runs still queued or running")
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    tokens: int
    cached_tokens: int = Field(default=0, description="of the prompt tokens, those the LLM server had cached")


class PairMetrics(Model):
    """Messages from one sender ('host' for the host) to one receiving agent."""

    sender: str
    receiver: str
    messages: int
    errors: int
    pending: int
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    tokens: int
    cached_tokens: int = Field(default=0, description="of the prompt tokens, those the LLM server had cached")


class ContextWindow(Model):
    """What an agent's LLM would be sent now, section by section, with token estimates (four characters a
    token, as the runtime estimates them) against its context window."""

    agent_id: str
    agent_name: str
    context_window: int = Field(description="the window in tokens (model_settings.context_window or the default)")
    summarize_at: int = Field(description="the estimate above which the oldest messages are summarised")
    system: str = Field(description="the agent's own system prompt, without memory")
    system_tokens: int
    memory: str = Field(description="core memory as the prompt renders it (blocks and memory metadata)")
    memory_tokens: int
    blocks: list[Block] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list, description="the tool definitions sent to the LLM")
    tools_tokens: int
    messages: list[Message] = Field(default_factory=list, description="the in-context history, in window order")
    messages_tokens: int
    summary: str | None = Field(default=None, description="what compaction has summarised, if it has run")
    out_of_context: int = Field(description="messages kept in recall memory but no longer in the window")
    total_tokens: int


class Metrics(Model):
    """Multi-agent traffic from the runs on record, slowest (p95) first in each list."""

    since: datetime | None = None
    agents: list[AgentMetrics] = Field(default_factory=list)
    pairs: list[PairMetrics] = Field(default_factory=list)
    more_agents: int = Field(default=0, description="agents left out of this list (faster ones)")
    more_pairs: int = Field(default=0, description="pairs left out of this list (faster ones)")


@dataclass(frozen=True)
class Page(Sequence[T], Generic[T]):
    """One page of a listing or search: a sequence of its ``items``, with ``more``, how many further items
    match after them, and ``next_cursor``, what to pass as ``cursor`` for the next page (None at the end).

    Pages follow a fixed order (a name, a sequence number, a rank), so items written while you page never
    make an item appear twice or be skipped.
    """

    items: list[T]
    more: int = 0
    next_cursor: str | None = field(default=None)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        return self.items[index]
