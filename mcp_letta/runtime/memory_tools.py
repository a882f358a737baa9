"""Letta's built-in agent tools with Letta's names, arguments and error strings: core-memory edits,
archival memory (insert, search) and recall search (``conversation_search``).

Every memory edit is one atomic read-modify-write in the step's transaction (``blocks.edit_block``
with ``enforce_read_only``), so agents sharing a block never lose each other's edits, unlike Letta.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from mcp_letta.models import read_moment
from mcp_letta.runtime.toolbox import Tool, Toolbox, ToolContext, ToolFailure, object_params, string_param
from mcp_letta.store import Edit, Tx, appender
from mcp_letta.store.limits import MAX_PAGE

_BLOCKS_NOT_SEARCHED = (
    "Your memory blocks are not searched: they are in view in your system prompt; if one of them holds the answer, "
    "use it."
)
# The note an empty conversation_search carries beside Letta's "No results found.": small models search for
# what their own memory blocks say, then take "nothing found" for "unknown".
NOT_SEARCHED = f"This searched your past messages only. {_BLOCKS_NOT_SEARCHED}"
# What an empty archival_memory_search answers instead of Letta's "[]", for the same reason.
NOT_IN_ARCHIVE = (
    "No results found. This searched your archival memory only: the passages saved with archival_memory_insert. "
    f"{_BLOCKS_NOT_SEARCHED}"
)
# Letta's agent default (letta_v1_agent) plus archival memory, which works here without embeddings.
# core_memory_append/core_memory_replace (memgpt-era) are offered when listed in metadata["tools"].
DEFAULT_TOOL_NAMES = (
    "memory_insert",
    "memory_replace",
    "memory_rethink",
    "conversation_search",
    "archival_memory_insert",
    "archival_memory_search",
)
# As in Letta, the multi-agent tools are offered to agents created with include_multi_agent_tools (kept in
# their metadata under that key), or listed in metadata["tools"]: their schemas cost every request of
# every agent ~500 tokens, which small context windows feel.
INCLUDE_MULTI_AGENT_TOOLS = "include_multi_agent_tools"
LINE_NUMBER_PREFIX = re.compile(r"^\s*\d+→", re.MULTILINE)
LINE_NUMBER_WARNING = (
    "# NOTE: Line numbers shown below (with arrows like '1→') are to help during editing. Do NOT include line "
    "number prefixes in your memory edit tool calls."
)
SEARCH_ROLES = ("assistant", "user", "tool", "system")


LABEL = string_param("Section of the memory to be edited, identified by its label.")


# -- core memory ------------------------------------------------------------------------------------
def _edit(tx: Tx, ctx: ToolContext, label: str, op: str, edit: Edit) -> str:
    """Apply ``edit`` to the agent's block atomically; read-only is checked before ``edit`` runs."""
    labels = tx.block_labels(ctx.agent_id)
    if label not in labels:
        # Letta raises KeyError here, so the model sees the message in quotes.
        raise ToolFailure(repr(f"Block field {label} does not exist (available sections = {', '.join(labels)})"))
    return tx.edit_block(label, edit, agent=ctx.agent_id, op=op, writer=ctx.agent_id, enforce_read_only=True).value


def _no_line_numbers(argument: str, text: str) -> None:
    if LINE_NUMBER_PREFIX.search(text):
        raise ToolFailure(
            f"{argument} contains a line number prefix, which is not allowed. Do not include line numbers when "
            "calling memory tools (line numbers are for display purposes only)."
        )
    if LINE_NUMBER_WARNING in text:
        raise ToolFailure(
            f"{argument} contains a line number warning, which is not allowed. Do not include line number "
            "information when calling memory tools (line numbers are for display purposes only)."
        )


def core_memory_append(tx: Tx, ctx: ToolContext, args: dict[str, Any]) -> str:
    """Append ``content`` to a block on a new line; returns the new value."""
    return _edit(tx, ctx, args["label"], "core_memory_append", appender(args["content"]))


