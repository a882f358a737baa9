"""What every benchmark here shares: percentiles, overhead figures, the results table and JSON file.

A ``Figure`` is one measured quantity for our code and for a reference (raw ``sqlite3``, a bare
``MCPServer``), reduced to an overhead factor (how many times slower we are) and checked against a
target. Nothing here asserts: a missed target is printed, not raised.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(values, 50)


@dataclass
class Figure:
    """One line of results: our value, the reference value, and the overhead factor against a target.

    ``better`` says which direction is good for the value itself: for a rate ("higher") the overhead
    is reference/ours, for a latency ("lower") it is ours/reference. Either way a factor above 1 means
    we are slower than the reference.
    """

    name: str
    unit: str
    better: Literal["higher", "lower"]
    reference_name: str
    target: float
    target_inclusive: bool = False
    ours: float | None = None
    reference: float | None = None
    note: str = ""
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Our overhead factor (1.0 = as fast as the reference), or None if either side is missing."""
        if not self.ours or not self.reference:
            return None
        return self.reference / self.ours if self.better == "higher" else self.ours / self.reference

    @property
    def meets_target(self) -> bool | None:
        """Whether the overhead factor is within the target, or None if it could not be measured."""
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio <= self.target if self.target_inclusive else ratio < self.target

    def target_text(self) -> str:
        return f"{'<=' if self.target_inclusive else '<'} {self.target:g}x"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, meets_target=self.meets_target, target_text=self.target_text())
        return data


def format_value(value: float | None, unit: str) -> str:
    """A value with its unit and a sensible number of digits, or 'n/a'."""
    if value is None:
        return "n/a"
    if value >= 100:
        text = f"{value:,.0f}"
    elif value >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}"


def format_ratio(ratio: float | None) -> str:
    """An overhead factor such as '1.37x', or 'n/a'."""
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _verdict(figure: Figure) -> str:
    meets = figure.meets_target
    return "n/a" if meets is None else ("yes" if meets else "NO")


def render_table(figures: Iterable[Figure]) -> str:
    """The results as an aligned text table, one line per figure, notes underneath."""
    figures = list(figures)
    header = ("figure", "ours", "reference", "overhead", "target", "meets")
    rows = [
        (
            f.name,
            format_value(f.ours, f.unit),
            f"{format_value(f.reference, f.unit)} ({f.reference_name})",
            format_ratio(f.ratio),
            f.target_text(),
            _verdict(f),
        )
        for f in figures
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"  note: {f.name}: {f.note}" for f in figures if f.note]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """Where the figures were measured, so two result files can be compared honestly."""
    return {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``bench/results/<name>.json`` (git-ignored) and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def remove_database(path: Path) -> None:
    """Delete an SQLite file and its WAL/shared-memory companions, if present."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def log(message: str) -> None:
    """Progress for the person watching (stderr, so stdout stays the table)."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """A loopback port nothing listens on now, for a server started with ``--port``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the server ``proc`` at ``base`` answers ``/health`` with 200 (at most a minute); ``RuntimeError`` if
    it exits first."""
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(60):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with status {proc.returncode}")
                try:
                    if (await http.get(f"{base}/health")).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.1)
