"""``mcp-letta doctor``: checks a setup (database, LLM endpoint, model) and prints the host config to paste.

Each check says what it found and, when it fails, what to do. The API key is never printed: ``mask`` says
whether it is set and how long it is, and shows its last four characters only when it is 16 or more long.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio.to_thread
import httpx2

from mcp_letta import __version__
from mcp_letta.config import Settings
from mcp_letta.errors import LettaError, StorageUnavailable
from mcp_letta.hub import AgentHub
from mcp_letta.install import HOSTS, configured_hosts, default_config_path, server_entry
from mcp_letta.llm.base import ChatRequest
from mcp_letta.llm.factory import BASE_URL_HINT, LLMPool
from mcp_letta.llm.openai import OpenAIClient
from mcp_letta.store import (
    PG_FOLLOWER_CONNECTIONS,
    file_schema_version,
    is_postgres_url,
    latest_schema_version,
    pg_connection_hint,
    postgres_status,
    redact_url,
)

PROBE_TIMEOUT_S = 15.0
TOOL_PROBE_TIMEOUT_S = 120.0  # a small local model on a laptop takes tens of seconds for its first answer
TOOL_PROBE_MAX_TOKENS = 64
TOOL_PROBE_QUESTION = "What is the weather in Paris right now? Use the get_weather tool."
TOOL_PROBE = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MODELS_SHOWN = 8
NO_SAMPLING_HOSTS = frozenset({"claude-desktop", "claude-code"})  # hosts known not to offer sampling (yet)
HOST_MODEL_NOTE = (
    "no LLM endpoint is configured: agents think with the host's own model through MCP sampling (VS Code "
    "offers it; Claude Desktop and Claude Code do not yet: for those, set MCP_LETTA_LLM_BASE_URL and "
    "MCP_LETTA_MODEL)"
)


@dataclass(frozen=True)
class Check:
    """One finding: ``ok`` or not, what was seen, and (on failure) the next step."""

    name: str
    ok: bool
    detail: str
    hint: str = ""


CLOCK_OFF_S = 2.0  # a clock this far from the database server's is worth a word
MASK_SHOWS_FROM = 16  # the last 4 characters of a shorter key would give away too much of it


def mask(secret: str | None) -> str:
    """A secret as it may be shown: "not set", or "set" with its length and, from 16 characters on, its last 4."""
    if not secret:
        return "not set"
    length = _counted(len(secret), "char")
    return f"set (…{secret[-4:]}, {length})" if len(secret) >= MASK_SHOWS_FROM else f"set ({length})"


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def check_database(settings: Settings) -> Check:
    """The store opens, its schema is one we know, and how many agents and blocks it holds."""
    path = settings.db_path
    if is_postgres_url(path):
        return await _check_postgres(settings, str(path))
    latest = latest_schema_version()
    found = await anyio.to_thread.run_sync(_file_schema, Path(path), latest)
    if isinstance(found, Check):
        return found
    try:
        async with AgentHub(settings, runs_agents=False) as hub:  # migrates exactly as the server would
            agents, blocks = await hub.count_agents(), await hub.count_blocks()
    except StorageUnavailable as exc:
        return storage_check(exc)
    except Exception as exc:  # whatever stops the store from opening is the finding
        return Check("database", False, f"{path} did not open: {exc}", "check the file's permissions")
    pending = f", {_counted(latest - found, 'migration')} applied now" if found < latest else ""
    held = f"{_counted(agents, 'agent')}, {_counted(blocks, 'block')}"
    return Check("database", True, f"{path}: schema {latest}{pending}, {held}")


async def _check_postgres(settings: Settings, url: str) -> Check:
    """The server answers, the schema is one we know (migrating it as the server would), the connections in
    use against the server's limit, and (when it is off) this machine's clock against the server's."""
    where = redact_url(url)
    try:
        status = await anyio.to_thread.run_sync(postgres_status, url)
    except LettaError as exc:  # the driver is missing
        return Check("database", False, str(exc), "install the PostgreSQL extra")
    except Exception as exc:
        reason = " ".join(str(exc).split())
        return Check("database", False, f"{where}: cannot connect ({reason})", pg_connection_hint(reason))
    found, latest = status["schema_version"], status["latest_schema_version"]
    try:  # it refuses a database from a newer mcp-letta, or another program's, before writing anything
        async with AgentHub(settings, runs_agents=False) as hub:  # (it must take no replica's queued runs)
            agents, blocks = await hub.count_agents(), await hub.count_blocks()
    except StorageUnavailable as exc:
        return storage_check(exc)
    except Exception as exc:
        return Check("database", False, f"{where} did not open: {exc}", "check the user's rights on the database")
    pending = f", {_counted(latest - found, 'migration')} applied now" if found < latest else ""
    used, limit = status["connections"], status["max_connections"]
    detail = (
        f"{where}: PostgreSQL {status['server']}, schema {latest}{pending}, {_counted(agents, 'agent')}, "
        f"{_counted(blocks, 'block')}; {used} of {limit} connections in use (each replica takes up to "
        f"{settings.pg_pool_size} + {PG_FOLLOWER_CONNECTIONS})"
    )
    ahead = -status["clock_offset_s"]  # this machine's clock less the server's
    if abs(ahead) >= CLOCK_OFF_S:
        detail += (
            f"; this machine's clock is {abs(ahead):.0f} s {'ahead of' if ahead > 0 else 'behind'} the server's "
            "(leases follow the server's clock, but the times mcp-letta records are each machine's: set up NTP)"
        )
    if used + settings.pg_pool_size + PG_FOLLOWER_CONNECTIONS > limit:
        return Check("database", False, detail, "raise max_connections on the server or MCP_LETTA_PG_POOL_SIZE lower")
    return Check("database", True, detail)


