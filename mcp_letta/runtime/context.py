"""An agent's context window: the system prompt with its core memory rendered exactly as Letta does.

``render_memory`` is the single source of the memory text: the MCP resource
``letta://agents/{agent}/memory`` and the prompts the runtime sends both come from it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mcp_letta.models import Block

CORE_MEMORY_PLACEHOLDER = "{CORE_MEMORY}"


def letta_time(moment: datetime | None = None) -> str:
    """Letta's timestamp format, e.g. ``2026-11-21 07:30:19 PM UTC+0000``."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %I:%M:%S %p UTC%z")


def render_blocks(blocks: list[Block]) -> str:
    """The ``<memory_blocks>`` section: one element per block, in attachment order."""
    parts = ["<memory_blocks>\nThe following memory blocks are currently engaged in your core memory unit:\n\n"]
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
    blocks: list[Block],
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
