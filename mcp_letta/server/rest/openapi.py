"""The OpenAPI 3.1 document of the REST API, made from ``ENDPOINTS``: exactly what is served, with the
``letta-client`` method that calls each operation (``x-letta-client-method``)."""

from __future__ import annotations

from typing import Any

from mcp_letta import __version__
from mcp_letta.server.rest.endpoints import ENDPOINTS, Endpoint, path_params

ERROR = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}


def operation(endpoint: Endpoint) -> dict[str, Any]:
    """One operation object."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_params(endpoint.path)
    ]
    params += [{"name": name, "in": "query", "required": name == "query", "schema": {"type": "string"}}
               for name in endpoint.query]  # fmt: skip
    op: dict[str, Any] = {
        "operationId": endpoint.sdk.replace(".", "_"),
        "summary": endpoint.summary,
        "description": (endpoint.handler.__doc__ or "").strip(),
        "x-letta-client-method": f"client.{endpoint.sdk}",
        "parameters": params,
        "responses": {
            str(endpoint.status): {"description": "OK"},
            "404": {"description": "Unknown id", "content": {"application/json": {"schema": ERROR}}},
            "422": {"description": "Bad input", "content": {"application/json": {"schema": ERROR}}},
        },
    }
    if endpoint.sdk == "agents.messages.stream":
        op["responses"][str(endpoint.status)]["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    if endpoint.body is not None:
        schema = endpoint.body.model_json_schema()
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": schema}}}
    return op


def openapi_document() -> dict[str, Any]:
    """The whole document: every served path under ``/v1``."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault("/v1" + endpoint.path, {})[endpoint.method.lower()] = operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mcp-letta: Letta-compatible REST API",
            "version": __version__,
            "description": "The subset of Letta's V1 REST API that mcp-letta serves, for letta-client 1.x. "
            "Authenticate with 'Authorization: Bearer <MCP_LETTA_TOKEN>' when the server has a token.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