def _file_schema(path: Path, latest: int) -> Check | int:
    """The schema version of an existing database file, or the finding that ends the check."""
    path = path.expanduser()
    if not path.exists():
        folder = next((p for p in [path.parent, *path.parents] if p.exists()), path.parent)
        if not os.access(folder, os.W_OK):
            return Check("database", False, f"{path} does not exist and {folder} is not writable",
                         "set MCP_LETTA_DB to a file in a folder you can write")  # fmt: skip
        return Check("database", True, f"{path} does not exist yet; it is created on first start")
    try:
        # Read-only first: a doctor must not migrate a database that is newer than this program.
        return file_schema_version(path)
    except StorageUnavailable as exc:
        return storage_check(exc)


def storage_check(exc: StorageUnavailable) -> Check:
    """A storage failure as a finding: the server's own words, the next step as the hint."""
    return Check("database", False, exc.problem, exc.hint)


async def check_llm(settings: Settings) -> list[Check]:
    """The LLM endpoint answers with our key, and serves the configured model; without one (and unless
    ``MCP_LETTA_LLM=endpoint``), agents think with the host's model, which only a connected host can show."""
    pool = LLMPool(settings)
    base = pool.default_base_url
    key = settings.llm_api_key
    if settings.llm == "sampling":
        return [Check("llm", True, "MCP_LETTA_LLM=sampling: " + HOST_MODEL_NOTE.split(": ", 1)[1])]
    if not base and settings.llm != "endpoint":
        hosts = {host.name: host.label for host, _, _ in configured_hosts(Path.cwd())}
        if hosts and set(hosts) <= NO_SAMPLING_HOSTS:
            where = " and ".join(sorted(hosts.values()))
            detail = f"no LLM endpoint is configured, and {where} (where mcp-letta is set up) lend no model"
            return [Check("llm", False, detail + " to MCP servers (sampling)", BASE_URL_HINT)]
        return [Check("llm", True, HOST_MODEL_NOTE)]
    if not base:
        return [Check("llm endpoint", False, "no LLM endpoint is configured", BASE_URL_HINT)]
    if not base.startswith(("http://", "https://")):
        return [Check("llm endpoint", False, f"{base!r} is not an http(s) URL", BASE_URL_HINT)]
    where = f"{base} (API key {mask(key)})"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx2.AsyncClient(headers=headers, timeout=PROBE_TIMEOUT_S) as http:
            response = await http.get(f"{base}/models")
    except httpx2.HTTPError as exc:
        return [Check("llm endpoint", False, f"{where}: cannot connect ({type(exc).__name__})",
                      "start the server (e.g. `ollama serve`) or fix MCP_LETTA_LLM_BASE_URL")]  # fmt: skip
    if response.status_code in (401, 403):
        return [Check("llm endpoint", False, f"{where}: the API key was refused (HTTP {response.status_code})",
                      "set MCP_LETTA_LLM_API_KEY (or OPENAI_API_KEY) to a valid key")]  # fmt: skip
    served = _model_ids(response)
    if served is None:  # no usable /models listing: some servers lack it, so ask for one token instead
        return await _probe_chat(settings, base, key, where)
    endpoint = Check("llm endpoint", True, f"{where}: {_counted(len(served), 'model')} listed")
    model = settings.model
    shown = ", ".join(served[:MODELS_SHOWN]) + (", ..." if len(served) > MODELS_SHOWN else "")
    if not model:
        return [endpoint, Check("model", False, "no model is configured", f"set MCP_LETTA_MODEL, e.g. one of: {shown}")]
    # Ask, whether or not the model is listed: llama-server lists its file's name yet answers under any name.
    answer = await _probe_tools(settings, base, key)
    if isinstance(answer, str):
        if model in served:
            return [endpoint, Check("model", False, f"{model} is listed at {base} but did not answer: {answer}")]
        hint = f"pick one of: {shown}" if served else "pull or load the model on the server"
        if ":11434" in base:
            hint = f"run `ollama pull {model}`, or {hint}"
        return [endpoint, Check("model", False, f"{model!r} is not served at {base} ({answer})", hint)]
    if model in served:
        return [endpoint, Check("model", True, f"{model} is served and answered"), answer]
    note = f"{model!r} is not listed at {base} (it lists {shown or 'nothing'}) but answered under that name"
    return [endpoint, Check("model", True, note), answer]


