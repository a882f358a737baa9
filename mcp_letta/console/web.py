"""The console's HTTP side: the page, its JSON API over ``AgentHub`` and the live change feed (SSE).

``Console(hub, ...).routes()`` are Starlette routes: ``/`` (the page, or the login form), ``/static/*``,
``/login``, ``/logout``, ``/api/*`` and ``/events``. The HTTP server mounts them next to ``/mcp``;
``serve_console`` serves them alone (``mcp-letta console``). Every handler is a thin adapter: it checks the
session (``auth.py``), calls one or a few hub methods and returns their models as JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from mcp_letta.console.auth import ConsoleAuth
from mcp_letta.errors import Conflict, Invalid, LettaError, NotFound, VersionConflict
from mcp_letta.hub import AgentHub, Change
from mcp_letta.models import Agent, Page, Run
from mcp_letta.server.per_agent_tools import AgentTools

log = logging.getLogger("mcp_letta.console")

STATIC = resources.files("mcp_letta.console") / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain"}
# The page loads only its own files: nothing inline, nothing from elsewhere, never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes a browser send "Origin: null" with the login form
    "Cache-Control": "no-store",
}
COUNT_CAP = 1_000  # agents, blocks, and queued/running runs per listing (the store's largest page)
ACTIVITY_RUNS = 1_000  # the newest runs consulted for each agent's last activity
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
SSE_BUFFER = 1_000  # changes held for one slow page before the hub drops them (the page then re-reads)
STATUS = {NotFound: 404, VersionConflict: 409, Conflict: 409, Invalid: 400}
LOGIN_FAILED = '<p class="error" role="alert">That is not the token. Try again.</p>'


def as_json(value: Any) -> Any:
    """Models (and lists of them) as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | Page):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def error_response(exc: LettaError) -> JSONResponse:
    """A hub error as JSON: its message (which says what to do), its code, and for a version conflict the
    block's current version and value."""
    body: dict[str, Any] = {"error": str(exc), "code": exc.code}
    if isinstance(exc, VersionConflict):
        body["current_version"] = exc.details.get("current_version")
        body["current_value"] = exc.details.get("current_value")
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
    return JSONResponse(body, status_code=status)


def static_text(name: str) -> str:
    """A file of the console's static folder, as text."""
    return (STATIC / name).read_text(encoding="utf-8")


