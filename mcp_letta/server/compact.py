"""Smaller ``tools/list`` answers: hosts pay context tokens for every tool schema they are sent.

Pydantic schemas carry a ``title`` on every object and spell ``X | None`` as an ``anyOf`` with
``"default": null``; this middleware rewrites them into equivalent, shorter JSON Schema, and leaves out
annotation hints that only repeat the spec's defaults.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from pydantic import BaseModel

# Keywords whose value is a mapping of names to schemas (not a schema itself).
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def compact_schema(schema: Any) -> Any:
    """The same JSON Schema without titles, null defaults, and with ``anyOf [T, null]`` as ``type: [T, null]``."""
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: compact_schema(sub) for name, sub in value.items()}
        else:
            out[key] = compact_schema(value)
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = options[0] if options[1] == {"type": "null"} else options[1]
        if isinstance(other.get("type"), str) and set(other) <= {"type", "items", "format", "minimum", "maximum"}:
            del out["anyOf"]
            out.update({**other, "type": [other["type"], "null"]})
    return out


def _output_only(schema: Any, defs: dict[str, Any]) -> Any:
    """Output schemas validate results; the model does not read them. Descriptions and defaults there are
    weight, and a ``$ref`` into ``$defs`` is longer than the definition it points to."""
    if isinstance(schema, list):
        return [_output_only(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and len(schema) == 1 and ref[8:] in defs:
        return _output_only(defs[ref[8:]], defs)
    return {
        key: ({n: _output_only(s, defs) for n, s in value.items()} if key in _SCHEMA_MAPS and isinstance(value, dict)
              else _output_only(value, defs))
        for key, value in schema.items()
        if key not in ("description", "default", "$defs")
    }  # fmt: skip


def _compact_output(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs", {})
    if any(_refers_to_itself(name, body) for name, body in defs.items()):
        return compact_schema(schema)  # recursive models keep their $defs
    return _output_only(compact_schema(schema), compact_schema(defs))


def _refers_to_itself(name: str, body: Any) -> bool:
    return f'"#/$defs/{name}"' in repr(body).replace("'", '"')


# The MCP spec's defaults: a hint equal to its default says nothing the client does not already assume.
ANNOTATION_DEFAULTS = {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True}


def _compact_tools(result: dict[str, Any]) -> dict[str, Any]:
    for tool in result.get("tools", []):
        hints = tool.get("annotations")
        if isinstance(hints, dict):
            hints = {k: v for k, v in hints.items() if ANNOTATION_DEFAULTS.get(k, object()) != v}
            tool["annotations"] = hints
            if not hints:
                del tool["annotations"]
        if isinstance(tool.get("inputSchema"), dict):
            tool["inputSchema"] = compact_schema(tool["inputSchema"])
        if isinstance(tool.get("outputSchema"), dict):
            tool["outputSchema"] = _compact_output(tool["outputSchema"])
    return result


async def compact_tool_list(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: compact the schemas in every ``tools/list`` result."""
    result = await call_next(ctx)
    if ctx.method != "tools/list":
        return result
    if isinstance(result, BaseModel):
        return _compact_tools(result.model_dump(mode="json", by_alias=True, exclude_none=True))
    if isinstance(result, dict):
        return _compact_tools(result)
    return result
