"""An agent's context window: the system prompt with its core memory rendered exactly as Letta does
(``ShownMemory``), the in-context history as chat messages (``Window``), the token estimate, Letta's
summarization (compaction), and the LLM request one step sends (``chat_request``).

``ShownMemory.render`` is the single source of the memory text: the MCP resource
``letta://agents/{agent}/memory`` and the prompts the runtime sends both come from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mcp_letta.llm.base import ChatRequest, ChatResponse, arguments_json, compact_json, new_call_id
from mcp_letta.models import LETTA_TIME_FORMAT, Message, ModelSettings, ToolCall
from mcp_letta.store import PromptBlock, Tx

if TYPE_CHECKING:
    from mcp_letta.runtime.toolbox import Tool

CORE_MEMORY_PLACEHOLDER = "{CORE_MEMORY}"


def letta_time(moment: datetime | None = None) -> str:
    """Letta's timestamp format, e.g. ``2026-11-21 07:30:19 PM UTC+0000``."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime(LETTA_TIME_FORMAT)


MEMORY_START = "<memory_blocks>"  # where memory begins in the system message


def render_blocks(blocks: list[PromptBlock]) -> str:
    """The ``<memory_blocks>`` section: one element per block, in attachment order."""
    parts = [MEMORY_START + "\nThe following memory blocks are currently engaged in your core memory unit:\n\n"]
    for index, block in enumerate(blocks):
        parts.append(f"<{block.label}>\n<description>\n{block.description or ''}\n</description>\n<metadata>")
        if block.read_only:
            parts.append("\n- read_only=true")
        parts.append(f"\n- chars_current={len(block.value)}\n- chars_limit={block.limit}\n</metadata>\n")
        parts.append(f"<value>\n{block.value}\n</value>\n</{block.label}>\n")
        if index != len(blocks) - 1:
            parts.append("\n")
    parts.append("\n</memory_blocks>")
    return "".join(parts)


def render_metadata(
    *,
    agent_id: str,
    recall_count: int,
    archival_count: int,
    archival_tags: list[str],
    compiled_at: datetime | None = None,
    conversation_id: str = "default",
) -> str:
    """The ``<memory_metadata>`` section."""
    lines = [
        "<memory_metadata>",
        f"- AGENT_ID: {agent_id}",
        f"- CONVERSATION_ID: {conversation_id}",
        f"- System prompt last recompiled: {letta_time(compiled_at)}",
        f"- {recall_count} previous messages between you and the user are stored in recall memory",
    ]
    if archival_count > 0:
        lines.append(
            f"- {archival_count} total memories you created are stored in archival memory (use tools to access them)"
        )
    if archival_tags:
        lines.append(f"- Available archival memory tags: {', '.join(archival_tags)}")
    lines.append("</memory_metadata>")
    return "\n".join(lines)


def render_memory(
    *,
    agent_id: str,
    blocks: list[PromptBlock],
    recall_count: int,
    archival_count: int,
    archival_tags: list[str],
    compiled_at: datetime | None = None,
) -> str:
    """Core memory as the agent sees it: blocks, a blank line, then the memory metadata."""
    metadata = render_metadata(
        agent_id=agent_id,
        recall_count=recall_count,
        archival_count=archival_count,
        archival_tags=archival_tags,
        compiled_at=compiled_at,
    )
    return render_blocks(blocks) + "\n\n" + metadata


def compile_system(system: str, memory: str) -> str:
    """The system message: ``{CORE_MEMORY}`` replaced in place if present, else memory appended."""
    if CORE_MEMORY_PLACEHOLDER in system:
        return system.replace(CORE_MEMORY_PLACEHOLDER, memory)
    return system + "\n\n" + memory


@dataclass(frozen=True)
class ShownMemory:
    """What an agent's core memory shows: its blocks, and how much recall and archival memory it has."""

    blocks: list[PromptBlock]
    recall: int
    archival: int
    tags: list[str]

    def render(self, agent_id: str, compiled_at: datetime | None = None) -> str:
        """As the prompt shows it, compiled at ``compiled_at`` (now if None)."""
        return render_memory(
            agent_id=agent_id, blocks=self.blocks, recall_count=self.recall, archival_count=self.archival,
            archival_tags=self.tags, compiled_at=compiled_at,
        )  # fmt: skip


