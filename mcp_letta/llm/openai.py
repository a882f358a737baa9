"""``OpenAIClient``: chat completions over any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, llama.cpp).

Owns the HTTP call, retries with backoff, turning failures into ``LLMUnavailable`` with a next step, and
parsing answers, including the tool calls small local models print as JSON text instead of ``tool_calls``.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import random
import re
import ssl
import time
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
import httpx2

from mcp_letta.errors import Invalid, LLMUnavailable
from mcp_letta.llm.base import ChatRequest, ChatResponse, Usage, arguments_json, compact_json, new_call_id
from mcp_letta.models import ToolCall

logger = logging.getLogger("mcp_letta.llm")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
MAX_BACKOFF_S = 30.0
ERROR_TEXT_LIMIT = 500
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```", re.DOTALL)
_FENCED_LATER = re.compile(r"```(?:json)?\s*\n(\{.*?\}|\[.*?\])\s*\n?```", re.DOTALL)
_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


class OpenAIClient:
    """One pooled HTTP client for one endpoint and key; safe to share between many concurrent agents.

    Connections, proxies (``HTTPS_PROXY``/``NO_PROXY`` and the system settings) and TLS trust (the system
    store, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``) are httpx2's, read from the environment when it is made.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        *,
        backoff_s: float = 0.5,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise Invalid(f"LLM base URL {base_url!r} must start with http:// or https://")
        if max_retries < 0:
            raise Invalid(f"max_retries={max_retries} must be 0 or more")
        self.base_url = base_url.rstrip("/")
        endpoint = urlsplit(f"{self.base_url}/chat/completions")
        if not endpoint.hostname:
            raise Invalid(f"LLM base URL {base_url!r} has no host")
        # What messages and logs show: a password in the URL (http://user:pw@host) is a secret too.
        shown = endpoint
        if endpoint.password:
            shown = endpoint._replace(netloc=endpoint.netloc.replace(f":{endpoint.password}@", ":***@"))
        self.url = urlunsplit(shown)
        self._secrets = [secret for secret in (api_key, endpoint.password) if secret]
        host_port = endpoint.netloc.rpartition("@")[2]
        self._origin = f"{endpoint.scheme}://{host_port}"
        # Credentials travel in the Authorization header only, never in the URL httpx2 sees.
        try:
            _ = endpoint.port  # urlsplit checks the port only when it is read
            self._endpoint = httpx2.URL(urlunsplit(endpoint._replace(netloc=host_port)))
        except (ValueError, httpx2.InvalidURL) as exc:
            raise Invalid(f"cannot use the LLM endpoint {self.url}: {self._redact(str(exc))}") from None
        self.max_retries = max_retries
        self.prints_calls = False
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(timeout_s, 10.0)
        self._api_key = api_key or None
        headers = {"user-agent": f"mcp-letta/{_version()}", "accept": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        elif endpoint.username is not None:
            userinfo = f"{unquote(endpoint.username)}:{unquote(endpoint.password or '')}"
            headers["authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        for name, value in headers.items():
            if not value.isascii() or any(c in value for c in "\r\n\0"):
                raise Invalid(f"the {name} header for {self.url} holds a line break or a non-ASCII character")
        self._post_headers = {"content-type": "application/json"}
        self._http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(timeout_s, connect=self.connect_timeout_s),
            # As the OpenAI SDK: a broadcast sends one request per agent at once, each on its own connection.
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
        )

    def __repr__(self) -> str:
        return f"OpenAIClient({self.url!r}, api_key={'set' if self._api_key else 'unset'})"

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """POST one chat completion, retrying transient failures; raise ``LLMUnavailable`` when it fails."""
        body = encode_request(request)
        attempts = 1 + self.max_retries
        last_failure = "no attempt made"
        resent = False
        attempt = 1
        while True:
            wait: float | None = None
            try:
                response = await self._http.post(self._endpoint, content=body, headers=self._post_headers)
            except httpx2.TransportError as exc:
                if not resent and _closed_before_answering(exc):
                    # A kept-alive connection the server closed (its idle timeout) just as the request
                    # went out: nothing was answered, so it is sent once more at once, not counted as a retry.
                    resent = True
                    logger.debug("LLM call to %s: the connection closed before any answer; sent again", self.url)
                    continue
                last_failure = self._describe(exc)
            else:
                if response.status_code == 200:
                    return self._parse(response, request)
                last_failure = f"HTTP {response.status_code}: {self._error_text(response)}"
                if response.status_code not in RETRY_STATUSES:
                    raise self._refusal(response, request)
                wait = retry_after_seconds(response.headers.get("retry-after"))
            if attempt == attempts:
                break
            if wait is None:
                # Full jitter keeps 100 agents that failed together from retrying together.
                wait = random.uniform(0.5, 1.0) * min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))
            logger.warning(
                "LLM call to %s failed (%s); retry %d of %d in %.2fs",
                self.url,
                last_failure,
                attempt,
                self.max_retries,
                wait,
            )
            await anyio.sleep(wait)
            attempt += 1
        failed = "once" if attempts == 1 else f"{attempts} times"
        raise LLMUnavailable(
            f"the LLM endpoint {self.url} failed {failed}, last with {last_failure}: "
            "check MCP_LETTA_LLM_BASE_URL and that the server is running",
            url=self.url,
            attempts=attempts,
        )

    def _describe(self, exc: httpx2.TransportError) -> str:
        """What went wrong on the wire, naming the endpoint and never a secret, e.g. ``ConnectError: ...``."""
        detail = self._redact(str(exc)).rstrip(".") or "no detail"
        if isinstance(exc, httpx2.ConnectTimeout):
            text = f"connecting to {self._origin} took over {self.connect_timeout_s:g} s"
        elif isinstance(exc, httpx2.TimeoutException):
            text = f"{self._origin} did not answer within {self.timeout_s:g} s"
        elif isinstance(exc, httpx2.ProxyError):
            text = f"the proxy for {self._origin} failed: {detail}"
        elif isinstance(exc, httpx2.ConnectError) and (rejected := _certificate_error(exc)) is not None:
            text = (
                f"the TLS certificate of {self._origin} was not accepted ({rejected.verify_message}): if it is "
                "signed by your own CA, point SSL_CERT_FILE at a bundle that holds it"
            )
        elif isinstance(exc, httpx2.ConnectError):
            text = f"cannot connect to {self._origin}: {detail}"
        elif isinstance(exc, httpx2.NetworkError):
            text = f"the connection to {self._origin} broke ({detail})"
        else:
            text = f"the HTTP exchange with {self._origin} failed: {detail}"
        return f"{type(exc).__name__}: {text}"

    def _refusal(self, response: httpx2.Response, request: ChatRequest) -> LLMUnavailable:
        """The error for a status that retrying will not fix."""
        status = response.status_code
        text = self._error_text(response)
        if status in (401, 403):
            return LLMUnavailable(
                f"the LLM endpoint {self.url} refused the API key (HTTP {status}: {text}): set MCP_LETTA_LLM_API_KEY",
                url=self.url,
                status=status,
            )
        if status == 404:
            return LLMUnavailable(
                f"the LLM endpoint {self.url} answered 404 for model {request.model!r} ({text}): the model "
                "is not served there or the base URL path is wrong (it usually ends in /v1): check "
                "MCP_LETTA_MODEL and MCP_LETTA_LLM_BASE_URL",
                url=self.url,
                status=status,
            )
        return LLMUnavailable(
            f"the LLM endpoint {self.url} rejected the request for model {request.model!r} (HTTP {status}): {text}",
            url=self.url,
            status=status,
        )

    def _error_text(self, response: httpx2.Response) -> str:
        """The server's own error message, short and with the API key removed (some servers echo it)."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict | str):
            error = data["error"]
            text = str(error.get("message") or error) if isinstance(error, dict) else error
        elif isinstance(data, dict) and data.get("detail"):
            text = str(data["detail"])
        else:
            text = response.text
        text = self._redact(" ".join(text.split())) or "empty body"
        return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _parse(self, response: httpx2.Response, request: ChatRequest) -> ChatResponse:
        try:
            data = response.json()
            message = data["choices"][0]["message"]
            if not isinstance(message, dict):
                raise TypeError("message is not an object")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            start = self._redact(response.text[:200])
            raise LLMUnavailable(
                f"the LLM endpoint {self.url} answered with something that is not an OpenAI chat "
                f"completion ({type(exc).__name__}: {exc}; body starts {start!r}): "
                "check that MCP_LETTA_LLM_BASE_URL points at an OpenAI-compatible /v1 API",
                url=self.url,
            ) from None
        content = message_text(message.get("content"))
        tool_calls = parse_tool_calls(message.get("tool_calls"))
        if not tool_calls and content and (offered := request.tool_names()):
            printed = tool_calls_from_content(content, offered)
            if printed:
                logger.debug("accepted %d tool call(s) printed as JSON in content", len(printed))
                tool_calls, content = printed, None
                self.prints_calls = True
        choice = data["choices"][0]
        return ChatResponse(
            content=content,
            tool_calls=tool_calls,
            usage=parse_usage(data.get("usage"), data.get("timings")),
            finish_reason=choice.get("finish_reason") if isinstance(choice, dict) else None,
            model=data.get("model"),
        )


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body for ``/chat/completions``: unset fields and tool fields without tools are left out."""
    body: dict[str, Any] = {"model": request.model, "messages": request.messages}
    if request.tools:
        body["tools"] = request.tools
        body["tool_choice"] = request.tool_choice
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        # max_tokens, not max_completion_tokens: Ollama, vLLM and llama.cpp all understand it.
        body["max_tokens"] = request.max_tokens
    return body


