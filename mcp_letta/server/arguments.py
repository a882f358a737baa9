"""Tool arguments: every tool refuses arguments it does not declare, and a refused call reads like our other
errors (which argument, what was expected, what was given) instead of a pydantic dump.

The SDK validates a call's arguments against the pydantic model it generates from the tool's signature
(``Tool.fn_metadata.arg_model``). ``ArgumentCheckingToolManager`` is the server's tool manager: every tool
added, built-in or per agent, gets that model with ``extra="forbid"`` (so its input schema says
``additionalProperties: false``), and a validation failure becomes a ``ToolError`` worded by
``argument_problem``. Arguments added to a tool later need nothing extra.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool, ToolManager
from pydantic import ConfigDict, ValidationError

from mcp_letta.store.limits import shown
from mcp_letta.store.names import closest

MAX_PROBLEMS = 2  # one or two lines; the rest is counted
GIVEN_CHARS = 60  # what a message may quote of a value it was given


def strict(tool: Tool) -> Tool:
    """``tool`` refusing undeclared arguments: its arguments model forbids extras, its input schema says so."""
    base = tool.fn_metadata.arg_model
    if base.model_config.get("extra") == "forbid":
        return tool
    forbidding = type(base.__name__, (base,), {"model_config": ConfigDict(extra="forbid"), "__module__": __name__})
    tool.fn_metadata.arg_model = forbidding
    tool.parameters = forbidding.model_json_schema(by_alias=True)
    return tool


class ArgumentCheckingToolManager(ToolManager):
    """The SDK's tool manager, with undeclared arguments refused and argument errors worded for people."""

    def add_tool(self, fn: Any, *args: Any, **kwargs: Any) -> Tool:
        """Add a tool as the SDK does, then make it refuse undeclared arguments."""
        return strict(super().add_tool(fn, *args, **kwargs))

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        """Call a tool; an unknown tool or refused arguments give a one-to-two-line error saying what to fix."""
        tool = self.get_tool(name)
        if tool is None:
            near = closest(name, [t.name for t in self.list_tools()], n=1) if isinstance(name, str) else []
            hint = f"did you mean {near[0]!r}?" if near else "tools/list shows them"
            raise ToolError(f"unknown tool {shown(name)}; {hint}")
        try:
            return await super().call_tool(name, arguments, context, convert_result=convert_result)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            # Raised from the cause, so the SDK still logs only the rejected field names.
            raise ToolError(f"Error executing tool {name}: {argument_problem(cause, tool.parameters)}") from cause


def install(mcp: MCPServer) -> None:
    """Give ``mcp`` the argument-checking tool manager. Call it before any tool is added."""
    # Private, as ``_lowlevel_server`` is in notify.py: MCPServer takes no tool manager of our choosing, and
    # this is the one object every tool is added through and every call goes through.
    current = mcp._tool_manager
    if current.list_tools():
        raise RuntimeError("install the argument checks before adding tools")
    mcp._tool_manager = ArgumentCheckingToolManager(warn_on_duplicate_tools=current.warn_on_duplicate_tools)


def argument_problem(error: ValidationError, schema: dict[str, Any]) -> str:
    """What is wrong with a call's arguments, in one or two lines: the argument, what was expected, what was
    given (shortened); an unknown argument with the closest declared one."""
    lines: list[str] = []
    seen: set[str] = set()
    for err in error.errors(include_url=False):
        path, where, parent = _locate(err["loc"], schema)
        if path in seen:  # a union reports each of its arms: one line per argument
            continue
        seen.add(path)
        lines.append(_problem(err, path, where, parent, schema))
    if not lines:
        return "the arguments are not valid"
    more = len(lines) - MAX_PROBLEMS
    return "\n".join(lines[:MAX_PROBLEMS]) + (f" (and {more} more)" if more > 0 else "")


def _problem(err: Any, path: str, where: Schema, parent: Schema, root: dict[str, Any]) -> str:
    kind: str = err["type"]
    owner, _, name = path.rpartition(".") if "." in path else ("", "", path)
    if kind == "extra_forbidden":
        declared = list((parent or {}).get("properties", {}))
        if not owner:
            return f"unknown argument {name!r}; {_did_you_mean(name, declared, 'arguments')}"
        return f"unknown field {name!r} in {owner!r}; {_did_you_mean(name, declared, 'fields')}"
    label = f"argument {path!r}" if path.isidentifier() else repr(path)
    expected = _expected(where, root)
    if kind == "missing":
        return f"{label} is required" + (f": pass {expected}" if expected else "")
    given = _given(err.get("input"))
    if expected and kind not in ("value_error", "assertion_error"):
        return f"{label} must be {expected}; given {given}"
    message = str(err.get("msg", "is not valid")).removeprefix("Value error, ")
    return f"{label}: {message[:1].lower()}{message[1:]}; given {given}"


