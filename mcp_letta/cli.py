"""The ``mcp-letta`` command: serve MCP (stdio by default) and inspect the store from a shell.

With no arguments it serves MCP over stdio, which is what MCP hosts launch; ``serve --transport http``
serves streamable HTTP (and the web console at ``/``); ``console`` serves the console alone. ``doctor`` checks
a setup and ``install HOST`` registers us with an MCP host. Only those, ``console`` (its URL) and the
``agents``/``blocks`` commands write to stdout; the servers never do (protocol aside).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from mcp_letta import __version__
from mcp_letta.config import Settings, db_target, default_db_path
from mcp_letta.errors import Invalid, LettaError
from mcp_letta.hub import AgentHub, every_page
from mcp_letta.install import HOSTS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-letta", description="Stateful Letta-style agents as MCP tools. No command: serve MCP over stdio."
    )
    parser.add_argument("--version", action="version", version=f"mcp-letta {__version__}")
    parser.add_argument(
        "--db", type=db_target,
        help=f"SQLite file or postgresql:// URL (default: $MCP_LETTA_DB, else {default_db_path()})",
    )  # fmt: skip
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (logs go to stderr)")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="serve MCP (stdio unless --transport http)")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address; not loopback needs MCP_LETTA_TOKEN")
    serve.add_argument("--port", type=_port, default=8000, help="HTTP port (0: any free port)")
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another Host header to accept over HTTP, e.g. a proxy's name (also: $MCP_LETTA_ALLOWED_HOSTS)",
    )

    console = commands.add_parser("console", help="serve the web console alone on this database (prints its URL)")
    console.add_argument("--host", default="127.0.0.1", help="bind address; not loopback needs MCP_LETTA_TOKEN")
    console.add_argument("--port", type=_port, default=8765, help="port (0: any free port)")
    console.add_argument("--open", action="store_true", help="open the console in a web browser")
    console.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME", help="another Host header to accept"
    )

    commands.add_parser("doctor", help="check the database, the LLM endpoint and model; print a host config")

    install = commands.add_parser("install", help="register mcp-letta with an MCP host")
    install_cmd = install.add_subparsers(dest="host_app", required=True)
    for host in HOSTS.values():
        where = f"{host.key} in {host.label}'s config"
        one = install_cmd.add_parser(host.name, help=f"add mcp-letta to {where}")
        one.add_argument("--config", type=Path, help=f"the config file (default: {host.label}'s for this OS)")
        if host.project_file is not None:
            one.add_argument(
                "--project", type=Path, nargs="?", const=Path.cwd(), metavar="DIR",
                help=f"write the project's {host.project_file} (in DIR, default: here) instead of the user's file",
            )  # fmt: skip
        one.add_argument("--name", default="letta", help=f"the server's name in {host.key} (default: letta)")
        one.add_argument("--uvx", action="store_true", help="launch with `uvx mcp-letta` instead of this install")
        one.add_argument(
            "--with-api-key", action="store_true", help="also write MCP_LETTA_LLM_API_KEY into the file (plain text)"
        )
        one.add_argument("--print", action="store_true", dest="show_only", help="print the entry; write nothing")

    migrate = commands.add_parser("migrate", help="copy a SQLite database into an empty PostgreSQL database")
    migrate.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE", help="the SQLite file")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL", help="postgresql://user@host/db")

    agents = commands.add_parser("agents", help="list or show agents")
    agents_cmd = agents.add_subparsers(dest="action", required=True)
    agents_cmd.add_parser("list", help="list agents")
    show = agents_cmd.add_parser("show", help="show one agent")
    show.add_argument("agent")
    memory = agents_cmd.add_parser("memory", help="print an agent's core memory as its prompt shows it")
    memory.add_argument("agent")

    blocks = commands.add_parser("blocks", help="list or read memory blocks")
    blocks_cmd = blocks.add_subparsers(dest="action", required=True)
    blocks_cmd.add_parser("list", help="list blocks")
    read = blocks_cmd.add_parser("read", help="print one block's value")
    read.add_argument("block")
    read.add_argument("--agent", help="resolve the label among this agent's blocks")
    return parser


def _port(text: str) -> int:
    """A TCP port for ``--port``: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number: use 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number: use 0 to 65535 (0: any free port)")
    return port


async def _inspect(settings: Settings, args: argparse.Namespace) -> Any:
    target = settings.db_path
    if isinstance(target, Path) and not target.exists():  # (a read must not create a database at a mistyped path)
        raise Invalid(
            f"there is no database at {target}: pass the one your server uses with --db or MCP_LETTA_DB "
            "(`mcp-letta doctor` names the one it would use)"
        )
    async with AgentHub(settings, runs_agents=False) as hub:
        if args.command == "agents":
            if args.action == "list":
                return [{"name": a.name, "id": a.id, "tags": a.tags, "description": a.description}
                        for a in await every_page(hub.list_agents)]  # fmt: skip
            if args.action == "show":
                return (await hub.get_agent(args.agent)).model_dump(mode="json")
            return await hub.core_memory(args.agent)
        if args.action == "list":
            return [{"label": b.label, "id": b.id, "version": b.version, "agents": b.agents}
                    for b in await every_page(hub.list_blocks)]  # fmt: skip
        return (await hub.read_block(args.block, agent=args.agent)).value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mcp-letta`` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env().with_overrides(db_path=args.db, log_level=args.log_level)
    except LettaError as exc:
        print(f"mcp-letta: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "DEBUG":  # one INFO line per LLM request would drown everything else
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        if args.command is None or (args.command == "serve" and args.transport == "stdio"):
            from mcp_letta.server.app import serve_stdio

            anyio.run(serve_stdio, settings)
            return 0
        if args.command == "serve":
            from mcp_letta.server.http import options_from, serve_http

            options = options_from(settings, args.host, args.port, args.allowed_host)
            anyio.run(serve_http, settings, options)
            return 0
        if args.command == "console":
            from mcp_letta.console import serve_console

            anyio.run(
                lambda: serve_console(settings, args.host, args.port, tuple(args.allowed_host), open_browser=args.open)
            )
            return 0
        if args.command == "doctor":
            from mcp_letta.doctor import run_doctor

            return anyio.run(run_doctor, settings, sys.stdout)
        if args.command == "migrate":
            from mcp_letta.store import copy_sqlite_to_postgres, is_postgres_url, redact_url

            if not is_postgres_url(args.target):
                raise Invalid(f"--to {args.target!r} is not a postgresql:// URL: pass e.g. postgresql://user@host/db")
            copied = copy_sqlite_to_postgres(args.source, args.target)
            print(f"copied {args.source} to {redact_url(args.target)}:")
            for table, count in copied.items():
                print(f"  {table}: {count}")
            return 0
        if args.command == "install":
            from mcp_letta.install import install

            return install(
                HOSTS[args.host_app], settings, project=getattr(args, "project", None), config=args.config,
                name=args.name, uvx=args.uvx, with_api_key=args.with_api_key, show_only=args.show_only, out=sys.stdout,
            )  # fmt: skip
        result = anyio.run(_inspect, settings, args)
    except LettaError as exc:
        print(f"mcp-letta: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0