def encode_request(request: ChatRequest) -> bytes:
    """``request_body`` as compact JSON bytes, reusing ``request.messages_json`` and ``request.tools_json``
    when the caller encoded them (an agent's history is encoded once, not again at every step)."""
    body = request_body(request)
    encoded = []
    if request.messages_json is not None:
        del body["messages"]
        encoded.append(f'"messages":{request.messages_json}')
    if request.tools_json is not None and "tools" in body:
        del body["tools"]
        encoded.append(f'"tools":{request.tools_json}')
    head = compact_json(body)
    return (f"{head[:-1]},{','.join(encoded)}}}" if encoded else head).encode()


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped at a minute."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def message_text(content: Any) -> str | None:
    """The text of a message ``content``: a string, or a list of parts some servers send."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "".join(parts)
    return str(content)


def parse_usage(raw: Any, timings: Any = None) -> Usage:
    """Token counts, tolerating missing or null fields. Cached prompt tokens come from OpenAI's
    ``usage.prompt_tokens_details.cached_tokens`` or llama.cpp's ``timings.cache_n``."""
    if not isinstance(raw, dict):
        return Usage()
    counts = {k: raw.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None and isinstance(timings, dict):
        cached = timings.get("cache_n")
    if isinstance(cached, int) and cached >= 0:
        counts["cached_tokens"] = cached
    usage = Usage(**{k: v for k, v in counts.items() if isinstance(v, int)})
    if not usage.total_tokens:
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return usage


def parse_tool_calls(raw: Any) -> list[ToolCall]:
    """``message.tool_calls`` as ``ToolCall``s; entries without a function name are dropped."""
    calls: list[ToolCall] = []
    for item in raw if isinstance(raw, list) else []:
        function = item.get("function") if isinstance(item, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            logger.warning("dropped a tool call without a function name: %.200r", item)
            continue
        call_id = item.get("id") if isinstance(item.get("id"), str) and item.get("id") else new_call_id()
        calls.append(ToolCall(id=call_id, name=name, arguments=arguments_json(function.get("arguments"))))
    return calls


def tool_calls_from_content(content: str, offered: set[str]) -> list[ToolCall] | None:
    """Tool calls a model printed as text, or ``None`` when ``content`` is an answer, not calls.

    Small models often print their calls instead of sending ``tool_calls``. Accepted: a JSON object or list of
    ``{"name", "arguments"|"parameters"}``, ``{"tool", ...}`` or ``{"function": {...}}``, bare or fenced,
    with its braces doubled (``{{...}}``, a template slip) and with prose after it; ``<tool_call>`` blocks;
    a fenced call after some prose when it names an offered tool. A call whose name is not offered is still
    a call when it has arguments, so the model is told the tool does not exist (and which do) instead of
    the user receiving the call as the reply.
    """
    text = content.strip()
    hermes = _HERMES_CALL.findall(text)
    if hermes:
        items: list[Any] = [_loads(block) for block in hermes]
    elif text.startswith(("{", "[", "```")):
        items = _printed_items(text)
    elif (fenced := _FENCED_LATER.search(text)) is not None:  # prose, then a fenced call
        items = _printed_items(fenced.group(1))
        offered_only = [_printed_call(item, offered, strict=True) for item in items]
        return offered_only if offered_only and all(offered_only) else None  # type: ignore[return-value]
    else:
        return None
    calls = [_printed_call(item, offered, strict=False) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


def _printed_items(text: str) -> list[Any]:
    """The JSON value at the start of ``text`` (fence, doubled braces and trailing prose removed), as a list."""
    if fenced := _FENCE.match(text):
        text = fenced.group(1).strip()
    parsed = _loads_first(text)
    while parsed is None and text.startswith("{{") and text.rstrip().endswith("}}"):
        text = text[1:].rstrip()[:-1]
        parsed = _loads_first(text)
    if isinstance(parsed, dict) and isinstance(parsed.get("tool_calls"), list):
        parsed = parsed["tool_calls"]
    return parsed if isinstance(parsed, list) else [parsed]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _loads_first(text: str) -> Any:
    """The first JSON value in ``text``, whatever follows it."""
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except ValueError:
        return None


def _printed_call(item: Any, offered: set[str], *, strict: bool) -> ToolCall | None:
    if not isinstance(item, dict):
        return None
    function = item.get("function")
    if isinstance(function, dict):
        item = function
        name = function.get("name")
    else:
        name = function if isinstance(function, str) else item.get("name", item.get("tool"))
    if not isinstance(name, str) or not name:
        return None
    keys = ("arguments", "parameters", "args")
    if name not in offered and (strict or not any(key in item for key in keys)):
        return None
    arguments = next((item[key] for key in keys if key in item), None)
    if isinstance(arguments, str):
        # A string must itself be a JSON object, or this was prose that happened to parse.
        if not isinstance(_loads(arguments), dict):
            return None
    elif arguments is not None and not isinstance(arguments, dict):
        return None
    return ToolCall(id=new_call_id(), name=name, arguments=arguments_json(arguments))


def _closed_before_answering(exc: httpx2.TransportError) -> bool:
    # httpcore2's words for a connection that ended before a single byte of the answer arrived.
    return isinstance(exc, httpx2.RemoteProtocolError) and str(exc).startswith("Server disconnected without sending")


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed under a connect error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _version() -> str:
    from mcp_letta import __version__

    return __version__
