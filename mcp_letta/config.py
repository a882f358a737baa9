"""Settings: every ``MCP_LETTA_*`` environment variable and CLI flag, read in one place.

``Settings.from_env()`` reads the environment; the CLI overrides fields with its flags. Nothing else in
the package reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mcp_letta.errors import Invalid
from mcp_letta.models import TOOL_MODES, ToolMode

LLM_SOURCES = ("auto", "endpoint", "sampling")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
AT_LEAST_ONE = ("max_concurrency", "max_steps", "fanout_concurrency", "max_depth", "http_max_sessions", "pg_pool_size")
ABOVE_ZERO_S = ("llm_timeout_s", "http_session_idle_s", "watch_interval_s")


def default_db_path() -> Path:
    """Where the database lives when neither ``MCP_LETTA_DB`` nor ``--db`` says otherwise:
    ``$XDG_DATA_HOME/mcp-letta/agents.db``, else ``~/.local/share/mcp-letta/agents.db``.
    """
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mcp-letta" / "agents.db"


def db_target(text: str | Path) -> Path | str:
    """``MCP_LETTA_DB`` / ``--db`` as the store takes it: a ``postgresql://`` URL stays text, anything else is
    a SQLite file path."""
    if isinstance(text, str) and text.startswith(("postgresql://", "postgres://")):
        return text
    return Path(text).expanduser()


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"{name}={raw!r} is not a whole number: set it to an integer such as {default}") from None
    if value < minimum:
        raise Invalid(f"{name}={value} is below the minimum {minimum}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise Invalid(f"{name}={raw!r} is not a number: set it to e.g. {default}") from None


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 <= value <= 3600:
        raise Invalid(f"{name}={value:g} is out of range: use 0 to 3600 seconds, e.g. {default:g}")
    return value


def comma_list(text: str) -> list[str]:
    """The non-empty items of a comma-separated list, stripped (``"a, b,"`` -> ``["a", "b"]``)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _list(env: dict[str, str], name: str) -> tuple[str, ...]:
    return tuple(comma_list(env.get(name, "")))


