"""The web console: a page to watch and steer agents live (agents, chat, context window, blocks, runs,
traffic), served by the HTTP server at ``/`` next to ``/mcp``, or alone by ``mcp-letta console``.

The server side is a thin adapter over ``AgentHub`` (``web.py``) behind the same Host checks as ``/mcp``
and a session cookie with a CSRF token (``auth.py``); the page is plain HTML, CSS and one script in
``static/``, with no build step and nothing fetched from elsewhere.
"""

from __future__ import annotations

import webbrowser
from functools import partial

import anyio
from starlette.applications import Starlette

from mcp_letta.config import Settings
from mcp_letta.console.auth import ConsoleAuth
from mcp_letta.console.web import Console
from mcp_letta.hub import AgentHub
from mcp_letta.server.app import LettaServer, build_server

__all__ = ["Console", "ConsoleAuth", "console_app", "console_for", "serve_console"]


def console_for(server: LettaServer, token: str | None, host: str, allowed_hosts: tuple[str, ...] = ()) -> Console:
    """The console over ``server``'s hub, naming agent tools as ``server`` publishes them."""
    from mcp_letta.server.http import transport_security

    return Console(server.hub, ConsoleAuth(token, transport_security(host, allowed_hosts)), server.agent_tools)


def console_app(server: LettaServer, token: str | None, host: str, allowed_hosts: tuple[str, ...] = ()) -> Starlette:
    """The console alone as an ASGI app (no ``/mcp``), over an open hub."""
    return Starlette(routes=console_for(server, token, host, allowed_hosts).routes())


async def serve_console(
    settings: Settings, host: str, port: int, allowed_hosts: tuple[str, ...] = (), *, open_browser: bool = False
) -> None:
    """Open the store named by ``settings`` and serve the console alone until interrupted; prints its URL
    (and with ``open_browser`` opens it)."""
    from mcp_letta.server.http import check_bind, serve_app

    check_bind(host, settings.token)
    async with AgentHub(settings) as hub:
        app = console_app(build_server(hub, settings), settings.token, host, allowed_hosts + settings.allowed_hosts)
        async with anyio.create_task_group() as tg:
            bound = await tg.start(partial(serve_app, app, host, port))
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            url = f"http://{f'[{shown}]' if ':' in shown else shown}:{bound}/"
            print(f"mcp-letta console: {url}  (database {settings.db_path})", flush=True)
            if open_browser:
                await anyio.to_thread.run_sync(webbrowser.open, url)
