"""Paging cursors, the same on every engine: an opaque token naming the listing it came from, a digest of
that listing's filters, and the sort key of the last item shown.

An engine pages by key ("after this name", "older than this seq"), never by offset, so rows written between
two pages never shift what the next page shows. ``encode`` and ``decode`` are all an engine needs; a cursor
that is malformed, from another listing or from other filters is refused with an error saying what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mcp_letta.errors import Invalid
from mcp_letta.models import Page
from mcp_letta.store.limits import shown

T = TypeVar("T")
Key = list[Any]  # the sort key of one item: strings, whole numbers and floats
MAX_CURSOR_CHARS = 1_000
FIX = "pass next_cursor from the previous page unchanged, or omit cursor to start from the first page"


def _scope_digest(scope: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(scope), sort_keys=True, default=str).encode()).hexdigest()[:12]


def encode(listing: str, scope: Sequence[Any], key: Key) -> str:
    """The cursor of ``listing`` (e.g. "agents") with these filters, positioned after the item with ``key``."""
    raw = json.dumps({"l": listing, "s": _scope_digest(scope), "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str | None, listing: str, scope: Sequence[Any], types: Sequence[type]) -> Key | None:
    """The key a cursor of ``listing`` (with the filters ``scope``) points after; None for no cursor.

    ``types`` are the key's parts (``float`` accepts whole numbers too). Anything else is ``Invalid``.
    """
    if cursor is None:
        return None
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise Invalid(f"cursor {shown(cursor)} is not a cursor from this listing: {FIX}")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("l"), str) or not isinstance(data.get("k"), list):
        raise Invalid(f"cursor {shown(cursor)} is not a cursor from this listing: {FIX}")
    if data["l"] != listing:
        raise Invalid(f"this cursor is from a listing of {data['l']}, not of {listing}: {FIX}")
    if data.get("s") != _scope_digest(scope):
        raise Invalid(
            "this cursor was made with other filters: pass the same filters as for the first page, or omit "
            "cursor to start over"
        )
    key = data["k"]
    if len(key) != len(types) or not all(_is(part, kind) for part, kind in zip(key, types, strict=True)):
        raise Invalid(f"cursor {shown(cursor)} is not a cursor from this listing: {FIX}")
    return key


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    if kind is int:
        return isinstance(value, int) and abs(value) < 2**62
    return isinstance(value, kind)


def page_of(
    rows: Sequence[Any],
    items: list[T],
    limit: int,
    *,
    key: Callable[[Any], Key],
    count_after: Callable[[Key], int],
    listing: str,
    scope: Sequence[Any],
) -> Page[T]:
    """The page of ``items`` made from ``rows`` (fetched in order, at most ``limit``): ``more`` counts the
    rows after the last one (asked only when the page is full), and ``next_cursor`` points after it."""
    if len(rows) < limit:
        return Page(items=items)
    last = key(rows[-1])
    more = count_after(last)
    return Page(items=items, more=more, next_cursor=encode(listing, scope, last) if more else None)
