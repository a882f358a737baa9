"""The project keeps its promises: ruff clean, README commands and CI in step, docstrings everywhere."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from mcp_letta.testing import ScriptedLLM

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = "python -m pip install -e '.[test]' && python -m pytest"


def test_ruff_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"```bash\n{TEST_COMMAND}\n```" in readme
    assert TEST_COMMAND in ci.splitlines()


def test_every_public_function_has_a_docstring() -> None:
    # A method that implements a documented method of its base class (an engine's Tx, say) has that
    # docstring, as help() and inspect.getdoc show it.
    trees = {path: ast.parse(path.read_text()) for path in (ROOT / "mcp_letta").rglob("*.py")}
    documented: dict[str, set[str]] = {}
    for tree in trees.values():
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            documented[cls.name] = {
                n.name
                for n in cls.body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and ast.get_docstring(n)
            }
    missing = []
    for path, tree in trees.items():
        if ast.get_docstring(tree) is None:
            missing.append(f"{path.relative_to(ROOT)} (module)")
        public = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            inherited = set().union(*(documented.get(b.id, set()) for b in cls.bases if isinstance(b, ast.Name)))
            public += [
                n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name not in inherited
            ]
        for node in public:
            if not node.name.startswith("_") and ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not missing, "missing docstrings:\n" + "\n".join(missing)


def test_readme_lists_every_cli_command() -> None:
    from mcp_letta.cli import _parser

    readme = (ROOT / "README.md").read_text()
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert re.search(rf"mcp-letta {name}\b", readme), f"README does not show `mcp-letta {name}`"


def test_readme_documents_every_setting() -> None:
    config = (ROOT / "mcp_letta" / "config.py").read_text()
    readme = (ROOT / "README.md").read_text()
    names = sorted(set(re.findall(r'"(MCP_LETTA_[A-Z_]+)"', config)))
    assert len(names) > 10, names
    missing = [name for name in names if name not in readme]
    assert not missing, f"README does not mention {missing}"


def test_license_is_an_spdx_string_the_build_backend_reads() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"  # a TOML table is deprecated by setuptools
    [setuptools] = [r for r in pyproject["build-system"]["requires"] if re.match(r"setuptools\b", r)]
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools.replace(" ", ""))
    assert minimum and int(minimum.group(1)) >= 77, f"{setuptools!r}: the SPDX string form needs setuptools>=77"


def test_the_readme_python_snippet_runs(tmp_path: Path, scripted_llm: ScriptedLLM) -> None:
    # The snippet exactly as the README shows it, against the scripted LLM named by the usual variables.
    [snippet] = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    scripted_llm.reply("The goal is to ship v1.")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "MCP_LETTA_LLM_BASE_URL": scripted_llm.base_url,
        "MCP_LETTA_MODEL": "scripted-model",
    }
    done = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "<project>" in done.stdout and "Goal: ship v1\nResearch started" in done.stdout
    assert done.stdout.rstrip().endswith("completed The goal is to ship v1.")
    assert (tmp_path / "agents.db").exists()
    scripted_llm.reply("Still v1.")  # run again, it finds what it made (a second block 'project' broke it)
    again = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert "Goal: ship v1\nResearch started\nResearch started" in again.stdout
    assert again.stdout.rstrip().endswith("completed Still v1.")


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module an import statement in ``tree`` names."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_only_the_store_knows_sql() -> None:
    # Above store/ nothing imports sqlite3 or an engine, and nothing executes a statement: the Store boundary.
    offenders = []
    for path in (ROOT / "mcp_letta").rglob("*.py"):
        relative = path.relative_to(ROOT / "mcp_letta").as_posix()
        if relative.startswith("store/"):
            continue
        source = path.read_text()
        engine = {
            m
            for m in imported_modules(ast.parse(source))
            if m in ("sqlite3", "psycopg", "mcp_letta.store.sqlite", "mcp_letta.store.postgres")
            or m.startswith(("mcp_letta.store.sqlite.", "mcp_letta.store.postgres."))
        }
        if engine or re.search(r"\.execute(many|script)?\(", source):
            offenders.append(f"{relative}: {sorted(engine) or 'executes SQL'}")
    assert not offenders, offenders