def _did_you_mean(name: str, declared: list[str], noun: str) -> str:
    near = closest(name, declared, n=1)
    if near:
        return f"did you mean {near[0]!r}?"
    if not declared:
        return f"this takes no {noun}"
    return f"the {noun} are: {', '.join(declared)}"


# -- where an error points in the input schema ---------------------------------------------------------
Schema = dict[str, Any] | None


def _locate(loc: tuple[Any, ...], root: dict[str, Any]) -> tuple[str, Schema, Schema]:
    """The argument path an error location names (``blocks[0].label``), the schema found there and the object
    schema it was looked up in. Steps that name a union's arm (``int``, ``list[str]``) are pydantic's, not the
    caller's: they are left out."""
    node: Schema = root
    parent: Schema = None
    text = ""
    for i, step in enumerate(loc):
        here = _concrete(node, root)
        if isinstance(step, int):
            node = here.get("items") if here else None
            text += f"[{step}]"
            continue
        props = here.get("properties") if here else None
        if props is None or (step not in props and i < len(loc) - 1):
            continue  # a union arm's tag (the last step may be an undeclared key instead)
        parent, node = here, props.get(step)
        text += f".{step}" if text else str(step)
    return text, node, parent


def _deref(node: Schema, root: dict[str, Any]) -> Schema:
    ref = node.get("$ref") if node else None
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        found: Schema = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"))
        return found
    return node


def _alternatives(node: Schema, root: dict[str, Any]) -> list[dict[str, Any]]:
    node = _deref(node, root)
    if node is None:
        return []
    if "anyOf" in node or "oneOf" in node:
        found: list[dict[str, Any]] = []
        for alt in node.get("anyOf", node.get("oneOf", [])):
            found += _alternatives(alt, root)
        return found
    return [node]


def _concrete(node: Schema, root: dict[str, Any]) -> Schema:
    """The alternative of a node that has shape (properties or items), else its first non-null one."""
    alts = [alt for alt in _alternatives(node, root) if alt.get("type") != "null"]
    shaped = [alt for alt in alts if "properties" in alt or "items" in alt]
    return (shaped or alts or [None])[0]


# -- saying what a schema wants and what was given --------------------------------------------------------
_NOUNS = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
          "object": "an object", "null": "null"}  # fmt: skip


def _expected(node: Schema, root: dict[str, Any]) -> str:
    """A schema in words: ``a whole number from 1 to 1000``, ``a list of strings``, ``one of 'a', 'b'``."""
    words: list[str] = []
    for alt in _alternatives(node, root):
        word = _one(alt, root)
        if word and word not in words:
            words.append(word)
    if "null" in words and len(words) > 1:
        words.remove("null")  # an optional argument: leaving it out is the usual way, not passing null
    return " or ".join(words)


def _one(node: dict[str, Any], root: dict[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(_one({**node, "type": k}, root) for k in kind if k != "null" or len(kind) == 1)
    if kind == "array" or "items" in node:
        items = _expected(node.get("items"), root) if isinstance(node.get("items"), dict) else ""
        word = f"a list of {_plural(items)}" if items else "a list"
        if "minItems" in node:
            word += f" with at least {node['minItems']}"
        return word
    if "properties" in node:
        return f"an object with {', '.join(node['properties'])}"
    word = _NOUNS.get(str(kind), "")
    low, high = node.get("minimum", node.get("exclusiveMinimum")), node.get("maximum", node.get("exclusiveMaximum"))
    if word and low is not None and high is not None:
        word += f" from {low} to {high}"
    elif word and low is not None:
        word += f" of at least {low}"
    elif word and high is not None:
        word += f" of at most {high}"
    if kind == "string" and "maxLength" in node:
        word += f" of at most {node['maxLength']} characters"
    return word


def _plural(noun: str) -> str:
    for single, many in (("a string", "strings"), ("a whole number", "whole numbers"), ("a number", "numbers"),
                         ("an object", "objects"), ("a list", "lists")):  # fmt: skip
        if noun.startswith(single):
            return many + noun[len(single) :]
    return noun


def _given(value: Any) -> str:
    """A value as the caller sent it (JSON), cut short; a long string says how long it was."""
    if isinstance(value, str) and len(value) > GIVEN_CHARS:
        return f'{json.dumps(value[: GIVEN_CHARS - 20], ensure_ascii=False)[:-1]}…" ({len(value)} characters)'
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except ValueError:  # e.g. nested too deep to print
        text = repr(value)
    return text if len(text) <= GIVEN_CHARS else text[: GIVEN_CHARS - 1] + "…"
