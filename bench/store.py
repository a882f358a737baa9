"""Store overhead against raw sqlite3 (block appends, archival search) and stdio start-up against a bare server.

Prints one line per figure (ours, reference, overhead factor, target) and writes the same figures,
with every sample, to bench/results/store.json. Targets: appends and search under 2x raw sqlite3
running the same statements; start-up (initialize + tools/list) at most 1.5x a bare MCPServer.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import appends, layers, search, startup
from bench.common import (
    Figure,
    environment,
    format_value,
    log,
    median,
    percentile,
    remove_database,
    render_table,
    write_results,
)

PARTS = ("appends", "search", "startup")
LAYER_PASSAGES = 20_000  # the layer breakdown measures per-call cost, which does not grow with the corpus


@dataclass(frozen=True)
class Sizes:
    """How much work each part does; ``--quick`` shrinks everything for a smoke run."""

    appends: int = 3000
    processes: int = 4
    appends_per_process: int = 750
    rounds: int = 5
    passages: int = 100_000
    queries: int = 500
    search_passes: int = 2
    startups: int = 10


QUICK = Sizes(appends=500, appends_per_process=125, rounds=1, passages=10_000, queries=200, search_passes=1, startups=3)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``store`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every part")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    parser.add_argument("--appends", type=int, help=f"appends in the one-process run (default {Sizes.appends})")
    parser.add_argument("--processes", type=int, help=f"parallel writer processes (default {Sizes.processes})")
    parser.add_argument("--per-process", type=int, help=f"appends per process (default {Sizes.appends_per_process})")
    parser.add_argument("--rounds", type=int, help=f"parallel runs per side, median counts (default {Sizes.rounds})")
    parser.add_argument("--passages", type=int, help=f"archival passages (default {Sizes.passages:,})")
    parser.add_argument("--queries", type=int, help=f"distinct archival searches (default {Sizes.queries})")
    parser.add_argument("--startups", type=int, help=f"timed start-ups per server (default {Sizes.startups})")
    parser.add_argument(
        "--server-cmd", default=shlex.join(startup.OUR_SERVER), help="our stdio server command (default: %(default)s)"
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help=f"also break the append and search overhead down layer by layer (search on {LAYER_PASSAGES:,} passages)",
    )
    parser.add_argument("--dir", type=Path, help="folder for the temporary databases (default: the system temp dir)")


def _sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else Sizes()
    chosen = {
        "appends": args.appends, "processes": args.processes, "appends_per_process": args.per_process,
        "rounds": args.rounds, "passages": args.passages, "queries": args.queries, "startups": args.startups,
    }  # fmt: skip
    return Sizes(**{**base.__dict__, **{k: v for k, v in chosen.items() if v is not None}})


# -- appends ------------------------------------------------------------------------------------------
def _one_process(folder: Path, sizes: Sizes) -> Figure:
    figure = Figure("block appends/s, 1 process", "appends/s", "higher", "raw sqlite3", target=2.0)
    paths = {side: folder / f"appends-{side}.db" for side in ("ours", "raw")}
    for path in paths.values():
        remove_database(path)
        appends.create_database(path, sizes.appends)
    timings = appends.interleaved_appends(paths["ours"], paths["raw"], sizes.appends)
    rates = {side: sizes.appends / sum(seconds) for side, seconds in timings.wall_s.items()}
    cpu_us = {side: sum(seconds) / sizes.appends * 1e6 for side, seconds in timings.cpu_s.items()}
    figure.ours, figure.reference = rates["ours"], rates["raw"]
    figure.samples = {"appends": sizes.appends, "cpu_us_per_append": cpu_us, **timings.__dict__}
    figure.note = _lost(paths, sizes.appends)
    for path in paths.values():
        remove_database(path)
    log(
        f"  1 process: ours {rates['ours']:,.0f} appends/s ({cpu_us['ours']:.0f} us CPU each), "
        f"raw {rates['raw']:,.0f} appends/s ({cpu_us['raw']:.0f} us CPU each)"
    )
    return figure


def _processes(folder: Path, sizes: Sizes) -> Figure:
    total = sizes.processes * sizes.appends_per_process
    figure = Figure(f"block appends/s, {sizes.processes} processes", "appends/s", "higher", "raw sqlite3", 2.0)
    rates: dict[str, list[float]] = {"ours": [], "raw": []}
    cpu_us: dict[str, list[float]] = {"ours": [], "raw": []}
    notes = []
    for round_ in range(sizes.rounds):
        for side in ("raw", "ours") if round_ % 2 == 0 else ("ours", "raw"):
            path = folder / f"appends-{side}.db"
            remove_database(path)
            appends.create_database(path, sizes.appends_per_process, sizes.processes)
            seconds, cpu = appends.parallel_appends(side, path, sizes.processes, sizes.appends_per_process)
            rates[side].append(total / seconds)
            cpu_us[side].append(cpu / total * 1e6)
            notes.append(_lost({side: path}, total))
            remove_database(path)
            log(f"  {sizes.processes} processes, {side}: {rates[side][-1]:,.0f}/s, {cpu_us[side][-1]:.0f} us CPU each")
    figure.ours, figure.reference = median(rates["ours"]), median(rates["raw"])
    figure.samples = {"rates": rates, "cpu_us_per_append": cpu_us, "appends": total, "rounds": sizes.rounds}
    figure.note = "; ".join(n for n in notes if n)
    return figure


def _lost(paths: dict[str, Path], expected: int) -> str:
    """A note if any side recorded fewer appends than it made (never expected: appends are atomic)."""
    counts = {side: appends.appended_count(path) for side, path in paths.items()}
    return "; ".join(f"LOST APPENDS ({side}): {n} of {expected}" for side, n in counts.items() if n != expected)


def run_appends(folder: Path, sizes: Sizes) -> tuple[list[Figure], dict[str, Any]]:
    """The one-process and the parallel append figures, after checking the raw side replays the store."""
    path = folder / "appends-check.db"
    remove_database(path)
    appends.create_database(path, appends.APPENDS_PER_BLOCK)
    same, ours, raw = appends.check_replica(path)
    remove_database(path)
    if not same:
        log("  WARNING: the raw append no longer runs the store's statements; update bench/appends.py")
    figures = [_one_process(folder, sizes), _processes(folder, sizes)]
    for figure in figures:
        if not same:
            figure.note = (figure.note + "; " if figure.note else "") + "raw side differs from the store's SQL"
    return figures, {"replica_matches_store": same, "store_statements": ours, "raw_statements": raw}


# -- archival search ----------------------------------------------------------------------------------
def run_search(folder: Path, sizes: Sizes) -> tuple[list[Figure], dict[str, Any]]:
    """p50 and p99 archival search latency over ``sizes.passages`` passages, ours and raw."""
    path = folder / "archival.db"
    remove_database(path)
    start = time.perf_counter()
    agent_id, words = search.create_corpus(path, sizes.passages)
    load_s = time.perf_counter() - start
    log(f"  loaded {sizes.passages:,} passages in {load_s:.1f} s")
    qs = search.queries(words, sizes.queries)
    same, statements = search.check_replica(path, agent_id, qs[:30])
    if not same:
        log("  WARNING: the raw search no longer runs the store's SQL; update bench/search.py")
    result = search.measure(path, agent_id, qs, passes=sizes.search_passes)
    remove_database(path)
    figures = []
    for q in (50, 99):
        figure = Figure(f"archival search p{q}, {sizes.passages:,} passages", "ms", "lower", "raw sqlite3", 2.0)
        figure.ours, figure.reference = percentile(result["ours_ms"], q), percentile(result["raw_ms"], q)
        figure.samples = {"queries": len(qs), "passes": sizes.search_passes}
        if not same:
            figure.note = "raw side differs from the store's SQL"
        figures.append(figure)
        log(f"  search p{q}: ours {figure.ours:.2f} ms, raw {figure.reference:.2f} ms")
    details = {
        "replica_matches_store": same,
        "store_statements_first_query": statements,
        "load_s": load_s,
        "mean_hits": result["mean_hits"],
        "mean_ms": {side: sum(v) / len(v) for side, v in (("ours", result["ours_ms"]), ("raw", result["raw_ms"]))},
        "latencies_ms": {"ours": result["ours_ms"], "raw": result["raw_ms"]},
    }
    return figures, details


# -- start-up -----------------------------------------------------------------------------------------
def run_startup(sizes: Sizes, server_cmd: str) -> tuple[list[Figure], dict[str, Any]]:
    """Median spawn-to-tools/list time of our stdio server and of a bare one-tool MCPServer."""
    result = startup.measure(sizes.startups, shlex.split(server_cmd))
    figure = Figure(
        "start-up: initialize + tools/list", "ms", "lower", "bare MCPServer", target=1.5, target_inclusive=True
    )
    ms = {side: [s * 1000 for s in samples] for side, samples in result["samples_s"].items()}
    figure.ours = median(ms["ours"]) if ms["ours"] else None
    figure.reference = median(ms["bare"]) if ms["bare"] else None
    figure.samples = {"ms": ms, "tools": result["tools"]}
    figure.note = "; ".join(result["errors"].values())
    ours, bare = format_value(figure.ours, "ms"), format_value(figure.reference, "ms")
    log(f"  start-up medians: ours {ours}, bare {bare}; tools listed {result['tools']}")
    return [figure], {"commands": result["commands"], "errors": result["errors"]}


def _revision() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=appends.REPO_ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(args: argparse.Namespace) -> int:
    """Run the chosen parts, print the table, write bench/results/store.json."""
    sizes = _sizes(args)
    parts = args.only or list(PARTS)
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    machine = environment()  # before we add load of our own
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as tmp:
        folder = Path(tmp)
        if "appends" in parts:
            log("block appends ...")
            found, details["appends"] = run_appends(folder, sizes)
            figures += found
        if "search" in parts:
            log("archival search ...")
            found, details["search"] = run_search(folder, sizes)
            figures += found
        if "startup" in parts:
            log("start-up ...")
            found, details["startup"] = run_startup(sizes, args.server_cmd)
            figures += found
        if args.layers:
            log("layer breakdown ...")
            details["layers"] = {
                "appends": layers.append_layers(folder, sizes.appends),
                "search": layers.search_layers(folder, min(sizes.passages, LAYER_PASSAGES), sizes.queries),
            }
    elapsed = time.perf_counter() - started
    print(render_table(figures))
    how = {
        "appends": f"1 process: ours and raw take turns every 100 appends; {sizes.processes} processes: median of "
        f"{sizes.rounds} runs",
        "search": f"search: {sizes.queries} queries x {sizes.search_passes} passes",
        "startup": f"start-up: median of {sizes.startups}",
    }
    print(f"({elapsed:.0f} s; overhead = times slower than the reference; " + "; ".join(how[p] for p in parts) + ")")
    if args.layers:
        print()
        print(layers.render("append, layer", details["layers"]["appends"]))
        print(layers.render("archival search, layer", details["layers"]["search"]))
    load = machine["load_average"]
    if load and load[0] > 0.5:
        print(f"(load average {load[0]:.2f} on {machine['cpus']} CPUs at the start: other work shares this machine)")
    path = write_results(
        "store",
        {
            "benchmark": "store",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "revision": _revision(),
            "environment": machine,
            "sizes": sizes.__dict__,
            "elapsed_s": elapsed,
            "figures": [f.to_json() for f in figures],
            "details": details,
        },
    )
    print(f"written to {path}")
    return 0
