"""A Letta-compatible REST API under ``/v1`` over the same ``AgentHub`` as MCP, for ``letta-client``.

``rest_app(hub, max_body_bytes)`` is the ASGI app ``http.py`` mounts at ``/v1`` behind the token and Host
checks; ``ENDPOINTS`` lists what is served, ``openapi_document()`` describes it.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_letta.hub import AgentHub
from mcp_letta.server.rest.endpoints import ENDPOINTS, KEEPALIVE_S, Endpoint, route_app
from mcp_letta.server.rest.openapi import openapi_document

__all__ = ["ENDPOINTS", "Endpoint", "openapi_document", "rest_app"]


def rest_app(hub: AgentHub, max_body_bytes: int, *, keepalive_s: float = KEEPALIVE_S) -> Starlette:
    """The ``/v1`` app: every endpoint of ``ENDPOINTS`` and ``/openapi.json``; unknown paths get Letta's 404.
    A message stream sends a ping every ``keepalive_s`` seconds while a step runs."""
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        """The OpenAPI document of what is served."""
        return JSONResponse(document)

    async def not_served(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"detail": f"{request.method} {request.url.path} is not served by mcp-letta: see /v1/openapi.json "
                       "for the supported endpoints"},
            status_code=getattr(exc, "status_code", 404),  # (405: the path is served, not with this method)
        )  # fmt: skip

    routes = [Route("/openapi.json", openapi, methods=["GET"])]
    routes += [Route(e.path, route_app(e, hub, max_body_bytes, keepalive_s), methods=[e.method]) for e in ENDPOINTS]
    app = Starlette(routes=routes)
    app.add_exception_handler(404, not_served)
    app.add_exception_handler(405, not_served)
    return app
