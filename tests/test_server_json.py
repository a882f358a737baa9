"""server.json: valid against the MCP Registry schema, and true to the package, the README and the CLI."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mcp_letta import Settings, __version__
from mcp_letta.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_NAME = "server.schema.2025-12-11.json"
# The issue names ../shared/schemas (next to this checkout); /work/shared is where that lives on CI machines.
SCHEMA_PLACES = [ROOT.parent / "shared" / "schemas" / SCHEMA_NAME, Path("/work/shared/schemas") / SCHEMA_NAME]


@pytest.fixture(scope="module")
def server_json() -> dict[str, Any]:
    return json.loads((ROOT / "server.json").read_text())


def packages(doc: dict[str, Any], transport: str) -> list[dict[str, Any]]:
    return [p for p in doc.get("packages", []) if p["transport"]["type"] == transport]


def test_server_json_is_valid_against_the_registry_schema(server_json: dict[str, Any]) -> None:
    schema_path = next((p for p in SCHEMA_PLACES if p.exists()), None)
    if schema_path is None:
        pytest.skip(f"the registry schema is not here: {', '.join(map(str, SCHEMA_PLACES))}")
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(server_json), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert server_json["$schema"].endswith("/2025-12-11/server.schema.json")
    broken = {**server_json, "description": "x" * 101}
    assert not validator.is_valid(broken)  # the schema really is checked


def test_versions_match_the_package(server_json: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert server_json["version"] == project["version"] == __version__
    for package in server_json["packages"]:
        assert package["version"] == project["version"]
        assert package["registryType"] == "pypi" and package["identifier"] == project["name"]


def test_name_matches_the_readme_marker(server_json: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    # PyPI ownership check: the marker must be followed by a boundary (space, newline, tag or -->).
    markers = re.findall(r"mcp-name:\s*([A-Za-z0-9.\-]+/[A-Za-z0-9._\-]+)(?=\s|-->|<|$)", readme)
    assert markers == [server_json["name"]]


def test_stdio_package_passes_our_settings_and_marks_the_key_secret(server_json: dict[str, Any]) -> None:
    [stdio] = packages(server_json, "stdio")
    env = {v["name"]: v for v in stdio["environmentVariables"]}
    assert {"MCP_LETTA_DB", "MCP_LETTA_LLM_BASE_URL", "MCP_LETTA_LLM_API_KEY", "MCP_LETTA_MODEL"} <= set(env)
    assert env["MCP_LETTA_LLM_API_KEY"]["isSecret"] is True
    assert not any(v.get("isSecret") for name, v in env.items() if name != "MCP_LETTA_LLM_API_KEY")
    assert "packageArguments" not in stdio  # `mcp-letta` alone serves stdio


def test_every_variable_is_one_mcp_letta_reads(server_json: dict[str, Any], tmp_path: Path) -> None:
    samples = {"MCP_LETTA_DB": str(tmp_path / "x.db"), "MCP_LETTA_LLM_BASE_URL": "http://h:1/v1",
               "MCP_LETTA_LLM_API_KEY": "k", "MCP_LETTA_MODEL": "m", "MCP_LETTA_TOKEN": "t"}  # fmt: skip
    default = Settings.from_env({})
    for package in server_json["packages"]:
        for variable in package["environmentVariables"]:
            name = variable["name"]
            assert Settings.from_env({name: samples[name]}) != default, f"{name} changes no setting"


def test_http_package_runs_our_http_command(server_json: dict[str, Any]) -> None:
    [http] = packages(server_json, "streamable-http")
    assert re.fullmatch(r"http://localhost:\{port\}/mcp", http["transport"]["url"])
    argv: list[str] = []
    for argument in http["packageArguments"]:
        if argument["type"] == "named":
            argv.append(argument["name"])
        argv.append(argument.get("value") or argument["default"])
    args = _parser().parse_args(argv)
    assert (args.command, args.transport, args.port) == ("serve", "http", 8000)
    [auth] = http["transport"]["headers"]
    assert auth["name"] == "Authorization" and auth["isSecret"] is True
    secret = {v["name"] for v in http["environmentVariables"] if v.get("isSecret")}
    assert secret == {"MCP_LETTA_LLM_API_KEY", "MCP_LETTA_TOKEN"}