@dataclass(frozen=True)
class MemoryFacts:
    """What agents' core memory shows, read in one query each however many agents: blocks, counts."""

    blocks: dict[str, list[PromptBlock]]
    archival: dict[str, int]
    recall: dict[str, int]

    @classmethod
    def read(cls, tx: Tx, agent_ids: Sequence[str]) -> MemoryFacts:
        """The facts of these agents as the store has them now."""
        return cls(tx.prompt_blocks(agent_ids), tx.archival_counts(agent_ids), tx.recall_counts(agent_ids))

    def shown(self, tx: Tx, agent_id: str) -> ShownMemory:
        """One agent's memory (its archival tags are read only when it has passages)."""
        archival = self.archival[agent_id]
        tags = tx.archival_tags(agent_id) if archival else []
        return ShownMemory(self.blocks[agent_id], self.recall[agent_id], archival, tags)


def memory_of(tx: Tx, agent_id: str) -> str:
    """An agent's core memory rendered as its prompt shows it now (blocks and memory metadata)."""
    return MemoryFacts.read(tx, [agent_id]).shown(tx, agent_id).render(agent_id)


# -- the context window ----------------------------------------------------------------------------
DEFAULT_CONTEXT_WINDOW = 32768
SUMMARIZE_AT = 0.9  # Letta compacts when the estimate passes 0.9 x the context window
KEEP_FRACTION = 0.3  # Letta's sliding_window_percentage: the newest 30% of the window stays
CHARS_PER_TOKEN = 4
# Bounds that make compaction always shrink the window, whatever the summarizer returns: a summary longer
# than what it replaced would be summarized again with the next messages, larger each time.
SUMMARY_FRACTION = 0.1  # the summary may take at most this share of the window
CLIP_CHARS = 2_000  # each evicted message as the summarizer sees it (Letta clips too)
TRANSCRIPT_FRACTION = 0.6  # the summarizer's input, as a share of the window
MESSAGE_OVERHEAD_TOKENS = 4  # role, separators: what a chat template adds per message
SUMMARY_SENDER = "summarizer"  # the ``sender`` of summary messages, so they sort first in the window

SUMMARY_SYSTEM = (
    "You summarize conversations for an AI agent whose context window is full. You are given the oldest "
    "part of its conversation: user messages, the agent's replies, and the tool calls it made with their "
    "results. Write, in the first person from the agent's point of view, a summary of what happened and "
    "what matters for going on: facts learned, requests made, decisions taken, work left open. Keep it "
    "under 150 words. Output only the summary."
)


def history_messages(history: list[Message]) -> list[dict[str, Any]]:
    """OpenAI chat messages for history already in ``context_order``.

    Tool calls without a recorded result, and results without their call, are left out: an API rejects
    either, and they only arise when a run was interrupted between the two.
    """
    answered = {m.tool_call_id for m in history if m.role == "tool" and m.tool_call_id}
    called: set[str] = set()
    out: list[dict[str, Any]] = []
    for message in history:
        if message.role == "assistant":
            calls = [tc for tc in message.tool_calls if tc.id in answered]
            if not calls and not message.content:
                continue
            entry: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if calls:
                entry["tool_calls"] = [
                    {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}
                    for tc in calls
                ]
                called.update(tc.id for tc in calls)
            out.append(entry)
        elif message.role == "tool":
            if message.tool_call_id in called:
                out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content})
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def context_order(history: list[Message]) -> list[Message]:
    """The window's order: the summary of evicted messages first, then the rest oldest first."""
    summaries = [m for m in history if m.sender == SUMMARY_SENDER]
    if not summaries:
        return history
    return summaries + [m for m in history if m.sender != SUMMARY_SENDER]


def message_tokens(message: Message) -> int:
    """A cheap estimate (characters / 4) of what one message costs in the window."""
    chars = len(message.content) + sum(len(tc.name) + len(tc.arguments) for tc in message.tool_calls)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS


