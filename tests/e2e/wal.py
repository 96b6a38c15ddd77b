"""What a SQLite write-ahead log holds after a crash, read from the file itself (https://sqlite.org/fileformat.html,
"The WAL file format"), and the checks a power-loss test runs on a copy of the database as the crash left it.

A WAL is a 32-byte header and then frames, each a 24-byte header and one page. A frame is valid when its salts
equal the header's and its checksum (cumulative over the header and every frame before it) matches; a frame
whose "database size after commit" field is not 0 ends a transaction. Valid frames after the last commit frame
are a transaction the process was writing when it died: the crash fell inside a commit, and recovery must
ignore those frames.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sqlite3
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

MAGIC_LITTLE, MAGIC_BIG = 0x377F0682, 0x377F0683
HEADER, FRAME_HEADER = 32, 24


@dataclass(frozen=True)
class WalTail:
    committed: int  # valid frames up to and including the last commit frame
    uncommitted: int  # valid frames after it: a transaction cut off mid-write


def _checksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_tail(path: Path) -> WalTail:
    """The valid frames of the WAL at ``path`` (none when it is missing, empty or reset)."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < HEADER:
        return WalTail(0, 0)
    magic, _version, page_size, _ckpt, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:HEADER])
    if magic not in (MAGIC_LITTLE, MAGIC_BIG):
        return WalTail(0, 0)
    big = magic == MAGIC_BIG
    s0, s1 = _checksum(data[:24], 0, 0, big)
    if (s0, s1) != (c0, c1):
        return WalTail(0, 0)
    valid = last_commit = 0
    offset = HEADER
    while offset + FRAME_HEADER + page_size <= len(data):  # bounded by the file's length
        _page, commit_size, f_salt1, f_salt2, f0, f1 = struct.unpack(">6I", data[offset : offset + 24])
        if (f_salt1, f_salt2) != (salt1, salt2):
            break
        body = data[offset + FRAME_HEADER : offset + FRAME_HEADER + page_size]
        s0, s1 = _checksum(data[offset : offset + 8] + body, s0, s1, big)
        if (s0, s1) != (f0, f1):
            break
        valid += 1
        if commit_size:
            last_commit = valid
        offset += FRAME_HEADER + page_size
    return WalTail(last_commit, valid - last_commit)


@dataclass(frozen=True)
class DiskState:
    """A copy of the database as the crash left it, checked: integrity and what it holds."""

    integrity: str
    tail: WalTail
    missing: frozenset[str]  # accepted event ids neither in the event log nor in any inbox


def check_copy(data_dir: Path, scratch: Path, accepted: Collection[str]) -> DiskState:
    """Copies ``tidings.db`` and its WAL (not the shared-memory index: a power cut loses it) to ``scratch``,
    reads the WAL's tail, opens the copy (SQLite recovers it as after a power cut), runs ``PRAGMA
    integrity_check`` and looks up every accepted event. The original is left to the restarted server."""
    scratch.mkdir(parents=True, exist_ok=True)
    for stale in scratch.glob("tidings.db*"):
        stale.unlink()
    for suffix in ("", "-wal"):
        source = data_dir / f"tidings.db{suffix}"
        if source.exists():
            shutil.copyfile(source, scratch / source.name)
    tail = wal_tail(scratch / "tidings.db-wal")
    with contextlib.closing(sqlite3.connect(scratch / "tidings.db", timeout=30)) as db:
        integrity = "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))
        held = {row[0] for row in db.execute("SELECT id FROM event_log UNION SELECT event_id FROM inbox")}
    return DiskState(integrity, tail, frozenset(set(accepted) - held))


# Linux syscall numbers of the calls SQLite commits with: write/pwrite64 (frames into the WAL), fsync/fdatasync.
COMMIT_SYSCALLS = {
    "x86_64": {1: "write", 18: "pwrite64", 74: "fsync", 75: "fdatasync"},
    "aarch64": {64: "write", 68: "pwrite64", 82: "fsync", 83: "fdatasync"},
}.get(platform.machine(), {})


def committing(pid: int, calls: Collection[str] = ()) -> str | None:
    """What a thread of process ``pid`` is doing to the database right now, as ``"fdatasync tidings.db-wal"``,
    when it is inside one of ``COMMIT_SYSCALLS`` on a ``tidings.db*`` file; else None. Reads
    ``/proc/<pid>/task/*/syscall`` (root, or the same user with ptrace allowed); None when it cannot.
    ``calls``: only these syscalls (by name) count; all of ``COMMIT_SYSCALLS`` when empty."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            fields = (task / "syscall").read_text().split()
        except OSError:
            continue  # the thread ended, or no permission
        if len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) not in COMMIT_SYSCALLS:
            continue
        if calls and COMMIT_SYSCALLS[int(fields[0])] not in calls:
            continue
        try:
            target = os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}")
        except (OSError, ValueError):
            continue
        if Path(target).name.startswith("tidings.db"):
            return f"{COMMIT_SYSCALLS[int(fields[0])]} {Path(target).name}"
    return None


def can_watch(pid: int) -> bool:
    """Whether ``committing`` can see into ``pid`` (its syscall files readable, a known architecture)."""
    try:
        return bool(COMMIT_SYSCALLS) and bool((Path(f"/proc/{pid}/task/{pid}") / "syscall").read_text())
    except OSError:
        return False
