"""Which HTTP client reaches an endpoint: ``HTTPClient`` directly, or httpx2 when the environment names a proxy.

Proxies (CONNECT tunnels, proxy authentication, ``NO_PROXY`` rules) are httpx2's job; the lean client only
talks to the endpoint itself, which is the case every benchmark and nearly every user is in.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2

from mcp_letta.llm.http import ConnectFailed, HTTPClient, HTTPResponse, ProtocolError, TimedOut, host_and_port


class ProxiedHTTPClient:
    """``HTTPClient``'s interface over httpx2, for an endpoint the environment routes through a proxy."""

    def __init__(
        self,
        url: str,
        proxy: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        user_agent: str = "mcp-letta",
    ) -> None:
        self.origin = f"{urlsplit(url).scheme}://{host_and_port(url)}"
        self.timeout_s = timeout_s
        self._http = httpx2.AsyncClient(
            headers={"user-agent": user_agent, "accept": "application/json", **(headers or {})},
            timeout=httpx2.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=64),
            proxy=proxy,
            trust_env=False,  # the proxy is decided here; httpx must not pick another one
        )

    async def request(
        self, method: str, target: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> HTTPResponse:
        """As ``HTTPClient.request``, through the proxy."""
        headers = {"content-type": content_type} if body is not None else {}
        try:
            response = await self._http.request(method, self.origin + target, content=body, headers=headers)
        except httpx2.TimeoutException:
            raise TimedOut(f"{self.origin} did not answer within {self.timeout_s:g} s (through the proxy)") from None
        except (httpx2.ConnectError, httpx2.ProxyError) as exc:
            raise ConnectFailed(f"cannot connect to {self.origin} through the proxy: {exc}") from None
        except httpx2.TransportError as exc:
            raise ProtocolError(f"{self.origin} (through the proxy) failed: {type(exc).__name__}: {exc}") from None
        headers_out = {name.lower(): value for name, value in response.headers.items()}
        return HTTPResponse(response.status_code, headers_out, response.content)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, then
    ``NO_PROXY``; the system settings on macOS and Windows), or ``None`` to connect directly."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(host_and_port(url)):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def http_client_for(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    connect_timeout_s: float = 10.0,
    user_agent: str = "mcp-letta",
) -> HTTPClient | ProxiedHTTPClient:
    """A client for ``url``'s origin: direct (``HTTPClient``), or httpx2 when a proxy applies."""
    options: dict[str, Any] = {
        "headers": headers, "timeout_s": timeout_s, "connect_timeout_s": connect_timeout_s, "user_agent": user_agent
    }  # fmt: skip
    if (proxy := proxy_for(url)) is not None:
        return ProxiedHTTPClient(url, proxy, **options)
    return HTTPClient(url, **options)