class Window:
    """An agent's in-context history, kept in step as a run adds to it: the messages (in ``context_order``),
    their chat form, each chat message encoded as JSON, and their token estimate, so a step costs what it
    adds, not what the history holds.
    """

    def __init__(self, history: list[Message]) -> None:
        self.messages = context_order(history)
        self.chat = history_messages(self.messages)
        self.encoded = [compact_json(m) for m in self.chat]
        self.tokens = sum(message_tokens(m) for m in self.messages)
        self.newest = max((m.seq for m in self.messages), default=0)

    def add(self, new: list[Message]) -> None:
        """Append messages just stored (a step's messages are complete: calls come with their results)."""
        chat = history_messages(new)
        self.messages = self.messages + new
        self.chat = self.chat + chat
        self.encoded = self.encoded + [compact_json(m) for m in chat]
        self.tokens += sum(message_tokens(m) for m in new)
        self.newest = max(self.newest, *(m.seq for m in new)) if new else self.newest

    def copy(self) -> Window:
        """An independent copy (the lists are replaced, never mutated, so a shallow copy is enough)."""
        twin = Window.__new__(Window)
        twin.messages, twin.chat, twin.encoded = self.messages, self.chat, self.encoded
        twin.tokens, twin.newest = self.tokens, self.newest
        return twin

    @property
    def fingerprint(self) -> tuple[int, int]:
        """(count, newest seq): equal to the store's when nobody else changed the window since."""
        return len(self.messages), self.newest

    def request(self, system: str) -> list[dict[str, Any]]:
        """The chat messages of an LLM request: the system message, then the history."""
        return [{"role": "system", "content": system}, *self.chat]

    def request_json(self, system: str) -> str:
        """``request(system)`` as the JSON array a request body carries (the history was encoded as it was
        added: a long one is not encoded again at every step)."""
        return "[" + ",".join([compact_json({"role": "system", "content": system}), *self.encoded]) + "]"

    def estimate(self, system: str, tools_chars: int = 0) -> int:
        """The estimated prompt size: system message, tool schemas and history, at four characters a token."""
        return fixed_tokens(system, tools_chars) + self.tokens


def fixed_tokens(system: str, tools_chars: int = 0) -> int:
    """The estimated size of what every request carries whatever the history: system message and tools."""
    return (len(system) + tools_chars) // CHARS_PER_TOKEN


def choose_eviction(history: list[Message], keep_tokens: int) -> int:
    """How many of the window's oldest messages (in ``context_order``) to summarize away; 0 if none can go.

    Keeps the newest messages that fit in ``keep_tokens``, and never starts the kept part with a tool
    result (a result must stay with the call that asked for it).
    """
    ordered = context_order(history)
    kept = 0
    cut = len(ordered)
    for index in range(len(ordered) - 1, 0, -1):
        kept += message_tokens(ordered[index])
        if kept > keep_tokens:
            break
        if ordered[index].role != "tool":
            cut = index
    if cut == len(ordered):  # not even the newest message fits: keep the newest turn that can stand alone
        cut = next((i for i in range(len(ordered) - 1, 0, -1) if ordered[i].role != "tool"), 0)
    return cut


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 40] + f" ... [{len(text) - limit + 40} characters cut]"


def summary_request(evicted: list[Message], window: int = DEFAULT_CONTEXT_WINDOW) -> list[dict[str, Any]]:
    """The chat messages asking the LLM to summarize the messages about to leave the window.

    Each message is clipped, and the transcript fits in part of the window (the oldest part goes first:
    the previous summary is kept whole at the top).
    """
    lines = []
    for message in evicted:
        if message.role == "assistant" and message.tool_calls:
            calls = ", ".join(f"{tc.name}({tc.arguments})" for tc in message.tool_calls)
            line = f"assistant (calls tools): {message.content + ' ' if message.content else ''}{calls}"
        else:
            line = f"{message.role}: {message.content}"
        lines.append(line if message.sender == SUMMARY_SENDER else _clip(line, CLIP_CHARS))
    budget = int(TRANSCRIPT_FRACTION * window * CHARS_PER_TOKEN)
    while len(lines) > 1 and sum(len(line) + 1 for line in lines) > budget:
        del lines[1 if evicted[0].sender == SUMMARY_SENDER else 0]
    transcript = _clip("\n".join(lines), budget)
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": f"Summarize this conversation:\n\n{transcript}"},
    ]


def bounded_summary(summary: str, window: int) -> str:
    """The summary cut to its share of the window, so compaction always frees room."""
    return _clip(summary, max(200, int(SUMMARY_FRACTION * window * CHARS_PER_TOKEN)))


def summary_alert(hidden: int, summary: str, moment: datetime | None = None) -> str:
    """Letta's summary message: a ``system_alert`` saying how many messages left the window, and the summary."""
    return json.dumps(
        {
            "type": "system_alert",
            "message": (
                f"Note: {hidden} messages from the beginning of the conversation have been hidden from view due "
                f"to memory constraints.\nThe following is a summary of the previous messages:\n {summary}"
            ),
            "time": letta_time(moment),
        },
        indent=2,
        ensure_ascii=False,
    )