class Console:
    """The console over one hub. ``tools`` (the MCP server's per-agent tools) names each agent's MCP tool."""

    def __init__(self, hub: AgentHub, auth: ConsoleAuth, tools: AgentTools) -> None:
        self.hub = hub
        self.auth = auth
        self.tools = tools

    def routes(self) -> list[BaseRoute]:
        """The console's routes, to list before the MCP app's mount."""
        api: list[tuple[str, Callable[..., Awaitable[Any]], str]] = [
            ("/api/session", self.session, "GET"),
            ("/api/agents", self.agents, "GET"),
            ("/api/agents/{agent}", self.agent, "GET"),
            ("/api/agents/{agent}/context", self.context, "GET"),
            ("/api/agents/{agent}/messages", self.messages, "GET"),
            ("/api/agents/{agent}/messages", self.send, "POST"),
            ("/api/agents/{agent}/archival", self.archival, "GET"),
            ("/api/blocks", self.blocks, "GET"),
            ("/api/blocks/{block}", self.block, "GET"),
            ("/api/blocks/{block}", self.write_block, "POST"),
            ("/api/runs", self.runs, "GET"),
            ("/api/runs/{run}", self.run, "GET"),
            ("/api/runs/{run}/cancel", self.cancel, "POST"),
            ("/api/metrics", self.metrics, "GET"),
        ]
        routes: list[BaseRoute] = [
            Route("/", self.index, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/events", self.events, methods=["GET"]),
        ]
        routes += [
            Route(path, self._api(handler, write=method == "POST"), methods=[method]) for path, handler, method in api
        ]
        return routes

    def _api(self, handler: Callable[..., Awaitable[Any]], *, write: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            refused = await self.auth.refused(request, write=write)
            if refused is not None:
                return refused
            try:
                if write:
                    try:
                        body = await request.json()
                    except ValueError:
                        raise Invalid("the request body is not JSON: send a JSON object") from None
                    if not isinstance(body, dict):
                        raise Invalid("the request body must be a JSON object")
                    result = await handler(request, body)
                else:
                    result = await handler(request)
            except LettaError as exc:
                return error_response(exc)
            return JSONResponse(as_json(result), headers={"Cache-Control": "no-store"})

        return endpoint

    # -- the page ----------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        """The console page; with a token and no session, the login form."""
        refused = await self.auth.host_refused(request)
        if refused is not None:
            return refused
        if self.auth.csrf(request) is None:
            if self.auth.token_required:
                page = static_text("login.html").replace("<!--message-->", "")
                return Response(page, media_type="text/html", headers=SECURITY_HEADERS)
            response = Response(static_text("index.html"), media_type="text/html", headers=SECURITY_HEADERS)
            self.auth.start_session(response, request)
            return response
        return Response(static_text("index.html"), media_type="text/html", headers=SECURITY_HEADERS)

    async def login(self, request: Request) -> Response:
        """Check the token from the login form; on success set the session cookie and go to the console."""
        refused = await self.auth.host_refused(request)
        if refused is not None:
            return refused
        form = await request.form()
        token = form.get("token")
        if not isinstance(token, str) or not self.auth.token_matches(token):
            page = static_text("login.html").replace("<!--message-->", LOGIN_FAILED)
            return Response(page, status_code=401, media_type="text/html", headers=SECURITY_HEADERS)
        response = RedirectResponse("/", status_code=303)
        self.auth.start_session(response, request)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session (a write: it needs the CSRF token)."""
        refused = await self.auth.refused(request, write=True)
        if refused is not None:
            return refused
        response = JSONResponse({"ok": True})
        self.auth.end_session(request, response)
        return response

    async def static(self, request: Request) -> Response:
        """The page's script, style sheet and licence files (no session needed: they hold no data)."""
        refused = await self.auth.host_refused(request)
        if refused is not None:
            return refused
        name = request.path_params["name"]
        kind = next((t for suffix, t in STATIC_TYPES.items() if name.endswith(suffix)), None)
        file = STATIC / name
        if kind is None or "/" in name or not file.is_file():
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(file.read_bytes(), media_type=kind, headers={"X-Content-Type-Options": "nosniff"})

    # -- the live feed -----------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        """Server-Sent Events: one ``change`` event per batch of store changes (this process's and others'),
        each a list of ``{kind, ref}``; the page re-reads what it shows that changed."""
        refused = await self.auth.refused(request)
        if refused is not None:
            return refused
        changes = self.hub.subscribe_changes(buffer=SSE_BUFFER)

        async def stream() -> AsyncIterator[str]:
            async with changes:
                yield "retry: 2000\n\n"
                while True:
                    batch: list[Change] = []
                    with anyio.move_on_after(KEEPALIVE_S):
                        batch.append(await changes.receive())
                    if not batch:
                        yield ": keepalive\n\n"
                        continue
                    while True:  # everything already queued goes in one event
                        try:
                            batch.append(changes.receive_nowait())
                        except anyio.WouldBlock:
                            break
                    data = [{"kind": c.kind, "ref": c.ref} for c in dict.fromkeys(batch)]
                    yield f"event: change\ndata: {json.dumps(data)}\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    # -- the API -----------------------------------------------------------------------------------
    async def session(self, request: Request) -> dict[str, Any]:
        """The page's CSRF token (readable only by a same-origin script) and whether a token guards the console."""
        return {"csrf": self.auth.csrf(request), "token_required": self.auth.token_required}

    async def agents(self, request: Request) -> list[dict[str, Any]]:
        """Agents (filtered by ``tag`` and ``q``) with their MCP tool or why they have none, their queued and
        running runs and their last activity."""
        tag, query = request.query_params.get("tag") or None, request.query_params.get("q") or None
        everyone = await self.hub.list_agents(limit=COUNT_CAP)
        shown = (
            everyone
            if not (tag or query)
            else await self.hub.list_agents(tags=[tag] if tag else None, query=query, limit=COUNT_CAP)
        )
        plan = self.tools.plan(everyone.items)
        queued = await self.hub.list_runs(status="queued", limit=COUNT_CAP)
        running = await self.hub.list_runs(status="running", limit=COUNT_CAP)
        recent = await self.hub.list_runs(limit=ACTIVITY_RUNS)
        last: dict[str, datetime] = {}
        for run in recent:
            moment = run.finished_at or run.started_at or run.created_at
            if run.agent_id not in last or moment > last[run.agent_id]:
                last[run.agent_id] = moment
        return [
            {
                "id": a.id, "name": a.name, "description": a.description, "tags": a.tags,
                "tool": plan[a.id][0], "no_tool_because": plan[a.id][1],
                "queued": sum(r.agent_id == a.id for r in queued), "running": sum(r.agent_id == a.id for r in running),
                "last_activity": max(a.updated_at, last.get(a.id, a.updated_at)),
            }
            for a in shown
        ]  # fmt: skip

    async def agent(self, request: Request) -> dict[str, Any]:
        """One agent with its blocks, and its MCP tool."""
        agent: Agent = await self.hub.get_agent(request.path_params["agent"])
        tool, why_not = self.tools.plan((await self.hub.list_agents(limit=COUNT_CAP)).items).get(
            agent.id, (None, f"not among the first {COUNT_CAP} agents by name")
        )
        return {"agent": agent, "tool": tool, "no_tool_because": why_not}

    async def context(self, request: Request) -> Any:
        """The agent's context window, section by section."""
        return await self.hub.context_window(request.path_params["agent"])

    async def messages(self, request: Request) -> Any:
        """The agent's history: the newest messages, or those matching ``q``."""
        agent, query = request.path_params["agent"], request.query_params.get("q")
        if query:
            return await self.hub.search_messages(agent, query, limit=50)
        return await self.hub.get_messages(agent, limit=100)

    async def archival(self, request: Request) -> Any:
        """The agent's archival passages: the newest, or those matching ``q`` (best first)."""
        agent, query = request.path_params["agent"], request.query_params.get("q")
        if query:
            return await self.hub.archival_search(agent, query, limit=50)
        return await self.hub.archival_list(agent, limit=100)

    async def send(self, request: Request, body: dict[str, Any]) -> Run:
        """Send ``message`` to the agent; returns the queued run at once (its steps arrive on the feed)."""
        message = body.get("message")
        if not isinstance(message, str):
            raise Invalid("send {'message': '<text>'}")
        return await self.hub.send_message(request.path_params["agent"], message)

    async def blocks(self, request: Request) -> Any:
        """Every block (value, version, the agents sharing it)."""
        return await self.hub.list_blocks(limit=COUNT_CAP)

    async def block(self, request: Request) -> dict[str, Any]:
        """One block and its newest writes (writer, time, old and new value)."""
        block = await self.hub.read_block(request.path_params["block"])
        return {"block": block, "history": await self.hub.block_history(block.id, limit=50)}

    async def write_block(self, request: Request, body: dict[str, Any]) -> Any:
        """Write ``value`` against ``expected_version``: a stale version is a 409 with the current value."""
        value, version = body.get("value"), body.get("expected_version")
        if not isinstance(value, str) or not isinstance(version, int) or isinstance(version, bool):
            raise Invalid("send {'value': '<text>', 'expected_version': <the version you read>}")
        return await self.hub.write_block(
            request.path_params["block"], value, expected_version=version, writer="console"
        )

    async def runs(self, request: Request) -> Any:
        """Runs, newest first: of one ``agent`` and/or in one ``status``, at most ``limit`` (default 200)."""
        params = request.query_params
        try:
            limit = int(params.get("limit", "200"))
        except ValueError:
            raise Invalid("limit must be a whole number") from None
        return await self.hub.list_runs(params.get("agent") or None, status=params.get("status") or None, limit=limit)

    async def run(self, request: Request) -> Any:
        """One run: status, steps with their tool calls, reply or error, usage."""
        return await self.hub.get_run(request.path_params["run"])

    async def cancel(self, request: Request, body: dict[str, Any]) -> Any:
        """Cancel a run (a queued one at once, a running one at its next step)."""
        return await self.hub.cancel_run(request.path_params["run"])

    async def metrics(self, request: Request) -> Any:
        """Traffic per agent and per sender-receiver pair (``get_metrics``)."""
        return await self.hub.get_metrics()
