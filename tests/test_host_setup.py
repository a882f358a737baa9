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
    llm.echo()  # a working endpoint answers doctor's probe (under any model name, as llama-server does)
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
    scripted_llm.echo()
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


async def test_doctor_names_the_models_when_ours_is_refused(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    settings = llm_settings_for(scripted_llm, tmp_path, model="llama9")
    scripted_llm.error(404, {"error": {"message": "model 'llama9' not found"}})
    out = io.StringIO()
    assert await run_doctor(settings, out) == 1
    assert "FAIL  model         'llama9' is not served at" in out.getvalue() and "not found" in out.getvalue()
    assert "-> pick one of: scripted-model" in out.getvalue()


async def test_doctor_notes_a_model_that_is_not_listed_but_answers(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    # llama-server lists its file's name and answers under any model name: a note, not a failure.
    out = io.StringIO()
    assert await run_doctor(llm_settings_for(scripted_llm, tmp_path, model="qwen2.5-coder-1.5b"), out) == 0
    assert (
        f"ok    model         'qwen2.5-coder-1.5b' is not listed at {scripted_llm.base_url} (it lists scripted-model) "
        "but answered under that name"
    ) in out.getvalue()


@pytest.mark.parametrize(
    ("answer", "finding"),
    [
        ("native", "native tool_calls came back: MCP_LETTA_TOOL_MODE native or auto suits it"),
        ("printed", "the model printed its call as text, not as native tool_calls: MCP_LETTA_TOOL_MODE=json suits it"),
        ("text", "the model answered without calling the offered tool: if agents do not use their tools, set "
                 "MCP_LETTA_TOOL_MODE=json"),
    ],
)  # fmt: skip
async def test_doctor_asks_for_one_tool_call_and_says_which_tool_mode_suits_the_model(
    scripted_llm: ScriptedLLM, tmp_path: Path, answer: str, finding: str
) -> None:
    settings = llm_settings_for(scripted_llm, tmp_path)
    if answer == "native":
        scripted_llm.tool_call("get_weather", {"city": "Paris"})
    elif answer == "printed":
        scripted_llm.content_json_tool_call("get_weather", {"city": "Paris"})
    else:
        scripted_llm.reply("It is sunny in Paris.")
    out = io.StringIO()
    assert await run_doctor(settings, out) == 0
    assert f"ok    tool calls    {finding}" in out.getvalue()
    [probe] = scripted_llm.requests
    assert probe.tool_names == ["get_weather"] and probe.body["model"] == "scripted-model"


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


def test_doctor_with_nothing_configured_points_to_the_hosts_model_and_prints_the_snippet(tmp_path: Path) -> None:
    done = subprocess.run([str(SCRIPT), "doctor"], capture_output=True, text=True, env=clean_env(tmp_path), timeout=60)
    assert done.returncode == 0, done.stdout
    assert "does not exist yet" in done.stdout
    assert (
        "ok    llm           no LLM endpoint is configured: agents think with the host's own model through MCP "
        "sampling (VS Code offers it; Claude Desktop and Claude Code do not yet: for those, set "
        "MCP_LETTA_LLM_BASE_URL and MCP_LETTA_MODEL)" in done.stdout
    )
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


# -- install into every host ------------------------------------------------------------------------
HOST_FILES = {  # user-wide file under a fake Linux home, project file, the key our entry goes under
    "claude-desktop": (".config/Claude/claude_desktop_config.json", None, "mcpServers"),
    "claude-code": (".claude.json", ".mcp.json", "mcpServers"),
    "cursor": (".cursor/mcp.json", ".cursor/mcp.json", "mcpServers"),
    "vscode": (".config/Code/User/mcp.json", ".vscode/mcp.json", "servers"),
    "windsurf": (".codeium/windsurf/mcp_config.json", None, "mcpServers"),
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home folder (Linux layout) and no MCP_LETTA_ settings, as a new user has."""
    for name in [k for k in os.environ if k.startswith(("MCP_LETTA_", "OPENAI_", "XDG_"))]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("MCP_LETTA_DB", str(tmp_path / "shared" / "agents.db"))
    return home


@pytest.mark.parametrize("host", list(HOST_FILES))
def test_install_writes_each_hosts_own_file_in_its_own_format(
    host: str, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file, _project_file, key = HOST_FILES[host]
    path = home / user_file
    path.parent.mkdir(parents=True, exist_ok=True)
    others = {"other": {"command": "npx", "args": ["-y", "some-server"]}}
    path.write_text(json.dumps({"keepMe": True, key: others}))
    assert main(["install", host]) == 0
    config = json.loads(path.read_text())
    entry = config[key]["letta"]
    assert config["keepMe"] is True and config[key]["other"] == others["other"]  # only our entry changed
    assert entry["env"]["MCP_LETTA_DB"] == str(tmp_path / "shared" / "agents.db")  # every host shares one store
    assert (entry.get("type") == "stdio") == (host == "vscode")  # VS Code's servers say their type
    assert Path(entry["command"]).name.startswith("mcp-letta") or entry["args"][:2] == ["-m", "mcp_letta"]
    assert len(backups(path)) == 1 and f"{key}.letta" in capsys.readouterr().out
    assert main(["install", host]) == 0  # idempotent: no change, no new backup
    assert "already up to date" in capsys.readouterr().out and len(backups(path)) == 1


@pytest.mark.parametrize("host", [h for h, files in HOST_FILES.items() if files[1] is not None])
def test_install_with_project_writes_the_projects_file_and_leaves_the_users_alone(
    host: str, home: Path, tmp_path: Path
) -> None:
    user_file, project_file, key = HOST_FILES[host]
    project = tmp_path / "project"
    project.mkdir()
    assert main(["install", host, "--project", str(project)]) == 0
    assert not (home / user_file).exists()
    written = json.loads((project / str(project_file)).read_text())
    assert list(written) == [key] and list(written[key]) == ["letta"]
    assert (written[key]["letta"].get("type") == "stdio") == (host == "vscode")  # the project file's format too


@pytest.mark.parametrize("host", [h for h, files in HOST_FILES.items() if files[1] is None])
def test_install_with_project_is_refused_where_the_host_has_no_project_file(
    host: str, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):  # the option does not exist for this host
        main(["install", host, "--project", str(tmp_path)])
    assert "unrecognized arguments: --project" in capsys.readouterr().err
    assert not any(home.rglob("*.json"))


def test_install_print_shows_the_entry_and_writes_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_LETTA_LLM_API_KEY", KEY)
    assert main(["install", "vscode", "--print"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# VS Code: {home / '.config/Code/User/mcp.json'}\n")
    shown = json.loads(out.split("\n", 1)[1])
    assert shown["servers"]["letta"]["type"] == "stdio"
    assert shown["servers"]["letta"]["env"]["MCP_LETTA_LLM_API_KEY"] == "<your API key>" and KEY not in out
    assert not any(home.rglob("*.json"))


def test_install_writes_a_postgresql_url_as_given_and_never_prints_its_password(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://letta:s3cret-pw@db.internal:5432/agents"
    monkeypatch.setenv("MCP_LETTA_DB", url)
    assert main(["install", "claude-code"]) == 0
    assert json.loads((home / ".claude.json").read_text())["mcpServers"]["letta"]["env"]["MCP_LETTA_DB"] == url
    said = capsys.readouterr().out
    assert "password is in" in said and "~/.pgpass" in said and "s3cret-pw" not in said
    assert main(["install", "claude-code", "--print"]) == 0
    printed = capsys.readouterr().out
    assert "s3cret-pw" not in printed
    shown = json.loads(printed.split("\n", 1)[1])["mcpServers"]["letta"]["env"]["MCP_LETTA_DB"]
    assert shown == "postgresql://letta:***@db.internal:5432/agents"

    in_the_query = "postgresql://letta@db.internal:5432/agents?sslmode=require&password=s3cret-pw"
    monkeypatch.setenv("MCP_LETTA_DB", in_the_query)  # libpq takes the password as a parameter too
    assert main(["install", "claude-code"]) == 0
    said = capsys.readouterr().out
    assert "password is in" in said and "s3cret-pw" not in said
    assert main(["install", "claude-code", "--print"]) == 0
    printed = capsys.readouterr().out
    shown = json.loads(printed.split("\n", 1)[1])["mcpServers"]["letta"]["env"]["MCP_LETTA_DB"]
    assert shown == "postgresql://letta@db.internal:5432/agents?sslmode=require&password=***"


async def test_doctor_says_which_hosts_have_mcp_letta(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted_llm: ScriptedLLM
) -> None:
    settings = llm_settings_for(scripted_llm, tmp_path)
    out = io.StringIO()
    assert await run_doctor(settings, out) == 0
    assert "ok    hosts         no host has mcp-letta configured yet: run `mcp-letta install HOST`" in out.getvalue()
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    assert main(["install", "cursor"]) == 0
    assert main(["install", "vscode", "--project", str(project)]) == 0
    out = io.StringIO()
    assert await run_doctor(settings, out) == 0
    assert (
        f"ok    hosts         configured in Cursor ({home / '.cursor/mcp.json'}: letta); "
        f"VS Code ({project / '.vscode/mcp.json'}: letta)"
    ) in out.getvalue()


def test_cli_accepts_the_http_and_setup_commands() -> None:
    args = _parser().parse_args(["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.transport, args.host, args.port) == ("http", "0.0.0.0", 9000)
    assert _parser().parse_args(["doctor"]).command == "doctor"
    install = _parser().parse_args(["install", "claude-desktop", "--name", "x", "--uvx"])
    assert (install.host_app, install.name, install.uvx) == ("claude-desktop", "x", True)


def test_cli_reads_refuse_a_database_that_is_not_there_and_ports_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mistyped = tmp_path / "no-such-folder" / "agents.db"
    for command in (["agents", "list"], ["blocks", "list"], ["agents", "show", "alice"]):
        assert main(["--db", str(mistyped), *command]) == 2
        assert f"there is no database at {mistyped}: pass the one your server uses" in capsys.readouterr().err
    assert not mistyped.parent.exists()  # (a mistyped path got a new empty database, and `[]`)
    for port in ("99999", "-1", "http"):  # (99999 was taken, logged as served, then two tracebacks)
        with pytest.raises(SystemExit):
            _parser().parse_args(["serve", "--transport", "http", "--port", port])
        assert "is not a port number: use 0 to 65535" in capsys.readouterr().err


async def test_doctor_fails_without_an_endpoint_when_only_hosts_without_sampling_have_mcp_letta(
    home: Path, tmp_path: Path
) -> None:
    settings = Settings(db_path=tmp_path / "agents.db")
    assert main(["install", "claude-desktop"]) == 0
    out = io.StringIO()
    assert await run_doctor(settings, out) == 1
    assert (
        "FAIL  llm           no LLM endpoint is configured, and Claude Desktop (where mcp-letta is set up) lend "
        "no model to MCP servers (sampling)" in out.getvalue()
    )
    assert "-> set MCP_LETTA_LLM_BASE_URL" in out.getvalue()
    assert main(["install", "vscode"]) == 0  # a host that samples is a way out
    out = io.StringIO()
    assert await run_doctor(settings, out) == 0 and "agents think with the host's own model" in out.getvalue()


async def test_doctor_with_mcp_letta_llm_endpoint_needs_an_endpoint(tmp_path: Path) -> None:
    out = io.StringIO()
    assert await run_doctor(Settings(db_path=tmp_path / "agents.db", llm="endpoint"), out) == 1
    assert "FAIL  llm endpoint  no LLM endpoint is configured" in out.getvalue()


async def test_doctor_with_mcp_letta_llm_sampling_checks_no_endpoint(tmp_path: Path) -> None:
    out = io.StringIO()
    settings = Settings(db_path=tmp_path / "agents.db", llm="sampling", llm_base_url="http://127.0.0.1:9/v1")
    assert await run_doctor(settings, out) == 0
    assert "ok    llm           MCP_LETTA_LLM=sampling: agents think with the host's own model" in out.getvalue()
