"""How big any input may be, and the checks that refuse one too big or malformed before any work is done.

An error never echoes more than a short excerpt of what it was given (``shown``).
"""

from __future__ import annotations

from mcp_letta.errors import Invalid

MAX_REF = 256  # an id, name or label
MAX_TAG = 64
MAX_TAGS = 100
MAX_DESCRIPTION = 4_000
MAX_SYSTEM = 100_000
MAX_QUERY = 1_000
MAX_TEXT = 200_000  # one message to an agent, or one archival passage
MAX_BLOCK_LIMIT = 1_000_000
MAX_CURSOR = 2**62
MAX_PAGE = 1_000  # rows one listing or search may return
UNNAMED = frozenset({"run", "passage"})  # named by id only


def check_page(limit: object, field: str = "limit") -> int:
    """A page size: a whole number from 1 to ``MAX_PAGE``."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"{field} must be between 1 and {MAX_PAGE} (got {shown(limit)})")
    return limit


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: what an error message may quote of its input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_ref(ref: object, kind: str) -> str:
    """A reference must be a non-empty string no longer than any id or name can be, without the NUL character
    none of them has (free text loses it: ``clean_text``)."""
    article = "an" if kind[0] in "aeiou" else "a"
    what = f"{article} {kind} id" if kind in UNNAMED else f"{article} {kind} name or id"
    if not isinstance(ref, str) or not ref.strip():
        raise Invalid(f"{article} {kind} reference is required: pass {what}", kind=kind)
    if len(ref) > MAX_REF:
        raise Invalid(
            f"{kind} reference {shown(ref)} is {len(ref)} characters long; names and ids have at most {MAX_REF}: "
            f"pass {what}",
            kind=kind,
        )
    if "\x00" in ref:  # (PostgreSQL cannot even look one up: its text has no NUL)
        raise Invalid(
            f"{kind} reference {shown(ref)} holds a NUL character, which no name or id has: pass {what}",
            kind=kind,
        )
    return ref


def check_text(value: object, field: str, max_chars: int) -> str:
    """Free text must be a string of at most ``max_chars`` characters."""
    if not isinstance(value, str):
        raise Invalid(f"{field} must be text")
    if len(value) > max_chars:
        raise Invalid(f"{field} is {len(value)} characters long; at most {max_chars} are allowed: shorten it")
    return value


def check_cursor(value: int | None, field: str) -> int | None:
    """A paging cursor (a seq or version to page back from) is a positive whole number."""
    if value is not None and (not isinstance(value, int) or value < 1 or value > MAX_CURSOR):
        raise Invalid(f"{field} must be a positive whole number from a previous listing (got {shown(value)})")
    return value


def check_list(value: object, field: str, example: str) -> list[object]:
    """A list argument (``None``: empty) as a list. One string is refused, not split into its characters:
    ``tags="team"`` would otherwise mean the tags t, e, a and m. ``example`` is one such value, for the error."""
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        given = f"one string ({shown(value)})" if isinstance(value, str) else type(value).__name__
        raise Invalid(f"{field} must be a list, not {given}: write e.g. {field}=[{example!r}]")
    return list(value)


def check_flag(value: object, field: str) -> bool:
    """A yes/no argument must be ``True`` or ``False``: ``"no"`` would otherwise count as yes."""
    if not isinstance(value, bool):
        raise Invalid(f"{field} must be True or False (got {shown(value)})")
    return value


def check_mapping(value: object, field: str) -> dict[str, object]:
    """A mapping argument (``None``: empty) as a dict with string keys."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise Invalid(
            f"{field} must be a dict with string keys, e.g. {field}={{'team': 'research'}} (got {shown(value)})"
        )
    return dict(value)


def check_version(value: object) -> int | None:
    """``expected_version``: the block's version as read (a whole number), or ``None`` to write regardless."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise Invalid(
            f"expected_version must be the block's version as read (a whole number), or None to write regardless "
            f"(got {shown(value)})"
        )
    return value


def check_tags(tags: object) -> list[str]:
    """Tags: non-empty strings of at most 64 characters without NUL, at most 100 of them; duplicates dropped."""
    if tags is None:
        return []
    if not isinstance(tags, list | tuple):
        raise Invalid("tags must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise Invalid(f"{len(tags)} tags given; at most {MAX_TAGS} are allowed")
    clean: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG or "\x00" in tag:
            raise Invalid(
                f"tag {shown(tag)} is not allowed: tags are non-empty strings of at most {MAX_TAG} characters, "
                "without NUL"
            )
        if tag.strip() not in clean:
            clean.append(tag.strip())
    return clean


def clean_text(value: str) -> str:
    """Strip NUL bytes (as Letta does): SQLite and most LLM APIs mishandle them."""
    return value.replace("\x00", "")
