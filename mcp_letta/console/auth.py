"""Who may use the console: the Host and Origin checks of ``/mcp``, a session cookie and a CSRF token.

Without ``MCP_LETTA_TOKEN`` (loopback binds only) opening the page starts a session; with a token a login
form takes it and sets an ``HttpOnly``, ``SameSite=Strict`` cookie. Every request under ``/api`` and
``/events`` needs the cookie; every write also needs the session's CSRF token in ``X-CSRF-Token`` and a JSON
body (which a cross-site form cannot send).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

COOKIE = "mcp_letta_console"
CSRF_HEADER = "x-csrf-token"
MAX_SESSIONS = 1_000  # the oldest session is forgotten beyond this: a flood of logins cannot grow memory


class ConsoleAuth:
    """Sessions of one console server (in memory: a restart asks for the token again)."""

    def __init__(self, token: str | None, security: TransportSecuritySettings) -> None:
        self.token_required = bool(token)
        self._token = (token or "").encode()
        self._sessions: OrderedDict[str, str] = OrderedDict()  # session id -> its CSRF token
        self._host_check = TransportSecurityMiddleware(security)

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token (in constant time: the time taken must not reveal a partial match)."""
        return self.token_required and hmac.compare_digest(given.encode(), self._token)

    def start_session(self, response: Response, request: Request) -> None:
        """Start a session and set its cookie on ``response``."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._sessions[session_id] = csrf
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        response.set_cookie(
            COOKIE, session_id, httponly=True, samesite="strict", path="/", secure=request.url.scheme == "https"
        )

    def end_session(self, request: Request, response: Response) -> None:
        """Forget the request's session and clear its cookie."""
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)
        response.delete_cookie(COOKIE, path="/")

    def csrf(self, request: Request) -> str | None:
        """The CSRF token of the request's session; None without a valid session cookie."""
        session_id = request.cookies.get(COOKIE)
        return None if session_id is None else self._sessions.get(session_id)

    async def host_refused(self, request: Request) -> Response | None:
        """421 for a foreign Host header, 403 for a foreign Origin (the checks ``/mcp`` applies); else None."""
        return await self._host_check.validate_request(request)

    async def refused(self, request: Request, *, write: bool = False) -> Response | None:
        """Why this API request may not proceed (a response to send), or None if it may."""
        refused = await self._host_check.validate_request(request, is_post=write)
        if refused is not None:
            return refused
        csrf = self.csrf(request)
        if csrf is None:
            hint = "log in with MCP_LETTA_TOKEN at /" if self.token_required else "open the console at / first"
            return JSONResponse({"error": f"no console session: {hint}", "code": "unauthorized"}, status_code=401)
        if write and not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
            return JSONResponse(
                {"error": "missing or wrong CSRF token: reload the page and try again", "code": "csrf"},
                status_code=403,
            )
        return None
