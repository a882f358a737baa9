"""Letta's Agent File (``.af``): export an agent (blocks, tools by name, history, tags, settings) as Letta's
``AgentFileSchema`` JSON, and import one, from us or from a Letta server (also the older one-agent form with
``core_memory``). Tools we cannot run (custom Python, ``send_message``) are reported by name, never dropped
silently."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
from datetime import UTC, datetime
from typing import Any

from mcp_letta.hub import AgentHub
from mcp_letta.models import Agent, BlockSpec, Message, ModelSettings, NewMessage, ToolCall
from mcp_letta.runtime.memory_tools import DEFAULT_TOOL_NAMES, INCLUDE_MULTI_AGENT_TOOLS
from mcp_letta.runtime.messaging_tools import MULTI_AGENT_TOOL_NAMES
from mcp_letta.server.rest import letta_json as lj

MAX_IMPORTED_MESSAGES = 10_000


class AgentFileError(ValueError):
    """The uploaded file is not an Agent File we can read; the message says what is wrong."""


def export_agent(agent: Agent, tools: list[str], history: list[Message]) -> dict[str, Any]:
    """One agent as an Agent File (Letta's ``AgentFileSchema``), with file-local ids (``agent-0``, ``block-0``...)."""
    block_ids = {b.id: f"block-{i}" for i, b in enumerate(agent.blocks)}
    tool_ids = {name: f"tool-{i}" for i, name in enumerate(tools)}
    message_ids = {m.id: f"message-{i}" for i, m in enumerate(history)}
    messages = []
    for m in history:
        entry: dict[str, Any] = {
            "id": message_ids[m.id],
            "role": m.role,
            "content": [{"type": "text", "text": m.content}],
            "name": m.name,
            "agent_id": "agent-0",
            "created_at": lj.iso(m.created_at),
            "tool_call_id": m.tool_call_id,
            "sender_id": m.sender,
            "model": None,
        }
        if m.tool_calls:
            entry["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        messages.append(entry)
    state = lj.agent_json(agent, tools, agent.model_settings.model or "")
    return {
        "agents": [
            {
                "id": "agent-0",
                "name": agent.name,
                "system": agent.system,
                "description": agent.description,
                "agent_type": agent.agent_type,
                "tags": agent.tags,
                "metadata": lj.user_metadata(agent),
                "llm_config": state["llm_config"],
                "embedding_config": None,
                "tool_rules": [],
                "include_multi_agent_tools": bool(agent.metadata.get(INCLUDE_MULTI_AGENT_TOOLS)),
                "block_ids": list(block_ids.values()),
                "tool_ids": list(tool_ids.values()),
                "messages": messages,
                "in_context_message_ids": [message_ids[m.id] for m in history if m.in_context],
                "files_agents": [],
                "group_ids": [],
                "source_ids": [],
                "folder_ids": [],
                "identity_ids": [],
            }
        ],
        "groups": [],
        "blocks": [
            {
                "id": block_ids[b.id],
                "label": b.label,
                "value": b.value,
                "limit": b.limit,
                "description": b.description,
                "read_only": b.read_only,
                "metadata": b.metadata,
            }
            for b in agent.blocks
        ],
        "files": [],
        "sources": [],
        "tools": [{**lj.tool_json(name), "id": tool_ids[name]} for name in tools],
        "mcp_servers": [],
        "skills": [],
        "metadata": {"exported_by": "mcp-letta"},
        "created_at": datetime.now(UTC).isoformat(),
    }


def file_from_multipart(content_type: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The uploaded ``file`` part and the other form fields of a ``multipart/form-data`` body."""
    if not content_type.startswith("multipart/form-data"):
        raise AgentFileError("upload the agent file as multipart/form-data with a 'file' part")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    file: bytes | None = None
    fields: dict[str, str] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "file":
            file = payload
        elif isinstance(name, str):
            fields[name] = payload.decode("utf-8", "replace")
    if file is None:
        raise AgentFileError("the upload has no 'file' part: send the .af file as 'file'")
    return file, fields


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _calls(raw: Any) -> list[ToolCall]:
    calls = []
    for call in raw or []:
        function = call.get("function") or {}
        arguments = function.get("arguments", "{}")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(ToolCall(id=str(call.get("id") or ""), name=str(function.get("name") or ""), arguments=text))
    return calls


def _messages(raw: list[dict[str, Any]], in_context: set[str] | None) -> list[NewMessage]:
    if len(raw) > MAX_IMPORTED_MESSAGES:
        raise AgentFileError(f"the agent has {len(raw)} messages; at most {MAX_IMPORTED_MESSAGES} can be imported")
    out = []
    for index, m in enumerate(raw):
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            continue
        if role == "system" and index == 0:
            continue  # the compiled system prompt; ours is rebuilt from the agent's system and memory
        key = m.get("id", str(index))
        out.append(
            NewMessage(
                role=role,
                content=_text(m.get("content")),
                name=m.get("name"),
                tool_calls=_calls(m.get("tool_calls")),
                tool_call_id=m.get("tool_call_id"),
                in_context=in_context is None or key in in_context,
            )
        )
    return out


def _settings(llm_config: dict[str, Any] | None) -> ModelSettings | None:
    if not llm_config:
        return None
    values = {
        "model": llm_config.get("model"),
        "context_window": llm_config.get("context_window"),
        "temperature": llm_config.get("temperature"),
        "max_tokens": llm_config.get("max_tokens"),
    }
    values = {k: v for k, v in values.items() if v is not None}
    return ModelSettings(**values) if values else None


async def import_agent_file(hub: AgentHub, data: bytes, fields: dict[str, str]) -> dict[str, Any]:
    """Create the agents of an Agent File; ``{"agent_ids": [...], "skipped_tools": {agent id: [names]}}``."""
    try:
        document = json.loads(data)
    except ValueError:
        raise AgentFileError("the file is not JSON: an Agent File (.af) is a JSON document") from None
    if not isinstance(document, dict):
        raise AgentFileError("the file is not an Agent File: expected a JSON object")
    if "agents" in document:
        blocks = {b["id"]: b for b in document.get("blocks", [])}
        tools = {t["id"]: t.get("name") for t in document.get("tools", [])}
        agents = [
            (
                a,
                [blocks[i] for i in a.get("block_ids") or [] if i in blocks],
                [tools[i] for i in a.get("tool_ids") or [] if i in tools],
                set(a.get("in_context_message_ids") or []),
            )
            for a in document["agents"]
        ]
    elif "core_memory" in document:  # the older one-agent form
        indices = document.get("in_context_message_indices")
        messages = document.get("messages") or []
        for i, m in enumerate(messages):
            m.setdefault("id", f"message-{i}")
        in_context = None if indices is None else {messages[i]["id"] for i in indices if 0 <= i < len(messages)}
        agents = [(document, document["core_memory"], [t.get("name") for t in document.get("tools", [])], in_context)]
    else:
        raise AgentFileError("the file is not an Agent File: it has neither 'agents' nor 'core_memory'")
    if len(agents) != 1:
        raise AgentFileError(f"the file holds {len(agents)} agents; mcp-letta imports one agent per file")
    known = set(hub.known_tool_names())
    created, skipped = [], {}
    for raw, raw_blocks, tool_names, in_context in agents:
        names = [n for n in tool_names if isinstance(n, str)]
        unknown = [n for n in names if n not in known]
        extra = [n for n in names if n in known and n not in MULTI_AGENT_TOOL_NAMES and n not in DEFAULT_TOOL_NAMES]
        metadata = dict(raw.get("metadata") or raw.get("metadata_") or {})
        if extra:
            metadata["tools"] = [*DEFAULT_TOOL_NAMES, *extra]
        name = fields.get("override_name") or fields.get("name") or raw.get("name") or "imported"
        if fields.get("append_copy_suffix", "true").lower() == "true":
            name = f"{name}_copy"
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:64] or "imported"  # Letta allows spaces; we do not
        specs = [
            BlockSpec(
                label=b["label"],
                value=b.get("value") or "",
                limit=b.get("limit") or 100_000,
                description=b.get("description"),
                read_only=bool(b.get("read_only")),
                metadata=b.get("metadata") or {},
            )
            for b in raw_blocks
        ]
        agent = await hub.create_agent(
            name,
            system=raw.get("system") or None,
            description=raw.get("description"),
            blocks=specs,
            tags=raw.get("tags") or [],
            model_settings=_settings(raw.get("llm_config")),
            metadata=metadata,
            include_multi_agent_tools=bool(raw.get("include_multi_agent_tools"))
            or any(n in MULTI_AGENT_TOOL_NAMES for n in names),
        )
        history = (
            []
            if fields.get("strip_messages", "false").lower() == "true"
            else _messages(raw.get("messages") or [], in_context or None)
        )
        if history:
            await hub.append_messages(agent.id, history)
        created.append(agent.id)
        if unknown:
            skipped[agent.id] = unknown
    return {"agent_ids": created, "skipped_tools": skipped}
