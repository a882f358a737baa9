"""Shared parts of the fault-injection tests (``test_faults_*.py``): a raw-pipe stdio server, the fixed seeded
fuzz corpus, and a way to run a command with a small file system or a read-only path where the machine allows.

The corpus is the hostile-input battery's cases (derived from every tool's input schema) sampled with a fixed
seed, plus wire-level damage no client library would send: lone surrogates, JSON nested 200 deep, NaN, lines
that are not JSON. Every case must fail, so the database must not change.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from test_hostile_input import BIG, World, battery

SEED = 15
CHECKOUT = str(Path(__file__).resolve().parent.parent)
INITIALIZE = {
    "jsonrpc": "2.0", "id": "init", "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "faults", "version": "1"}},
}  # fmt: skip
NOTHING_LISTENS = "http://127.0.0.1:9/v1"  # an LLM endpoint that refuses connections: a run fails fast


def server_env(db_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for ``python -m mcp_letta`` on ``db_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_LETTA_", "OPENAI_"))}
    return {**env, "MCP_LETTA_DB": str(db_path), "MCP_LETTA_LLM_BASE_URL": NOTHING_LISTENS,
            "MCP_LETTA_MODEL": "m", "MCP_LETTA_LLM_MAX_RETRIES": "0", "PYTHONPATH": CHECKOUT, **extra}  # fmt: skip


class RawStdio:
    """``python -m mcp_letta`` as a subprocess spoken to line by line (no client library in between)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env)  # fmt: skip
        self._watchdog = threading.Timer(120, self.proc.kill)  # a hung server fails the test instead of hanging it
        self._watchdog.start()
        self.answers: dict[Any, dict[str, Any]] = {}
        self.unmatched: list[dict[str, Any]] = []  # answers with id null

    def send_lines(self, lines: list[str | bytes]) -> None:
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")
        self.proc.stdin.flush()

    def send_in_background(self, lines: list[str]) -> threading.Thread:
        """Write ``lines`` from another thread, so a reply filling the stdout pipe cannot stall both sides."""
        writer = threading.Thread(target=self.send_lines, args=(lines,), daemon=True)
        writer.start()
        return writer

    def send(self, *messages: dict[str, Any]) -> None:
        self.send_lines([json.dumps(m) for m in messages])

    def handshake(self) -> None:
        self.send(INITIALIZE, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.wait_for({"init"})

    def wait_for(self, ids: set[Any], nulls: int = 0, count: int = 0) -> None:
        """Read answers until every id in ``ids``, ``nulls`` answers with id null and ``count`` answers in all
        have come."""
        assert self.proc.stdout is not None
        while not (ids <= self.answers.keys() and len(self.unmatched) >= nulls and len(self.answers) >= count):
            line = self.proc.stdout.readline()
            missing = sorted(map(str, ids - self.answers.keys()))
            assert line, f"the server closed stdout without answering {missing[:10]}"
            message = json.loads(line)  # stdout carries only JSON-RPC
            if "id" not in message:
                continue  # a notification
            if message["id"] is None:
                self.unmatched.append(message)
            else:
                assert message["id"] not in self.answers, f"answered twice: {message}"
                self.answers[message["id"]] = message

    def call(self, request_id: Any, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                   "params": {"name": tool, "arguments": args}})  # fmt: skip
        self.wait_for({request_id})
        return self.answers[request_id]

    def close(self) -> tuple[int, str]:
        """Close stdin (as a host does) and wait for the exit; the exit code and stderr."""
        _, stderr = self.proc.communicate(timeout=60)
        self._watchdog.cancel()
        return self.proc.returncode, stderr.decode(errors="replace")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._watchdog.cancel()


def stdio_command() -> list[str]:
    return [sys.executable, "-m", "mcp_letta"]


# -- the corpus ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """One fuzzed request: its id, what was done to it, and the line as sent."""

    request_id: int
    label: str
    line: str