def tools_json(offered: dict[str, Tool]) -> str:
    """The schemas of the offered tools as one JSON array (each tool's schema is encoded once)."""
    return "[" + ",".join(tool.schema_json for tool in offered.values()) + "]"


def chat_request(
    model: str,
    settings: ModelSettings,
    window: Window,
    system: str,
    offered: dict[str, Tool],
    *,
    json_mode: bool = False,
    must_call: bool = False,
    then: Sequence[dict[str, Any]] = (),
) -> ChatRequest:
    """The LLM request of one step: the system message, the window's history, ``then`` (messages that are
    not in the history, e.g. a correction) and the offered tools: as native tool definitions, or with
    ``json_mode`` described in the system message before memory and offered through a JSON schema the answer
    follows (``json_step_format``). Before memory, so that a memory edit leaves the tools in the prefix a
    provider caches."""
    if json_mode and offered:
        at = system.find(MEMORY_START)
        if at < 0:  # a custom system prompt without memory
            at = len(system)
        system = system[:at].rstrip("\n") + "\n\n" + json_tools_text(offered) + "\n\n" + system[at:].lstrip("\n")
    messages_json = window.request_json(system)
    if then:
        messages_json = messages_json[:-1] + "".join("," + compact_json(m) for m in then) + "]"
    native = offered if not json_mode else {}
    return ChatRequest(
        model=model,
        messages=[*window.request(system), *then],
        messages_json=messages_json,
        tools=[tool.schema() for tool in native.values()],
        tools_json=tools_json(native),
        tool_choice="auto",
        response_format=json_step_format(offered, reply=not must_call) if json_mode and offered else None,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )


# -- JSON tool mode ----------------------------------------------------------------------------------
# Small local models rarely send native tool calls, but follow a JSON schema reliably (llama.cpp, Ollama,
# vLLM, LM Studio and OpenAI all constrain output to one): each step's answer is either a tool call or the
# reply, as one JSON object.
JSON_STEP_SCHEMA_NAME = "agent_step"


def json_tools_text(offered: dict[str, Tool]) -> str:
    """The offered tools described for a model answering in JSON (it sees no native tool definitions)."""
    lines = [
        "<tools>",
        'Answer with exactly one JSON object: {"tool": NAME, "arguments": {...}} to call one of these tools, or '
        '{"reply": TEXT} to answer the message.',
    ]
    for tool in offered.values():
        properties = tool.parameters.get("properties", {})
        required = set(tool.parameters.get("required", []))
        arguments = ", ".join(
            f"{name}{'' if name in required else '?'}: {spec.get('type', 'any')}" for name, spec in properties.items()
        )
        lines.append(f"- {tool.name}({arguments}): {tool.description.splitlines()[0] if tool.description else ''}")
    lines.append("</tools>")
    return "\n".join(lines)


def json_step_format(offered: dict[str, Tool], *, reply: bool = True) -> dict[str, Any]:
    """OpenAI's ``response_format``: a JSON schema allowing one call of an offered tool, or (with ``reply``) the
    reply."""
    choices: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"type": "string", "enum": [tool.name]}, "arguments": tool.parameters},
            "required": ["tool", "arguments"],
        }
        for tool in offered.values()
    ]
    if reply:
        choices.append({"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]})
    return {"type": "json_schema", "json_schema": {"name": JSON_STEP_SCHEMA_NAME, "schema": {"anyOf": choices}}}


_JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


def read_json_step(response: ChatResponse) -> ChatResponse:
    """A JSON-mode answer as a tool call or a reply; an answer that ignored the format is kept as it is."""
    if response.tool_calls or not response.content:
        return response
    text = response.content.strip()
    fenced = _JSON_FENCE.fullmatch(text)  # a model that sees the format only as text often fences its JSON
    try:
        answer = json.JSONDecoder().raw_decode(fenced.group(1) if fenced else text)[0]
    except ValueError:
        return response
    if isinstance(answer, dict) and isinstance(answer.get("tool"), str):
        arguments = answer.get("arguments")
        call = ToolCall(
            id=new_call_id(), name=answer["tool"], arguments=arguments_json(arguments if arguments is not None else {})
        )
        return response.model_copy(update={"content": None, "tool_calls": [call]})
    if isinstance(answer, dict) and isinstance(answer.get("reply"), str):
        return response.model_copy(update={"content": answer["reply"]})
    return response
