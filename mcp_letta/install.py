"""Registering mcp-letta with an MCP host: our server entry, each host's config file and format, and merging
the entry into it.

``mcp-letta install HOST`` (Claude Desktop, Claude Code, Cursor, VS Code, Windsurf) backs the config file up,
sets our entry under the host's key (``mcpServers``, or ``servers`` for VS Code) and leaves every other key
alone; running it again with the same settings changes nothing and makes no new backup.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from mcp_letta.config import Settings
from mcp_letta.errors import Invalid
from mcp_letta.store import is_postgres_url, redact_url

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

    The database is always explicit so every host window shares one store: a SQLite file's absolute path, or
    the PostgreSQL URL as given (its password hidden when printing). The API key is left out unless
    ``api_key="write"`` (the file is plain text) or shown as a placeholder (for printing).
    """
    command, args = launch_command(uvx)
    if is_postgres_url(settings.db_path):
        database = redact_url(str(settings.db_path)) if api_key == "placeholder" else str(settings.db_path)
    else:
        database = str(Path(settings.db_path).expanduser().resolve())
    env = {"MCP_LETTA_DB": database}
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


def merge_server(
    path: Path, name: str, entry: dict[str, Any], *, key: str = "mcpServers", now: datetime | None = None
) -> Merged:
    """Set ``config[key][name] = entry`` in the JSON file at ``path``, backing the old file up first.

    Other servers and keys are kept as they are. Raises ``Invalid`` (and changes nothing) when the file
    is not a JSON object with an object ``key``.
    """
    if not name.strip():
        raise Invalid("the server name must not be empty: use e.g. --name letta")
    existed = path.exists()
    config = read_config(path)
    servers = config.setdefault(key, {})
    if not isinstance(servers, dict):
        raise Invalid(f"{key!r} in {path} is not an object; nothing was changed: fix it, then run this again")
    previous = servers.get(name)
    if previous == entry:
        return Merged("unchanged", path)
    backup = _backup(path, now or datetime.now()) if existed else None
    servers[name] = entry
    _write_atomically(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    outcome = "created" if not existed else ("added" if previous is None else "updated")
    return Merged(outcome, path, backup)


def read_config(path: Path) -> dict[str, Any]:
    """A host's JSON config (empty when the file is missing or blank); ``Invalid`` when it is not a JSON object."""
    if not path.exists():
        return {}
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
    return config


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


# -- hosts ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Host:
    """An MCP host: where it keeps its servers (user-wide, and per project where it has both) and in what shape."""

    name: str  # as the command line spells it
    label: str
    user_file: Callable[[str, Mapping[str, str], Path], Path]
    project_file: str | None = None  # relative to the project folder
    key: str = "mcpServers"
    typed: bool = False  # each entry says "type": "stdio"
    reload: str = "restart it to load the server"

    def config_path(self, project: Path | None, *, platform: str | None = None,
                    environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:  # fmt: skip
        """The file to write: the project's when ``project`` is given, else the user's."""
        if project is not None:
            if self.project_file is None:
                raise Invalid(f"{self.label} has no per-project config: install without --project")
            return project / self.project_file
        return self.user_file(
            sys.platform if platform is None else platform, os.environ if environ is None else environ,
            Path.home() if home is None else home,
        )  # fmt: skip

    def entry(self, settings: Settings, *, uvx: bool = False, api_key: Literal["omit", "write", "placeholder"] = "omit"
              ) -> dict[str, Any]:  # fmt: skip
        """Our entry in this host's shape."""
        entry = server_entry(settings, uvx=uvx, api_key=api_key)
        return {"type": "stdio", **entry} if self.typed else entry


def _claude_desktop(platform: str, environ: Mapping[str, str], home: Path) -> Path:
    return default_config_path(platform, environ, home)


def _vscode_user(platform: str, environ: Mapping[str, str], home: Path) -> Path:
    if platform == "darwin":
        return home / "Library" / "Application Support" / "Code" / "User" / "mcp.json"
    if platform.startswith(("win32", "cygwin")):
        return Path(environ.get("APPDATA") or str(home / "AppData" / "Roaming")) / "Code" / "User" / "mcp.json"
    return Path(environ.get("XDG_CONFIG_HOME") or str(home / ".config")) / "Code" / "User" / "mcp.json"


HOSTS: dict[str, Host] = {
    host.name: host
    for host in (
        Host("claude-desktop", "Claude Desktop", _claude_desktop, reload="restart Claude Desktop to load it"),
        Host(
            "claude-code",
            "Claude Code",
            lambda _p, _e, home: home / ".claude.json",
            project_file=".mcp.json",
            reload="start a new Claude Code session (`claude mcp list` shows it)",
        ),
        Host(
            "cursor",
            "Cursor",
            lambda _p, _e, home: home / ".cursor" / "mcp.json",
            project_file=".cursor/mcp.json",
            reload="Cursor picks it up in Settings > MCP (reload the window if it does not)",
        ),
        Host(
            "vscode",
            "VS Code",
            _vscode_user,
            project_file=".vscode/mcp.json",
            key="servers",
            typed=True,
            reload="VS Code offers to start it in the Chat view (or run 'MCP: List Servers')",
        ),
        Host(
            "windsurf",
            "Windsurf",
            lambda _p, _e, home: home / ".codeium" / "windsurf" / "mcp_config.json",
            reload="press refresh in Windsurf's MCP panel (Cascade > MCP servers)",
        ),
    )
}


def install(
    host: Host,
    settings: Settings,
    *,
    project: Path | None = None,
    config: Path | None = None,
    name: str = DEFAULT_NAME,
    uvx: bool = False,
    with_api_key: bool = False,
    show_only: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """The ``mcp-letta install HOST`` command; returns the exit code. ``show_only`` (``--print``) prints the entry
    in the host's format and writes nothing."""
    try:
        path = config or host.config_path(project)
    except Invalid as exc:
        print(f"mcp-letta: {exc}", file=sys.stderr)
        return 2
    if show_only:
        shown = host.entry(settings, uvx=uvx, api_key="placeholder" if not with_api_key else "write")
        print(f"# {host.label}: {path}", file=out)
        print(json.dumps({host.key: {name: shown}}, indent=2, ensure_ascii=False), file=out)
        return 0
    entry = host.entry(settings, uvx=uvx, api_key="write" if with_api_key else "omit")
    try:
        merged = merge_server(path, name, entry, key=host.key)
    except (Invalid, OSError) as exc:
        print(f"mcp-letta: cannot install into {host.label}: {exc}", file=sys.stderr)
        return 2
    if merged.outcome == "unchanged":
        print(f"{path}: {host.key}.{name} is already up to date; nothing changed", file=out)
        return 0
    print(f"{path}: {merged.outcome} {host.key}.{name} ({entry['command']} {' '.join(entry['args'])})", file=out)
    if merged.backup:
        print(f"backup of the previous file: {merged.backup}", file=out)
    if is_postgres_url(settings.db_path) and redact_url(str(settings.db_path)) != settings.db_path:
        print(f"the database password is in {path} as plain text; to keep it out, put it in ~/.pgpass and drop "
              "it from MCP_LETTA_DB's URL", file=out)  # fmt: skip
    if settings.llm_api_key and not with_api_key:
        print("the LLM API key was not written; add MCP_LETTA_LLM_API_KEY to the entry's env, or rerun with "
              "--with-api-key", file=out)  # fmt: skip
    print(host.reload, file=out)
    return 0


def install_claude_desktop(settings: Settings, *, config: Path | None = None, **options: Any) -> int:
    """``mcp-letta install claude-desktop`` (see ``install``)."""
    return install(HOSTS["claude-desktop"], settings, config=config, **options)


def configured_hosts(project: Path | None = None, *, home: Path | None = None) -> list[tuple[Host, Path, str]]:
    """Every host config (user-wide, and the project's in ``project``) that has an mcp-letta entry: the host,
    the file and the entry's name. Unreadable files are skipped."""
    found = []
    for host in HOSTS.values():
        paths = [host.config_path(None, home=home)]
        if project is not None and host.project_file is not None:
            paths.append(host.config_path(project))
        for path in paths:
            try:
                servers = read_config(path).get(host.key)
            except (Invalid, OSError, UnicodeDecodeError):
                continue
            for name, entry in servers.items() if isinstance(servers, dict) else ():
                if isinstance(entry, dict) and _is_ours(entry):
                    found.append((host, path, name))
    return found


def _is_ours(entry: dict[str, Any]) -> bool:
    words = [str(entry.get("command", "")), *map(str, entry.get("args") or [])]
    return any(Path(word).name.removesuffix(".exe") in ("mcp-letta", "mcp_letta") for word in words)
