"""Setting up a host: `mcp-letta doctor`, `mcp-letta install claude-desktop`, and what tools/list costs a host."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import conftest_llm
import mcp.types as types
import pytest
from mcp import Client

from mcp_letta import AgentHub, Invalid, Settings
from mcp_letta.cli import _parser, main
from mcp_letta.doctor import host_snippet, mask, run_doctor
from mcp_letta.install import default_config_path, merge_server, server_entry
from mcp_letta.server.app import build_server
from mcp_letta.testing import ScriptedLLM

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]
scripted_llm = conftest_llm.scripted_llm

KEY = "sk-host-setup-MARKER-0123456789abcdef"
SCRIPT = Path(sys.executable).parent / "mcp-letta"
CORE_BUDGET = 16 * 1024


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any mcp-letta or OpenAI setting, with data and config under tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_LETTA_", "OPENAI_"))}
    return {**env, "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"), **extra}


# -- context economy --------------------------------------------------------------------------------


async def tools_list_sizes(hub: AgentHub) -> dict[str, tuple[int, list[types.Tool]]]:
    """With 10 agents: the bytes of each tier's tools/list (compact JSON, as on the wire) and its tools."""
    for i in range(10):
        await hub.create_agent(f"agent_{i}", description=f"Researcher {i}: finds sources and summarizes them.")
    measured: dict[str, tuple[int, list[types.Tool]]] = {}
    for tier in ("core", "full"):
        server = build_server(hub, replace(hub.settings, tools=tier))
        async with server.running(), Client(server.mcp, mode="legacy") as c:
            tools = (await c.list_tools()).tools
        wire = [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools]
        size = len(json.dumps({"tools": wire}, separators=(",", ":"), ensure_ascii=False).encode())
        measured[tier] = (size, tools)
        print(f"\ntools/list with 10 agents, MCP_LETTA_TOOLS={tier}: {len(tools)} tools, {size} bytes")
        for tool, entry in sorted(zip(tools, wire, strict=True), key=lambda p: -len(json.dumps(p[1]))):
            output = len(json.dumps(entry.get("outputSchema", {}), separators=(",", ":")))
            print(f"  {tool.name:32} {len(json.dumps(entry, separators=(',', ':'))):6} B  (outputSchema {output} B)")
    return measured


async def test_tool_tiers_with_ten_agents(hub: AgentHub) -> None:
    measured = await tools_list_sizes(hub)
    core = {t.name for t in measured["core"][1]}
    full = {t.name for t in measured["full"][1]}
    assert core < full
    assert {"list_agents", "read_block", "write_block", "append_to_block"} <= core
    ask = {hub.settings.agent_tool_template.replace("{name}", f"agent_{i}") for i in range(10)}
    # Agent and messaging tools are in both tiers once they exist: this tightens itself as they land.
    assert len(ask & core) in (0, 10) and ask & core == ask & full
    assert {"send_message", "get_run"} & full <= core
    for tool in measured["full"][1]:
        assert tool.description and len(tool.description) <= 400, (tool.name, tool.description)


async def test_core_tools_list_with_ten_agents_fits_16_kb(hub: AgentHub) -> None:
    size, _ = (await tools_list_sizes(hub))["core"]
    assert size < CORE_BUDGET, f"core tools/list is {size} bytes, over {CORE_BUDGET}"


# -- doctor -----------------------------------------------------------------------------------------


def llm_settings_for(llm: ScriptedLLM, tmp_path: Path, model: str = "scripted-model") -> Settings:
    return Settings(db_path=tmp_path / "agents.db", llm_base_url=llm.base_url, llm_api_key=KEY, model=model)


