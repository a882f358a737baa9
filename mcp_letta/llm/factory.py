"""``LLMPool``: picks the LLM client and model for an agent from its settings and the process settings.

One ``OpenAIClient`` (one connection pool) is kept per endpoint and key, shared by every agent using it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from mcp_letta.config import Settings
from mcp_letta.errors import LettaError, LLMUnavailable
from mcp_letta.llm.base import LLMClient
from mcp_letta.llm.openai import OpenAIClient
from mcp_letta.llm.sampling import HostModels, SamplingLLM
from mcp_letta.models import ModelSettings, Run

OPENAI_BASE_URL = "https://api.openai.com/v1"
BASE_URL_HINT = (
    "set MCP_LETTA_LLM_BASE_URL (e.g. https://api.openai.com/v1 or http://localhost:11434/v1 for Ollama) "
    "and MCP_LETTA_MODEL"
)


class LLMPool:
    """Hands out shared clients; an agent's own ``base_url``/``model`` win over the process settings.

    With ``MCP_LETTA_LLM=sampling``, or by default when no endpoint is configured, a run thinks with the MCP
    host's own model instead (``hosts``: which host each run samples through).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hosts = HostModels(settings.sampling_wait_s, always_wait=settings.llm == "sampling")
        self._clients: dict[tuple[str, str | None], OpenAIClient] = {}
        # (agent base URL, agent model) -> what client_for returns: every LLM step asks, settings never change.
        self._chosen: dict[tuple[str | None, str | None], tuple[LLMClient, str]] = {}

    @property
    def default_base_url(self) -> str | None:
        """The process-wide endpoint: the configured one, or OpenAI's when only an API key is set."""
        base = self.settings.llm_base_url
        if base:
            return base.rstrip("/")
        return OPENAI_BASE_URL if self.settings.llm_api_key else None

    def client_for(self, model_settings: ModelSettings | None = None) -> tuple[LLMClient, str]:
        """The client and model name for an agent; raise ``LLMUnavailable`` when either is not configured."""
        own = model_settings or ModelSettings()
        chosen = self._chosen.get((own.base_url, own.model))
        if chosen is not None:
            return chosen
        base_url = (own.base_url or "").rstrip("/") or self.default_base_url
        if not base_url:
            raise LLMUnavailable(f"no LLM endpoint is configured: {BASE_URL_HINT}")
        if not base_url.startswith(("http://", "https://")):
            fix = (
                "it is this agent's own model_settings.base_url: update the agent with an http(s) URL, or with "
                "null to use the server's endpoint"
                if own.base_url
                else BASE_URL_HINT
            )
            raise LLMUnavailable(f"LLM base URL {base_url!r} is not an http(s) URL: {fix}")
        model = own.model or self.settings.model
        if not model:
            raise LLMUnavailable("no model is configured: set MCP_LETTA_MODEL or the agent's model")
        api_key = self._key_for(base_url)
        key = (base_url, api_key)
        client = self._clients.get(key)
        if client is None:
            client = OpenAIClient(
                base_url,
                api_key,
                timeout_s=self.settings.llm_timeout_s,
                max_retries=self.settings.llm_max_retries,
            )
            self._clients[key] = client
        self._chosen[(own.base_url, own.model)] = client, model
        return client, model

    def samples(self, model_settings: ModelSettings | None = None) -> bool:
        """Whether an agent with these settings thinks with the host's model (MCP sampling)."""
        if self.settings.llm != "auto":
            return self.settings.llm == "sampling"
        return not ((model_settings and model_settings.base_url) or self.default_base_url)

    async def client_for_run(
        self, model_settings: ModelSettings | None, run: Run, parent_of: Callable[[str], Awaitable[str | None]]
    ) -> tuple[LLMClient, str]:
        """The client and model name a run thinks with: ``client_for`` its agent, or the host's model through
        the session that sent the run (``HostModels.sampler_for``; ``parent_of`` reads a run's parent)."""
        if not self.samples(model_settings):
            return self.client_for(model_settings)
        sampler = await self.hosts.sampler_for(run, parent_of)
        model = (model_settings.model if model_settings else None) or self.settings.model or ""
        return SamplingLLM(self.hosts, run, parent_of, sampler), model

    def prepare(self) -> None:
        """Make the process-wide endpoint's client now, at start-up, so the first message does not wait for
        its HTTP stack to be imported and its TLS trust store to be loaded; nothing if none is configured."""
        try:
            self.client_for(None)
        except LettaError:
            pass  # not configured, or badly: the first message says what is wrong

    def _key_for(self, base_url: str) -> str | None:
        # The key belongs to the configured endpoint: an agent pointed at another host must not receive it.
        default = self.default_base_url
        if default is None or _origin(base_url) != _origin(default):
            return None
        return self.settings.llm_api_key

    async def aclose(self) -> None:
        """Close every client's connection pool."""
        clients, self._clients, self._chosen = list(self._clients.values()), {}, {}
        for client in clients:
            await client.aclose()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port