def core_memory_replace(tx: Tx, ctx: ToolContext, args: dict[str, Any]) -> str:
    """Replace every occurrence of ``old_content``; returns the new value."""
    label, old, new = args["label"], args["old_content"], args["new_content"]

    def edit(value: str) -> str:
        if not old:
            raise ToolFailure("old_content is empty: pass the exact text to replace")
        if old not in value:
            raise ToolFailure(f"Old content '{old}' not found in memory block '{label}'")
        return value.replace(old, new)

    return _edit(tx, ctx, label, "core_memory_replace", edit)


def memory_replace(tx: Tx, ctx: ToolContext, args: dict[str, Any]) -> str:
    """Replace the one occurrence of ``old_string``; returns the new value."""
    label, old, new = args["label"], args["old_string"], args["new_string"]

    def edit(value: str) -> str:
        _no_line_numbers("old_string", old)
        _no_line_numbers("new_string", new)
        old_x, new_x, value_x = old.expandtabs(), new.expandtabs(), value.expandtabs()
        if not old_x:  # "" occurs once in an empty block, as in Letta; elsewhere it says nothing
            if not value_x:
                return new_x
            raise ToolFailure(
                f"No replacement was performed: old_string is empty. To add to the memory block with label "
                f"`{label}` use memory_insert; to rewrite it use memory_rethink."
            )
        count = value_x.count(old_x)
        if count == 0:
            raise ToolFailure(
                f"No replacement was performed, old_string `{old}` did not appear verbatim in memory block with "
                f"label `{label}`."
            )
        if count > 1:
            lines = [i + 1 for i, line in enumerate(value_x.split("\n")) if old_x in line]
            raise ToolFailure(
                f"No replacement was performed. Multiple occurrences of old_string `{old}` in lines {lines}. "
                "Please ensure it is unique."
            )
        return value_x.replace(old_x, new_x)

    return _edit(tx, ctx, label, "memory_replace", edit)


def memory_insert(tx: Tx, ctx: ToolContext, args: dict[str, Any]) -> str:
    """Insert ``new_string`` after line ``insert_line`` (0 = at the top, -1 = at the end); returns the new value."""
    label, text, at = args["label"], args["new_string"], args.get("insert_line", -1)

    def edit(value: str) -> str:
        _no_line_numbers("new_string", text)
        lines = value.expandtabs().split("\n")
        position = len(lines) if at == -1 else at
        if position < 0 or position > len(lines):
            raise ToolFailure(
                f"Invalid `insert_line` parameter: {at}. It should be within the range of lines of the memory "
                f"block: {[0, len(lines)]}, or -1 to append to the end of the memory block."
            )
        if not value:  # Letta counts one empty line, so 0 and 1 are valid; neither leaves a stray newline
            return text.expandtabs()
        return "\n".join(lines[:position] + text.expandtabs().split("\n") + lines[position:])

    return _edit(tx, ctx, label, "memory_insert", edit)


def memory_rethink(tx: Tx, ctx: ToolContext, args: dict[str, Any]) -> str:
    """Rewrite a whole block; returns the new value (a missing block is an error, as in Letta 0.16.8)."""
    label, text = args["label"], args["new_memory"]

    def edit(_value: str) -> str:
        _no_line_numbers("new_memory", text)
        return text

    return _edit(tx, ctx, label, "memory_rethink", edit)


# -- archival memory --------------------------------------------------------------------------------
def archival_memory_insert(tx: Tx, ctx: ToolContext, args: dict[str, Any]) -> None:
    """Store a passage; returns None, so the model sees "None" (as in Letta)."""
    tx.insert_passage(ctx.agent_id, args["content"], list(args.get("tags") or []))