async def test_doctor_passes_against_a_working_endpoint(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    settings = llm_settings_for(scripted_llm, tmp_path)
    async with AgentHub(settings) as hub:
        await hub.create_agent("one")
        await hub.create_agent("two")
    out = io.StringIO()
    assert await run_doctor(settings, out) == 0
    text = out.getvalue()
    assert "FAIL" not in text
    assert "schema" in text and "2 agents" in text
    assert "scripted-model is served" in text
    assert KEY not in text and mask(KEY) in text
    snippet = json.loads(text[text.index("{") :])
    entry = snippet["mcpServers"]["letta"]
    assert entry["env"]["MCP_LETTA_LLM_BASE_URL"] == scripted_llm.base_url
    assert entry["env"]["MCP_LETTA_LLM_API_KEY"] == "<your API key>"
    assert Path(entry["command"]).name.startswith("mcp-letta") or entry["args"][:2] == ["-m", "mcp_letta"]


@pytest.mark.parametrize("key", ["x", "mcp", "mcp-letta"])
async def test_doctor_with_a_short_key_prints_paths_and_snippet_intact(
    scripted_llm: ScriptedLLM, tmp_path: Path, key: str
) -> None:
    db = tmp_path / "mcp-x-data" / "agents.db"  # contains the keys' text: masking must not touch it
    settings = Settings(db_path=db, llm_base_url=scripted_llm.base_url, llm_api_key=key, model="scripted-model")
    out = io.StringIO()
    assert await run_doctor(settings, out) == 0
    text = out.getvalue()
    assert text.startswith("mcp-letta ") and "***" not in text
    assert f"{db} does not exist yet" in text
    assert f"(API key set ({len(key)} char{'' if len(key) == 1 else 's'}))" in text
    assert json.loads(text[text.index("{") :]) == host_snippet(settings)


def test_mask_shows_the_last_four_characters_only_of_a_long_key() -> None:
    assert mask(None) == mask("") == "not set"
    assert (mask("x"), mask("mcp"), mask("k" * 15)) == ("set (1 char)", "set (3 chars)", "set (15 chars)")
    assert mask(KEY) == f"set (…{KEY[-4:]}, {len(KEY)} chars)"


async def test_doctor_counts_one_agent_and_one_block_in_the_singular(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    settings = llm_settings_for(scripted_llm, tmp_path)
    async with AgentHub(settings) as hub:
        await hub.create_block("project", "Goal: ship v1")
    out = io.StringIO()
    assert await run_doctor(settings, out) == 0
    assert ", 0 agents, 1 block\n" in out.getvalue() and ": 1 model listed" in out.getvalue()
    async with AgentHub(settings) as hub:
        await hub.create_agent("solo")
        blocks = len(await hub.list_blocks())
    out = io.StringIO()
    assert await run_doctor(settings, out) == 0
    assert f", 1 agent, {blocks} blocks\n" in out.getvalue()


async def test_doctor_names_the_models_when_ours_is_not_served(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    out = io.StringIO()
    assert await run_doctor(llm_settings_for(scripted_llm, tmp_path, model="llama9"), out) == 1
    assert "'llama9' is not served" in out.getvalue() and "scripted-model" in out.getvalue()


async def test_doctor_reports_an_unreachable_endpoint(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    settings = llm_settings_for(scripted_llm, tmp_path)
    scripted_llm.down()
    out = io.StringIO()
    assert await run_doctor(settings, out) == 1
    assert "cannot connect" in out.getvalue() and KEY not in out.getvalue()


async def test_doctor_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "agents.db"
    path.write_text("not a database at all, just text" * 100)
    out = io.StringIO()
    assert await run_doctor(Settings(db_path=path), out) == 1
    assert "agents.db is not an mcp-letta database (file is not SQLite)" in out.getvalue()
    assert path.read_text().startswith("not a database")


def test_doctor_with_nothing_configured_fails_and_still_prints_the_snippet(tmp_path: Path) -> None:
    done = subprocess.run([str(SCRIPT), "doctor"], capture_output=True, text=True, env=clean_env(tmp_path), timeout=60)
    assert done.returncode == 1
    assert "does not exist yet" in done.stdout
    assert "no LLM endpoint is configured" in done.stdout and "MCP_LETTA_LLM_BASE_URL" in done.stdout
    assert '"mcpServers"' in done.stdout
    assert not (tmp_path / "data" / "mcp-letta" / "agents.db").exists(), "doctor must not create the database"


# -- the default database -----------------------------------------------------------------------------


@pytest.mark.parametrize("xdg", [True, False], ids=["XDG_DATA_HOME", "HOME"])
def test_help_and_readme_name_the_default_database_settings_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: bool
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if xdg:
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    else:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("MCP_LETTA_DB", raising=False)
    used = Settings.from_env().db_path
    assert used == (tmp_path / "data" if xdg else tmp_path / "home" / ".local" / "share") / "mcp-letta" / "agents.db"
    unwrapped = "".join(_parser().format_help().split())  # argparse wraps long paths, even at a hyphen
    assert f"(default:$MCP_LETTA_DB,else{used})" in unwrapped
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    row = re.search(r"\| `MCP_LETTA_DB` \(or `--db`\) \| `([^`]+)`, else `([^`]+)` \|", readme)
    assert row, "README's settings table has no default for MCP_LETTA_DB"
    stated = row.group(1).replace("$XDG_DATA_HOME", str(tmp_path / "data")) if xdg else row.group(2)
    assert Path(stated).expanduser() == used


# -- install claude-desktop -------------------------------------------------------------------------


def test_default_config_path_per_os(tmp_path: Path) -> None:
    home = tmp_path / "home"
    mac = default_config_path("darwin", {}, home)
    assert mac == home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    windows = default_config_path("win32", {"APPDATA": str(tmp_path / "Roaming")}, home)
    assert windows == tmp_path / "Roaming" / "Claude" / "claude_desktop_config.json"
    assert default_config_path("linux", {}, home) == home / ".config" / "Claude" / "claude_desktop_config.json"
    xdg = default_config_path("linux", {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, home)
    assert xdg == tmp_path / "xdg" / "Claude" / "claude_desktop_config.json"


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.*.bak"))


def test_install_merges_backs_up_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "Claude" / "claude_desktop_config.json"
    path.parent.mkdir()
    others = {"filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/x"]}}
    original = json.dumps({"globalShortcut": "Ctrl+Space", "mcpServers": others}, indent=4)
    path.write_text(original)
    entry = server_entry(Settings(db_path=tmp_path / "agents.db", llm_api_key=KEY))
    assert KEY not in json.dumps(entry)  # the key is written only on request

    first = merge_server(path, "letta", entry, now=datetime(2025, 1, 2, 3, 4, 5))
    assert first.outcome == "added" and first.backup is not None
    assert first.backup.read_text() == original
    merged = json.loads(path.read_text())
    assert merged["globalShortcut"] == "Ctrl+Space"
    assert merged["mcpServers"]["filesystem"] == others["filesystem"]
    assert merged["mcpServers"]["letta"] == entry

    written = path.read_bytes()
    again = merge_server(path, "letta", entry, now=datetime(2025, 1, 2, 3, 4, 6))
    assert again.outcome == "unchanged" and again.backup is None
    assert path.read_bytes() == written and len(backups(path)) == 1

    moved = server_entry(Settings(db_path=tmp_path / "elsewhere.db"))
    updated = merge_server(path, "letta", moved, now=datetime(2025, 1, 2, 3, 4, 5))  # same second as the first
    assert updated.outcome == "updated" and len(backups(path)) == 2
    assert json.loads(path.read_text())["mcpServers"]["letta"]["env"]["MCP_LETTA_DB"].endswith("elsewhere.db")


def test_install_creates_a_missing_config_without_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "new" / "Claude" / "claude_desktop_config.json"
    done = merge_server(path, "letta-work", server_entry(Settings(db_path=tmp_path / "a.db"), uvx=True))
    assert done.outcome == "created" and done.backup is None
    entry = json.loads(path.read_text())["mcpServers"]["letta-work"]
    assert Path(entry["command"]).name == "uvx" and entry["args"] == ["mcp-letta"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"mcpServers": ["a list"]}'])
def test_install_refuses_a_config_it_cannot_read(tmp_path: Path, content: str) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(content)
    with pytest.raises(Invalid, match="nothing was changed"):
        merge_server(path, "letta", server_entry(Settings(db_path=tmp_path / "a.db")))
    assert path.read_text() == content and not backups(path)


def test_install_command_writes_the_key_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith(("MCP_LETTA_", "OPENAI_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("MCP_LETTA_LLM_API_KEY", KEY)
    monkeypatch.setenv("MCP_LETTA_MODEL", "gpt-4o-mini")
    path = tmp_path / "claude_desktop_config.json"
    assert main(["install", "claude-desktop", "--config", str(path)]) == 0
    assert KEY not in path.read_text() and "gpt-4o-mini" in path.read_text()
    assert "--with-api-key" in capsys.readouterr().out
    assert main(["install", "claude-desktop", "--config", str(path)]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert main(["install", "claude-desktop", "--config", str(path), "--with-api-key"]) == 0
    assert json.loads(path.read_text())["mcpServers"]["letta"]["env"]["MCP_LETTA_LLM_API_KEY"] == KEY
    path.write_text("{broken")
    assert main(["install", "claude-desktop", "--config", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_cli_accepts_the_http_and_setup_commands() -> None:
    args = _parser().parse_args(["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.transport, args.host, args.port) == ("http", "0.0.0.0", 9000)
    assert _parser().parse_args(["doctor"]).command == "doctor"
    install = _parser().parse_args(["install", "claude-desktop", "--name", "x", "--uvx"])
    assert (install.host_app, install.name, install.uvx) == ("claude-desktop", "x", True)
