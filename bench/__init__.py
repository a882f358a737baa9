"""Benchmarks for mcp-letta that print figures and ratios (``python -m bench <name>``); not tests.

Each subcommand lives in its own module ``bench/<name>.py`` with ``add_arguments(parser)`` and
``main(args)``; ``bench/__main__.py`` finds them. Nothing here asserts on timings.
"""
