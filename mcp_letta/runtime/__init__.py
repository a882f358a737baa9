"""The agent runtime: context window, toolbox, runner and scheduler."""
