"""``python -m bench <name>``: run the benchmark in ``bench/<name>.py`` (store, runtime, multiagent, ...).

A benchmark module provides ``main(args: argparse.Namespace) -> int | None`` and, optionally,
``add_arguments(parser)`` and a module docstring whose first line becomes its help text. Modules that
do not exist yet are not offered; only the chosen module is imported, so one broken benchmark cannot
stop the others from running.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

# Listed here (not discovered by scanning) so that helper modules such as bench/common.py never
# turn into subcommands by accident. Add a name when its module lands.
BENCHMARKS = (
    "store", "runtime", "multiagent", "models", "console", "rest", "firstcall", "listing", "replicas", "growth",
    "forwarding",
)  # fmt: skip


def available() -> list[str]:
    """The benchmarks whose module exists in this checkout."""
    return [name for name in BENCHMARKS if importlib.util.find_spec(f"bench.{name}") is not None]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The ``bench`` command line. Only ``chosen`` (or, for help, every benchmark) is imported."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name in available():
        if chosen is not None and name != chosen:
            commands.add_parser(name, help=f"see python -m bench {name} --help")
            continue
        module = _module(name)
        doc = (module.__doc__ or name).strip()
        sub = commands.add_parser(
            name, help=doc.splitlines()[0], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments = getattr(module, "add_arguments", None)
        if add_arguments is not None:
            add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen benchmark; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in available() else None).parse_args(argv)
    return int(_module(args.benchmark).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
