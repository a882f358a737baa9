"""The error tree of mcp-letta.

Every error carries a stable ``code`` (for programs) and a message that says what went wrong and what
to do next (for people and models). The MCP surface turns these into ``ToolError`` results verbatim.
"""

from __future__ import annotations

from typing import Any


class LettaError(Exception):
    """Base of every error mcp-letta raises on purpose."""

    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class NotFound(LettaError):
    """An agent, block, passage or run reference matches nothing; the message names the closest matches."""

    code = "not_found"


class Conflict(LettaError):
    """The write lost a race or breaks a uniqueness rule (stale ``expected_version``, duplicate name/label)."""

    code = "conflict"


class VersionConflict(Conflict):
    """A compare-and-set write named a version that is no longer current."""

    def __init__(self, message: str, *, current_version: int, current_value: str) -> None:
        super().__init__(message, current_version=current_version, current_value=current_value)
        self.current_version = current_version
        self.current_value = current_value


class LimitExceeded(LettaError):
    """An edit would make a block longer than its character limit; nothing was changed."""

    code = "limit_exceeded"


class ReadOnly(LettaError):
    """An agent tried to edit a read-only block (read-only protects blocks from agents, not from the API)."""

    code = "read_only"


class Invalid(LettaError):
    """An argument is malformed or out of range; the message says which and what is allowed."""

    code = "invalid"


class StorageUnavailable(LettaError):
    """The database cannot be used as asked: the disk is full, the file is not an mcp-letta database or is
    newer than this mcp-letta, it cannot be written; ``reason`` says which, ``hint`` what to do."""

    code = "storage"

    def __init__(self, problem: str, hint: str, *, reason: str) -> None:
        super().__init__(f"{problem}: {hint}", reason=reason)
        self.problem = problem
        self.hint = hint
        self.reason = reason


class LLMUnavailable(LettaError):
    """No LLM is configured, or the configured endpoint cannot be reached or keeps failing."""

    code = "llm_unavailable"


class Timeout(LettaError):
    """A wait ran out of time; the work it waited on may still be going."""

    code = "timeout"


class Cancelled(LettaError):
    """The run was cancelled before it finished."""

    code = "cancelled"


class Deadlock(LettaError):
    """A synchronous wait would close a cycle of agents waiting on each other, or nest too deep."""

    code = "deadlock"


__all__ = [
    "Cancelled",
    "Conflict",
    "Deadlock",
    "Invalid",
    "LLMUnavailable",
    "LettaError",
    "LimitExceeded",
    "NotFound",
    "ReadOnly",
    "StorageUnavailable",
    "Timeout",
    "VersionConflict",
]


def validation_problems(exc: Any) -> str:
    """A pydantic ``ValidationError`` as one readable line per problem (``field: what is wrong``)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