def corpus(tools: list[dict[str, Any]], size: int, *, big: int, first_id: int = 1000) -> list[Fault]:
    """``size`` failing tool calls sampled with the fixed seed from the battery over ``tools`` (as tools/list
    lists them), ``big`` of them carrying a 10 MB string, and wire-level damage mixed in."""
    from mcp.types import Tool

    rng = random.Random(SEED)
    cases = [case for tool in tools for case in battery(Tool.model_validate(tool), World())]
    large = [c for c in cases if _holds(c.args, BIG)]
    small = [c for c in cases if not _holds(c.args, BIG)]
    picked = rng.sample(small, min(size - big, len(small))) + rng.sample(large, min(big, len(large)))
    rng.shuffle(picked)
    faults: list[Fault] = []
    for n, case in enumerate(picked):
        request_id = first_id + n
        request = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                   "params": {"name": case.tool, "arguments": case.args}}  # fmt: skip
        damage = rng.random()
        if damage < 0.08:  # a lone surrogate where the call had text
            line = json.dumps(request).replace('"jsonrpc"', '"note": "\\ud800", "jsonrpc"', 1)
            faults.append(Fault(request_id, f"{case} + lone surrogate", line))
        elif damage < 0.14:  # JSON nested 200 deep inside the arguments
            line = json.dumps(request)[:-1] + ', "deep": ' + "[" * 200 + "]" * 200 + "}"
            faults.append(Fault(request_id, f"{case} + nesting 200 deep", line))
        elif damage < 0.17:
            faults.append(Fault(request_id, f"{case} + NaN", json.dumps({**request, "params": {
                "name": case.tool, "arguments": {**case.args, "nan": float("nan")}}})))  # fmt: skip
        elif damage < 0.20:
            faults.append(Fault(request_id, f"{case} params as a string", json.dumps({**request, "params": "str"})))
        else:
            faults.append(Fault(request_id, str(case), json.dumps(request)))
    return faults


def _holds(value: Any, needle: str) -> bool:
    if isinstance(value, dict):
        return any(_holds(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(_holds(v, needle) for v in value)
    return value is needle


GARBAGE = ["this is not json", "{", "[]", "42", "null", '"a string"', "\x00\x01\x02", '{"jsonrpc": "2.0"}']


# -- small and read-only file systems ---------------------------------------------------------------------
def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as probe:
        done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                              capture_output=True)  # fmt: skip
    return done.returncode == 0


NAMESPACES = _namespaces_work()
NO_NAMESPACES = "needs `unshare -rm` (a private mount namespace) to mount a small tmpfs or a read-only bind"


def in_namespace(setup: str, command: list[str], after: str = "") -> list[str]:
    """``command`` run in a private mount namespace after the shell ``setup`` (mounts nobody else sees), then
    ``after`` (say, copying the database out); the exit code is the command's."""
    quoted = " ".join(_quote(part) for part in command)
    return ["unshare", "-rm", "sh", "-c", f"set -e; {setup}; set +e; {quoted}; rc=$?; {after or 'true'}; exit $rc"]


# -- PostgreSQL in namespaces of its own: a network that goes silent, a full disk ----------------------------
def _unshare_works(flag: str) -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", flag, "true"], capture_output=True).returncode == 0


NETWORK_NAMESPACES = _unshare_works("-n")
NO_NETWORK_NAMESPACES = "needs `unshare -n` (a private network namespace: root) to cut its loopback network"
MOUNT_NAMESPACES = _unshare_works("-m")  # as root, so that its PostgreSQL server can run as another user
NO_MOUNT_NAMESPACES = "needs `unshare -m` as root (a private mount namespace) to give PostgreSQL a small disk"


def set_loopback(up: bool) -> None:
    """Bring this network namespace's loopback interface up or down (``SIOCSIFFLAGS``). While it is down,
    packets between connections on 127.0.0.1 are dropped without a word: to TCP, a network gone silent
    (nothing refused, nothing closed)."""
    import fcntl
    import socket
    import struct

    get_flags, set_flags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, get_flags, struct.pack("16sh", b"lo", 0)))[1]
        flags = flags | iff_up if up else flags & ~iff_up
        fcntl.ioctl(s, set_flags, struct.pack("16sh", b"lo", flags))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def iter_lines(text: str) -> Iterator[str]:
    yield from (line for line in text.splitlines() if line.strip())
