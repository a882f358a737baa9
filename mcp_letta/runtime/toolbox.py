"""The tools an agent's LLM may call: a registry (built-ins, plus tools the hub adds per agent) and dispatch.

A call's result reaches the LLM as Letta's JSON ``{"status": "OK"|"Failed", "message", "time"}``. Tools
that only touch the store run inside the step's write transaction (one commit per step); tools that must
wait on something (another agent, later) are awaited outside it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mcp_letta.errors import LettaError
from mcp_letta.models import ToolCall, ToolCallRecord
from mcp_letta.runtime.context import letta_time
from mcp_letta.store import ToolAgent, Tx

log = logging.getLogger("mcp_letta.toolbox")

RETURN_CHAR_LIMIT = 50_000  # Letta's FUNCTION_RETURN_CHAR_LIMIT
PREVIEW_CHARS = 200
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}


def string_param(description: str) -> dict[str, Any]:
    """A string parameter of a tool's JSON schema."""
    return {"type": "string", "description": description}


def object_params(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters: an object with these properties, the ``required`` ones listed."""
    return {"type": "object", "properties": properties, "required": required}


class ToolFailure(Exception):
    """Raised by a tool: the message goes back to the agent verbatim as a Failed result."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ToolContext:
    """Who is calling: the agent (also the writer of its memory edits), the run it is in and, for a call
    that sends messages, which call of the run it is (``'<step>.<position>'``): a resumed run making the
    same call again finds the runs it already sent by it."""

    agent_id: str
    agent_name: str
    run_id: str
    call_id: str | None = None


InTransaction = Callable[[Tx, ToolContext, dict[str, Any]], Any]
Awaited = Callable[[ToolContext, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """A tool an agent may call: name, description and JSON-schema parameters, and one handler.

    ``in_transaction(tx, ctx, args)`` runs inside the step's write transaction (store-only work);
    ``awaited(ctx, args)`` runs outside any transaction and may wait. The return value becomes the
    result message (a str as is, None as "None", a dict as JSON, anything else via ``str``).
    ``reads_only`` marks a tool that changes nothing (a search): within a run, the same call gives the same
    result until a call of another kind.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    in_transaction: InTransaction | None = None
    awaited: Awaited | None = None
    reads_only: bool = False

    def __post_init__(self) -> None:
        if (self.in_transaction is None) == (self.awaited is None):
            raise ValueError(f"tool {self.name!r} needs exactly one of in_transaction= or awaited=")

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool schema offered to the LLM."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    @cached_property
    def schema_json(self) -> str:
        """``schema()`` as compact JSON, encoded once: every LLM request of every agent carries it."""
        return json.dumps(self.schema(), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ToolResult:
    """What a call returned, as the agent sees it."""

    ok: bool
    message: str

    def for_llm(self) -> str:
        """Letta's packaged result: JSON with indent 2."""
        payload = {"status": "OK" if self.ok else "Failed", "message": self.message, "time": letta_time()}
        return json.dumps(payload, indent=2, ensure_ascii=False)

    @classmethod
    def from_llm(cls, text: str) -> ToolResult:
        """The result a tool message stored earlier holds (``for_llm``'s text read back)."""
        try:
            payload = json.loads(text)
        except ValueError:
            return cls(True, text)
        if not isinstance(payload, dict):
            return cls(True, text)
        return cls(payload.get("status") == "OK", str(payload.get("message", "")))

    def record(self, call: ToolCall) -> ToolCallRecord:
        """The call as kept in the run's steps."""
        preview = self.message if len(self.message) <= PREVIEW_CHARS else self.message[:PREVIEW_CHARS] + "…"
        return ToolCallRecord(name=call.name, arguments=call.arguments, ok=self.ok, result_preview=preview)


@dataclass(frozen=True)
class PreparedCall:
    """A tool call with its tool found and arguments parsed, or the Failed result explaining why not."""

    call: ToolCall
    tool: Tool | None = None
    args: dict[str, Any] | None = None
    failure: ToolResult | None = None

    @property
    def awaited(self) -> bool:
        """Whether this call must run outside the step's transaction."""
        return self.tool is not None and self.tool.awaited is not None


def result_text(value: Any) -> str:
    """A return value as the result message (Letta's rules), truncated with Letta's note past 50,000 chars."""
    if isinstance(value, str):
        text = value
    elif value is None:
        text = "None"
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    if len(text) > RETURN_CHAR_LIMIT:
        text = (
            f"{text[:RETURN_CHAR_LIMIT]}... [NOTE: function output was truncated since it exceeded the character "
            f"limit: {len(text)} > {RETURN_CHAR_LIMIT}]"
        )
    return text


def _check_arguments(tool: Tool, args: dict[str, Any]) -> dict[str, Any]:
    """Keep the declared arguments, coerce numeric strings, and refuse missing or mistyped ones."""
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    missing = [name for name in tool.parameters.get("required", []) if args.get(name) is None]
    if missing:
        raise ToolFailure(f"{tool.name}() is missing required argument(s): {', '.join(missing)}")
    clean: dict[str, Any] = {}
    for name, value in args.items():
        spec = properties.get(name)
        if spec is None or value is None:
            continue  # models add extras (request_heartbeat, thinking): ignore rather than fail the call
        expected = spec.get("type")
        if expected == "integer" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if expected == "array" and isinstance(value, str):
            value = [value]
        wanted = _JSON_TYPES.get(expected) if isinstance(expected, str) else None
        if wanted is not None and (
            not isinstance(value, wanted) or (expected == "integer" and isinstance(value, bool))
        ):
            raise ToolFailure(f"{tool.name}() argument {name!r} must be of type {expected}, not {type(value).__name__}")
        clean[name] = value
    return clean


class Toolbox:
    """Every tool the runtime knows, which ones each agent is offered, and how a call becomes a result.

    An agent is offered the default tools, or the built-in names listed in its ``metadata["tools"]``,
    plus the groups it opts into with a true metadata flag (``opt_in``), plus any tools attached to it
    (``attach``), plus one tool per agent attached to it in the store (built by ``agent_tool_factory``,
    e.g. ``ask_<name>``).
    """

    def __init__(self, tools: Iterable[Tool] = (), *, defaults: Iterable[str] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._defaults: list[str] = []
        self._attached: dict[str, dict[str, Tool]] = {}
        self._opt_in: dict[str, list[str]] = {}
        self.agent_tool_factory: Callable[[ToolAgent], Tool] | None = None
        for tool in tools:
            self.register(tool)
        for name in defaults:
            self._defaults.append(self._known(name).name)

    def _known(self, name: str) -> Tool:
        if name not in self._tools:
            raise KeyError(f"no tool named {name!r} is registered")
        return self._tools[name]

    def register(self, tool: Tool, *, default: bool = False) -> None:
        """Make a tool known by name (replacing one of that name); ``default`` offers it to every agent."""
        self._tools[tool.name] = tool
        if default and tool.name not in self._defaults:
            self._defaults.append(tool.name)

    def opt_in(self, flag: str, names: Iterable[str]) -> None:
        """Offer the registered tools ``names`` to agents whose metadata has ``flag`` set to true."""
        self._opt_in[flag] = [self._known(name).name for name in names]

    def attach(self, agent_id: str, tool: Tool) -> None:
        """Offer a tool to one agent only (in this process)."""
        self._attached.setdefault(agent_id, {})[tool.name] = tool

    def detach(self, agent_id: str, name: str) -> None:
        """Stop offering an attached tool to an agent (no-op if it was not attached)."""
        self._attached.get(agent_id, {}).pop(name, None)

    @property
    def names(self) -> list[str]:
        """Names of every registered tool."""
        return list(self._tools)

    def tools_for(
        self, agent_id: str, metadata: dict[str, Any] | None = None, tool_agents: Sequence[ToolAgent] = ()
    ) -> dict[str, Tool]:
        """The tools offered to an agent, by name, in the order they are shown to its LLM.

        ``tool_agents`` are the agents attached to it as tools (read from the store when its run started).
        """
        chosen = (metadata or {}).get("tools")
        names = chosen if isinstance(chosen, list) and all(isinstance(n, str) for n in chosen) else self._defaults
        for flag, group in self._opt_in.items():
            if (metadata or {}).get(flag) is True:
                names = [*names, *(n for n in group if n not in names)]
        offered = {name: self._tools[name] for name in names if name in self._tools}
        unknown = [name for name in names if name not in self._tools]
        if unknown:
            log.warning("agent %s lists unknown tools %s; known: %s", agent_id, unknown, ", ".join(self._tools))
        offered.update(self._attached.get(agent_id, {}))
        if self.agent_tool_factory is not None:
            for tool_agent in tool_agents:
                tool = self.agent_tool_factory(tool_agent)
                if tool.name in offered:  # possible with a custom MCP_LETTA_AGENT_TOOL template
                    log.warning(
                        "agent %s: tool %r for agent %r shadows a tool; skipped", agent_id, tool.name, tool_agent.name
                    )
                    continue
                offered[tool.name] = tool
        return offered

    # -- dispatch ----------------------------------------------------------------------------------
    @staticmethod
    def prepare(call: ToolCall, offered: dict[str, Tool]) -> PreparedCall:
        """Find the tool and parse the arguments; a problem becomes a Failed result the model can read."""
        tool = offered.get(call.name)
        if tool is None:
            available = ", ".join(offered) or "none"
            return PreparedCall(
                call, failure=ToolResult(False, f"Tool {call.name!r} does not exist. Available tools: {available}")
            )
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError as exc:
            message = f"Error parsing the arguments of {call.name}: {exc}. Pass the arguments as one JSON object."
            return PreparedCall(call, tool, failure=ToolResult(False, message))
        if not isinstance(args, dict):
            message = f"The arguments of {call.name} must be a JSON object, not {type(args).__name__}."
            return PreparedCall(call, tool, failure=ToolResult(False, message))
        try:
            return PreparedCall(call, tool, args=_check_arguments(tool, args))
        except ToolFailure as exc:
            return PreparedCall(call, tool, failure=ToolResult(False, exc.message))

    @staticmethod
    def _failed(prepared: PreparedCall, exc: Exception) -> ToolResult:
        if isinstance(exc, ToolFailure | LettaError):
            return ToolResult(False, result_text(exc.message))
        log.exception("tool %s failed unexpectedly", prepared.call.name, exc_info=exc)
        return ToolResult(False, f"Error executing function {prepared.call.name}: {type(exc).__name__}: {exc}")

    def run_in_transaction(self, tx: Tx, prepared: PreparedCall, ctx: ToolContext) -> ToolResult:
        """Run a store-only call inside the caller's transaction; a failed call leaves no trace (savepoint)."""
        if prepared.failure is not None:
            return prepared.failure
        assert prepared.tool is not None and prepared.tool.in_transaction is not None and prepared.args is not None
        try:
            with tx.savepoint():
                value = prepared.tool.in_transaction(tx, ctx, prepared.args)
        except Exception as exc:
            return self._failed(prepared, exc)
        return ToolResult(True, result_text(value))

    async def run_awaited(self, prepared: PreparedCall, ctx: ToolContext) -> ToolResult:
        """Run a call that waits, outside any transaction."""
        if prepared.failure is not None:
            return prepared.failure
        assert prepared.tool is not None and prepared.tool.awaited is not None and prepared.args is not None
        try:
            value = await prepared.tool.awaited(ctx, prepared.args)
        except Exception as exc:
            return self._failed(prepared, exc)
        return ToolResult(True, result_text(value))
