"""Names: which agent names and block labels are allowed, and the closest existing names a "not found"
message suggests, so a caller (often a model) can correct itself in one step.
"""

from __future__ import annotations

import difflib
import re

from mcp_letta.errors import Invalid
from mcp_letta.store.limits import shown

AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
BLOCK_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def closest(ref: str, candidates: list[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates nearest to ``ref``: fuzzy matches first, then ones containing it."""
    lowered = {c.lower(): c for c in candidates}
    picked = [lowered[c] for c in difflib.get_close_matches(ref.lower(), list(lowered), n=n, cutoff=0.5)]
    for cand in candidates:
        if len(picked) >= n:
            break
        if cand not in picked and ref and (ref.lower() in cand.lower() or cand.lower() in ref.lower()):
            picked.append(cand)
    return picked


def suggestion(ref: str, candidates: list[str]) -> str:
    """The 'did you mean' tail of a not-found message."""
    near = closest(ref, candidates)
    if near:
        return f"did you mean {', '.join(repr(c) for c in near)}?"
    if candidates:
        return "1 exists" if len(candidates) == 1 else f"{len(candidates)} exist"
    return "none exist yet"


def check_agent_name(name: str) -> str:
    """Validate an agent name: it becomes part of an MCP tool name (``ask_<name>``)."""
    if not isinstance(name, str) or not AGENT_NAME.match(name):
        raise Invalid(
            f"agent name {shown(name)} is not allowed: use 1-64 letters, digits, '-' or '_', starting with a "
            "letter or digit (the name becomes part of a tool name such as ask_<name>)"
        )
    return name


def check_label(label: str) -> str:
    """Validate a block label: it is rendered as an XML-like tag in the agent's prompt."""
    if not isinstance(label, str) or not BLOCK_LABEL.match(label):
        raise Invalid(
            f"block label {shown(label)} is not allowed: use 1-64 letters, digits, '-' or '_', starting with a "
            "letter or '_' (the label is rendered as <label> in the agent's prompt)"
        )
    return label