@dataclass(frozen=True)
class Settings:
    """Configuration of one mcp-letta process. Build with ``Settings.from_env()`` and ``with_overrides``."""

    db_path: Path | str = field(default_factory=default_db_path)  # a SQLite file, or a postgresql:// URL (str)
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    llm_timeout_s: float = 120.0
    llm_max_retries: int = 3
    max_concurrency: int = 16
    max_steps: int = 10
    agent_tool_template: str = "ask_{name}"
    expose_tags: tuple[str, ...] = ()
    max_agent_tools: int = 32
    tools: str = "full"
    fanout_concurrency: int = 16
    max_depth: int = 5
    agent_wait_s: float = 300.0
    token: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    http_max_sessions: int = 100
    http_session_idle_s: float = 600.0
    replica_url: str | None = None  # MCP_LETTA_REPLICA_URL: where the other replicas reach this one
    watch_interval_s: float = 0.2
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    tool_mode: ToolMode = "auto"
    pg_pool_size: int = 10  # PostgreSQL connections per process (MCP_LETTA_PG_POOL_SIZE)
    llm: str = "auto"  # MCP_LETTA_LLM: "endpoint", "sampling" (the host's model), or "auto" (sampling w/o endpoint)
    sampling_wait_s: float = 60.0  # how long a run with no host to sample through waits for one

    def __post_init__(self) -> None:
        """Refuse what no process can run with, however the settings were made (``from_env`` checks each variable
        as it reads it; a Python caller's ``Settings(max_concurrency=0)`` would leave every run queued)."""
        level = self.log_level.upper() if isinstance(self.log_level, str) else self.log_level
        if level not in LOG_LEVELS:
            raise Invalid(
                f"log level {self.log_level!r} (MCP_LETTA_LOG_LEVEL, --log-level) is not known: "
                f"use {', '.join(LOG_LEVELS)}"
            )
        object.__setattr__(self, "log_level", level)  # (frozen; --log-level debug is DEBUG)
        for name in AT_LEAST_ONE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Invalid(f"settings: {name} must be a whole number from 1 (got {value!r})")
        if (
            isinstance(self.llm_max_retries, bool)
            or not isinstance(self.llm_max_retries, int)
            or self.llm_max_retries < 0
        ):
            raise Invalid(f"settings: llm_max_retries must be a whole number from 0 (got {self.llm_max_retries!r})")
        for name in (*ABOVE_ZERO_S, "agent_wait_s", "shutdown_grace_s", "sampling_wait_s"):
            value = getattr(self, name)
            lowest_ok = 0 < value if name in ABOVE_ZERO_S else 0 <= value
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (lowest_ok and value < float("inf"))
            ):
                least = "above 0" if name in ABOVE_ZERO_S else "0 or more"
                raise Invalid(f"settings: {name} must be a number of seconds, {least} (got {value!r})")
        if self.tool_mode not in TOOL_MODES:
            raise Invalid(f"settings: tool_mode {self.tool_mode!r} is not known: use {', '.join(TOOL_MODES)}")
        if self.llm not in LLM_SOURCES:
            raise Invalid(f"settings: llm {self.llm!r} is not known: use {', '.join(LLM_SOURCES)}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default: the process environment)."""
        env = dict(os.environ if environ is None else environ)
        tools = env.get("MCP_LETTA_TOOLS", "full").strip().lower() or "full"
        if tools not in ("core", "full"):
            raise Invalid(f"MCP_LETTA_TOOLS={tools!r} is not known: use 'core' or 'full'")
        template = env.get("MCP_LETTA_AGENT_TOOL", "ask_{name}") or "ask_{name}"
        if "{name}" not in template:
            raise Invalid(f"MCP_LETTA_AGENT_TOOL={template!r} must contain '{{name}}', e.g. 'ask_{{name}}'")
        db = env.get("MCP_LETTA_DB")
        tool_mode = env.get("MCP_LETTA_TOOL_MODE", "auto").strip().lower() or "auto"
        if tool_mode not in TOOL_MODES:
            raise Invalid(f"MCP_LETTA_TOOL_MODE={tool_mode!r} is not known: use 'native', 'json' or 'auto'")
        llm = env.get("MCP_LETTA_LLM", "auto").strip().lower() or "auto"
        if llm not in LLM_SOURCES:
            raise Invalid(
                f"MCP_LETTA_LLM={llm!r} is not known: use 'endpoint' (MCP_LETTA_LLM_BASE_URL), 'sampling' (the "
                "MCP host's own model) or 'auto' (the endpoint if one is configured, else the host's model)"
            )
        return cls(
            db_path=db_target(db) if db else default_db_path(),
            llm_base_url=env.get("MCP_LETTA_LLM_BASE_URL") or None,
            llm_api_key=env.get("MCP_LETTA_LLM_API_KEY") or env.get("OPENAI_API_KEY") or None,
            model=env.get("MCP_LETTA_MODEL") or None,
            llm_timeout_s=_float(env, "MCP_LETTA_LLM_TIMEOUT", 120.0),
            llm_max_retries=_int(env, "MCP_LETTA_LLM_MAX_RETRIES", 3),
            max_concurrency=_int(env, "MCP_LETTA_MAX_CONCURRENCY", 16, minimum=1),
            max_steps=_int(env, "MCP_LETTA_MAX_STEPS", 10, minimum=1),
            agent_tool_template=template,
            expose_tags=_list(env, "MCP_LETTA_EXPOSE_TAGS"),
            max_agent_tools=_int(env, "MCP_LETTA_MAX_AGENT_TOOLS", 32),
            tools=tools,
            fanout_concurrency=_int(env, "MCP_LETTA_FANOUT_CONCURRENCY", 16, minimum=1),
            max_depth=_int(env, "MCP_LETTA_MAX_DEPTH", 5, minimum=1),
            agent_wait_s=_float(env, "MCP_LETTA_AGENT_WAIT_S", 300.0),
            token=env.get("MCP_LETTA_TOKEN") or None,
            allowed_hosts=_list(env, "MCP_LETTA_ALLOWED_HOSTS"),
            http_max_sessions=_int(env, "MCP_LETTA_HTTP_MAX_SESSIONS", 100, minimum=1),
            http_session_idle_s=_float(env, "MCP_LETTA_HTTP_SESSION_IDLE_S", 600.0),
            replica_url=env.get("MCP_LETTA_REPLICA_URL", "").strip() or None,
            watch_interval_s=_float(env, "MCP_LETTA_WATCH_INTERVAL", 0.2),
            shutdown_grace_s=_seconds(env, "MCP_LETTA_SHUTDOWN_GRACE_S", 10.0),
            log_level=(env.get("MCP_LETTA_LOG_LEVEL") or "INFO").upper(),
            tool_mode=tool_mode,  # type: ignore[arg-type]
            pg_pool_size=_int(env, "MCP_LETTA_PG_POOL_SIZE", 10, minimum=1),
            llm=llm,
            sampling_wait_s=_seconds(env, "MCP_LETTA_SAMPLING_WAIT_S", 60.0),
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored (an unset CLI flag)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise Invalid(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