def _moment(text: str, *, end: bool) -> datetime:
    try:
        parsed = read_moment(text)
    except ValueError:
        raise ToolFailure(f"Invalid date {text!r}: use ISO 8601, YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if end and len(text) <= 10:  # a bare end date covers the whole day
        parsed = parsed.replace(hour=23, minute=59, second=59, microsecond=999999)
    return parsed


def archival_memory_search(tx: Tx, ctx: ToolContext, args: dict[str, Any]) -> list[dict[str, Any]] | str:
    """BM25 search of the agent's passages; returns Letta's list of {id, timestamp, content, tags}.

    The list reaches the model as a Python repr string, exactly as Letta sends it. Nothing found is said in
    words (``NOT_IN_ARCHIVE``): given Letta's ``[]``, small models answer with a guess.
    """
    top_k = args.get("top_k") or 10
    if not 1 <= top_k <= MAX_PAGE:
        raise ToolFailure(f"top_k must be between 1 and {MAX_PAGE} (got {top_k})")
    start = _moment(args["start_datetime"], end=False) if args.get("start_datetime") else None
    end = _moment(args["end_datetime"], end=True) if args.get("end_datetime") else None
    found = tx.search_passages(
        ctx.agent_id, args["query"], tags=args.get("tags") or [], tag_match=args.get("tag_match_mode") or "any",
        limit=MAX_PAGE if start or end else top_k,
    )  # fmt: skip
    found = [p for p in found if (start is None or p.created_at >= start) and (end is None or p.created_at <= end)]
    if not found:
        return NOT_IN_ARCHIVE
    return [
        {"id": p.id, "timestamp": p.created_at.isoformat(), "content": p.text, "tags": p.tags} for p in found[:top_k]
    ]


# -- recall -----------------------------------------------------------------------------------------
def _ago(moment: datetime) -> str:
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def conversation_search(tx: Tx, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Search the agent's whole history (in context or evicted); returns Letta's dict of results.

    Like Letta it skips tool results (unless ``roles`` asks for them) and tool-call-only messages; it
    also skips the current run's own messages, which are in the context already.
    """
    query = args.get("query")
    limit = args.get("limit") or 5
    if not 1 <= limit <= MAX_PAGE:
        raise ToolFailure(f"limit must be between 1 and {MAX_PAGE} (got {limit})")
    roles = args.get("roles") or ["user", "assistant", "system"]
    bad = [r for r in roles if r not in SEARCH_ROLES]
    if bad:
        raise ToolFailure(f"Unknown role(s) {bad}: use assistant, user or tool")
    found = tx.search_messages(
        ctx.agent_id, query, roles=roles, limit=min(MAX_PAGE, limit * 4 + 10),
        start=args.get("start_date"), end=args.get("end_date"),
    )  # fmt: skip
    found = [m for m in found if m.content.strip() and m.run_id != ctx.run_id][:limit]
    if not found:
        return {"message": "No results found.", "results": [], "note": NOT_SEARCHED}
    results = []
    for m in found:
        entry: dict[str, Any] = {"timestamp": m.created_at.isoformat(), "time_ago": _ago(m.created_at), "role": m.role}
        if query:
            entry["relevance"] = {"search_mode": "fts"}
        entry["content"] = m.content
        results.append(entry)
    return {"message": f"Showing {len(results)} results:", "results": results}


BUILTIN_TOOLS = (
    Tool(
        "core_memory_append",
        "Append to the contents of a core memory block (on a new line).",
        object_params(["label", "content"], label=LABEL, content=string_param("Content to write to the memory.")),
        in_transaction=core_memory_append,
    ),
    Tool(
        "core_memory_replace",
        "Replace text in a core memory block (every occurrence). To delete text, use an empty new_content.",
        object_params(
            ["label", "old_content", "new_content"],
            label=LABEL,
            old_content=string_param("String to replace. Must be an exact match."),
            new_content=string_param("Content to write to the memory."),
        ),
        in_transaction=core_memory_replace,
    ),
    Tool(
        "memory_replace",
        "Replace one specific string in a memory block with a new string, for precise edits. The old string "
        "must occur exactly once. Do not use it to rewrite a whole block (use memory_rethink).",
        object_params(
            ["label", "old_string", "new_string"],
            label=LABEL,
            old_string=string_param("The text to replace: it must match exactly, including whitespace."),
            new_string=string_param("The new text to put in its place. Do not include line number prefixes."),
        ),
        in_transaction=memory_replace,
    ),
    Tool(
        "memory_insert",
        "Insert text at a specific line of a memory block.",
        object_params(
            ["label", "new_string"],
            label=LABEL,
            new_string=string_param("The text to insert. Do not include line number prefixes."),
            insert_line={
                "type": "integer",
                "description": "The line after which to insert the text (0 for the beginning). Default -1: the end.",
            },
        ),
        in_transaction=memory_insert,
    ),
    Tool(
        "memory_rethink",
        "Rewrite the whole contents of a memory block, to condense or reorganize it. For small edits use "
        "memory_replace or memory_insert instead.",
        object_params(
            ["label", "new_memory"],
            label=LABEL,
            new_memory=string_param("The new contents of the block. Do not include line number prefixes."),
        ),
        in_transaction=memory_rethink,
    ),
    Tool(
        "archival_memory_insert",
        "Add information to long-term archival memory, to find later with archival_memory_search.",
        object_params(
            ["content"],
            content=string_param("Content to write to the memory."),
            tags={"type": "array", "items": {"type": "string"}, "description": "Optional tags to file it under."},
        ),
        in_transaction=archival_memory_insert,
    ),
    Tool(
        "archival_memory_search",
        "Search archival memory by keywords (best matches first), optionally filtered by tags and dates.",
        object_params(
            ["query"],
            query=string_param("Words to search for."),
            tags={"type": "array", "items": {"type": "string"}, "description": "Only passages with these tags."},
            tag_match_mode={"type": "string", "enum": ["any", "all"], "description": "Match any tag (default) or all."},
            top_k={"type": "integer", "description": "How many results at most (default 10)."},
            start_datetime=string_param(
                "Only passages from this time on (ISO 8601, e.g. 2025-01-31 or 2025-01-31T14:00)."
            ),
            end_datetime=string_param("Only passages up to this time (ISO 8601; a bare date includes the whole day)."),
        ),
        in_transaction=archival_memory_search,
        reads_only=True,
    ),
    Tool(
        "conversation_search",
        "Search your prior conversation history (recall memory), including messages no longer in view.",
        object_params(
            [],
            query=string_param("Words to search for; omit to list the most recent messages."),
            roles={
                "type": "array",
                "items": {"type": "string", "enum": ["assistant", "user", "tool"]},
                "description": "Only messages from these roles.",
            },
            limit={"type": "integer", "description": "How many results at most (default 5)."},
            start_date=string_param("Only messages from this date on (YYYY-MM-DD or YYYY-MM-DDTHH:MM)."),
            end_date=string_param("Only messages up to this date (inclusive)."),
        ),
        in_transaction=conversation_search,
        reads_only=True,
    ),
)


def builtin_toolbox(multi_agent: Iterable[Tool] = ()) -> Toolbox:
    """A toolbox with Letta's built-in tools, offering the default set to every agent.

    ``multi_agent`` are the multi-agent tools bound to a hub (``multiagent.multi_agent_tools``); they are
    offered to agents whose metadata has ``include_multi_agent_tools: true``.
    """
    toolbox = Toolbox(BUILTIN_TOOLS, defaults=DEFAULT_TOOL_NAMES)
    names = []
    for tool in multi_agent:
        toolbox.register(tool)
        names.append(tool.name)
    toolbox.opt_in(INCLUDE_MULTI_AGENT_TOOLS, names)
    return toolbox