def _model_ids(response: httpx2.Response) -> list[str] | None:
    if response.status_code != 200:
        return None
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return sorted(str(item["id"]) for item in data if isinstance(item, dict) and "id" in item)


async def _probe_chat(settings: Settings, base: str, key: str | None, where: str) -> list[Check]:
    if not settings.model:
        return [Check("llm endpoint", True, f"{where}: reachable (no model listing)"),
                Check("model", False, "no model is configured", "set MCP_LETTA_MODEL")]  # fmt: skip
    answer = await _probe_tools(settings, base, key)
    if isinstance(answer, str):
        return [Check("llm endpoint", False, f"{where}: {answer}")]
    return [Check("llm endpoint", True, f"{where}: answered (no model listing)"),
            Check("model", True, f"{settings.model} answered"), answer]  # fmt: skip


async def _probe_tools(settings: Settings, base: str, key: str | None) -> Check | str:
    """Ask the model to call one tool: the finding about tool calls, or why the request failed.

    Whether native ``tool_calls`` came back tells the user which ``MCP_LETTA_TOOL_MODE`` suits the model.
    """
    client = OpenAIClient(base, key, timeout_s=TOOL_PROBE_TIMEOUT_S, max_retries=0)
    request = ChatRequest(
        model=settings.model or "", messages=[{"role": "user", "content": TOOL_PROBE_QUESTION}], tools=[TOOL_PROBE],
        max_tokens=TOOL_PROBE_MAX_TOKENS,
    )  # fmt: skip
    try:
        response = await client.chat(request)
    except LettaError as exc:  # its messages are redacted by the client and say what to fix
        return exc.message
    finally:
        await client.aclose()
    if response.tool_calls and not client.prints_calls:
        return Check("tool calls", True, "native tool_calls came back: MCP_LETTA_TOOL_MODE native or auto suits it")
    if response.tool_calls:
        detail = "the model printed its call as text, not as native tool_calls: MCP_LETTA_TOOL_MODE=json suits it"
        return Check("tool calls", True, detail + " (auto switches to json after the first printed call)")
    detail = "the model answered without calling the offered tool: if agents do not use their tools, "
    return Check("tool calls", True, detail + "set MCP_LETTA_TOOL_MODE=json")


def check_hosts(project: Path | None = None) -> Check:
    """Which MCP hosts have mcp-letta configured (user-wide, and in the project here): a finding, never a failure."""
    found = configured_hosts(Path.cwd() if project is None else project)
    if not found:
        names = ", ".join(HOSTS)
        return Check("hosts", True, f"no host has mcp-letta configured yet: run `mcp-letta install HOST` ({names})")
    shown = "; ".join(f"{host.label} ({path}: {name})" for host, path, name in found)
    return Check("hosts", True, f"configured in {shown}")


def host_snippet(settings: Settings) -> dict[str, Any]:
    """The Claude Desktop ``mcpServers`` entry, with the API key (if any) as a placeholder."""
    return {"mcpServers": {"letta": server_entry(settings, api_key="placeholder")}}


async def run_doctor(settings: Settings, out: TextIO = sys.stdout) -> int:
    """The ``mcp-letta doctor`` command: print every check and the host snippet; 1 if any check failed."""
    checks = [await check_database(settings), *await check_llm(settings), check_hosts()]
    lines = [f"mcp-letta {__version__} doctor"]
    for check in checks:
        lines.append(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name:<13} {check.detail}")
        if check.hint and not check.ok:
            lines.append(f"        {'':<13} -> {check.hint}")
    lines += ["", f"Claude Desktop ({default_config_path()}), or run `mcp-letta install claude-desktop`:",
              json.dumps(host_snippet(settings), indent=2)]  # fmt: skip
    # The key appears only through mask() and the snippet's placeholder, so the text is printed as it is:
    # replacing the key's text everywhere would corrupt paths and JSON that merely contain it (a key "mcp").
    print("\n".join(lines), file=out)
    return 0 if all(check.ok for check in checks) else 1
