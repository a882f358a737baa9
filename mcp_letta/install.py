"""Registering mcp-letta with an MCP host: the Claude Desktop entry, and merging it into the host's config.

``mcp-letta install claude-desktop`` backs the config file up, sets ``mcpServers.<name>`` and leaves every
other key alone; running it again with the same settings changes nothing and makes no new backup.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from mcp_letta.config import Settings
from mcp_letta.errors import Invalid

CONFIG_NAME = "claude_desktop_config.json"
DEFAULT_NAME = "letta"
SECRET_PLACEHOLDER = "<your API key>"


def default_config_path(
    platform: str | None = None, environ: Mapping[str, str] | None = None, home: Path | None = None
) -> Path:
    """Where Claude Desktop keeps its config on this OS (macOS, Windows, else Linux's XDG folder)."""
    platform = sys.platform if platform is None else platform
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    if platform == "darwin":
        return home / "Library" / "Application Support" / "Claude" / CONFIG_NAME
    if platform.startswith(("win32", "cygwin")):
        appdata = environ.get("APPDATA") or str(home / "AppData" / "Roaming")
        return Path(appdata) / "Claude" / CONFIG_NAME
    config_home = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config_home) / "Claude" / CONFIG_NAME


def launch_command(uvx: bool = False) -> tuple[str, list[str]]:
    """The command and arguments a host runs to start our stdio server.

    Absolute paths, because hosts such as Claude Desktop start servers with a minimal ``PATH``.
    """
    if uvx:
        return shutil.which("uvx") or "uvx", ["mcp-letta"]
    script = Path(sys.executable).parent / ("mcp-letta.exe" if sys.platform == "win32" else "mcp-letta")
    if script.exists():
        return str(script), []
    found = shutil.which("mcp-letta")
    if found:
        return str(Path(found).resolve()), []
    return sys.executable, ["-m", "mcp_letta"]


def server_entry(settings: Settings, *, uvx: bool = False, api_key: Literal["omit", "write", "placeholder"] = "omit"
                 ) -> dict[str, Any]:  # fmt: skip
    """Our ``mcpServers`` entry: the launch command and the settings a host must pass on.

    The database path is always explicit so every host window shares one store. The API key is left
    out unless ``api_key="write"`` (the file is plain text) or shown as a placeholder (for printing).
    """
    command, args = launch_command(uvx)
    env = {"MCP_LETTA_DB": str(Path(settings.db_path).expanduser().resolve())}
    if settings.llm_base_url:
        env["MCP_LETTA_LLM_BASE_URL"] = settings.llm_base_url
    if settings.model:
        env["MCP_LETTA_MODEL"] = settings.model
    if settings.llm_api_key and api_key != "omit":
        env["MCP_LETTA_LLM_API_KEY"] = settings.llm_api_key if api_key == "write" else SECRET_PLACEHOLDER
    if settings.tools != "full":
        env["MCP_LETTA_TOOLS"] = settings.tools
    return {"command": command, "args": args, "env": env}


@dataclass(frozen=True)
class Merged:
    """What ``merge_server`` did: 'created' the file, 'added' or 'updated' the entry, or left it 'unchanged'."""

    outcome: Literal["created", "added", "updated", "unchanged"]
    path: Path
    backup: Path | None = None


def merge_server(path: Path, name: str, entry: dict[str, Any], *, now: datetime | None = None) -> Merged:
    """Set ``mcpServers[name] = entry`` in the JSON file at ``path``, backing the old file up first.

    Other servers and keys are kept as they are. Raises ``Invalid`` (and changes nothing) when the file
    is not a JSON object with an object ``mcpServers``.
    """
    if not name.strip():
        raise Invalid("the server name must not be empty: use e.g. --name letta")
    config: dict[str, Any] = {}
    existed = path.exists()
    if existed:
        text = path.read_text(encoding="utf-8")
        try:
            config = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise Invalid(
                f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); nothing was "
                "changed: fix the file or move it aside, then run this again"
            ) from None
        if not isinstance(config, dict):
            raise Invalid(f"{path} holds a JSON {type(config).__name__}, not an object; nothing was changed")
    servers = config.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise Invalid(f"'mcpServers' in {path} is not an object; nothing was changed: fix it, then run this again")
    previous = servers.get(name)
    if previous == entry:
        return Merged("unchanged", path)
    backup = _backup(path, now or datetime.now()) if existed else None
    servers[name] = entry
    _write_atomically(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    outcome = "created" if not existed else ("added" if previous is None else "updated")
    return Merged(outcome, path, backup)


def _backup(path: Path, now: datetime) -> Path:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while candidate.exists():  # two installs within a second must not overwrite the first backup
        candidate = path.with_name(f"{path.name}.{stamp}-{n}.bak")
        n += 1
    shutil.copy2(path, candidate)
    return candidate


def _write_atomically(path: Path, text: str) -> None:
    # A crash mid-write must leave the host's config whole: write a sibling file, then rename over.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install_claude_desktop(
    settings: Settings,
    *,
    config: Path | None = None,
    name: str = DEFAULT_NAME,
    uvx: bool = False,
    with_api_key: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """The ``mcp-letta install claude-desktop`` command; returns the exit code."""
    path = config or default_config_path()
    entry = server_entry(settings, uvx=uvx, api_key="write" if with_api_key else "omit")
    try:
        merged = merge_server(path, name, entry)
    except (Invalid, OSError) as exc:
        print(f"mcp-letta: cannot install into Claude Desktop: {exc}", file=sys.stderr)
        return 2
    if merged.outcome == "unchanged":
        print(f"{path}: mcpServers.{name} is already up to date; nothing changed", file=out)
        return 0
    print(f"{path}: {merged.outcome} mcpServers.{name} ({entry['command']} {' '.join(entry['args'])})", file=out)
    if merged.backup:
        print(f"backup of the previous file: {merged.backup}", file=out)
    if settings.llm_api_key and not with_api_key:
        print("the LLM API key was not written; add MCP_LETTA_LLM_API_KEY to the entry's env, or rerun with "
              "--with-api-key", file=out)  # fmt: skip
    print("restart Claude Desktop to load it", file=out)
    return 0
