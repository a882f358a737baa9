"""SQLite's errors as the storage failures of ``store/failures.py``: the disk is full, the file is not SQLite
or not ours, it or its folder or its file system is read-only, it is damaged, the disk failed.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from mcp_letta.errors import StorageUnavailable
from mcp_letta.store import failures

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_PERM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT = 3, 8, 10, 11
SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 13, 14, 26


def explain(exc: BaseException, path: Path) -> StorageUnavailable | None:
    """The storage failure ``exc`` (a ``sqlite3.Error`` or an ``OSError`` about the file) stands for, or None
    when it is not one (a constraint, a bug)."""
    where = str(path)
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return cannot_write(path)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return failures.disk_full(where)
        return None
    if not isinstance(exc, sqlite3.Error):
        return None
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == SQLITE_FULL:
        return failures.disk_full(where)
    if code == SQLITE_NOTADB:
        return failures.not_ours(where, "file is not SQLite")
    if code in (SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_PERM):
        return cannot_write(path)
    if code == SQLITE_CORRUPT:
        return failures.damaged(where, str(exc))
    if code == SQLITE_IOERR:
        # Growing the WAL index or the journal on a full disk fails as an I/O error, not SQLITE_FULL.
        return failures.disk_full(where) if _no_room(path) else failures.io_error(where, str(exc))
    return None


ROOM_BYTES = 64 * 1024  # less free space than a few pages: SQLite cannot grow a file there


def _no_room(path: Path) -> bool:
    folder = next((p for p in [path.parent, *path.parents] if p.exists()), path.parent)
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < ROOM_BYTES


def cannot_write(path: Path) -> StorageUnavailable:
    """Which of the file system, the folder or the file keeps SQLite from writing ``path``."""
    folder = next((p for p in [path.parent, *path.parents] if p.exists()), path.parent)
    try:
        mounted_read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        mounted_read_only = False
    if mounted_read_only:
        return failures.read_only(f"the file system holding {path} is read-only",
                                  f"mount it read-write, or set {failures.SETTING} to a file elsewhere")  # fmt: skip
    if path.exists() and not os.access(path, os.W_OK):
        hint = f"make it writable (chmod u+w {path}), or set {failures.SETTING} to another file"
        return failures.read_only(f"{path} is read-only", hint)
    if not os.access(folder, os.W_OK):
        return failures.read_only(
            f"the folder {folder} is read-only (the database keeps its journal files beside {path.name})",
            f"make the folder writable, or set {failures.SETTING} to a file in a folder you can write",
        )
    for side in ("-wal", "-shm"):
        journal = path.with_name(path.name + side)
        if journal.exists() and not os.access(journal, os.W_OK):
            return failures.read_only(f"{journal} is read-only", f"make it writable (chmod u+w {journal})")
    return failures.read_only(f"{path} cannot be opened for writing",
                              "check the permissions of the file and its folder")  # fmt: skip
