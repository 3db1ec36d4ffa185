"""The exporter's exclusive lock: `STORE/.export.lock`, created with O_CREAT|O_EXCL.

The file holds JSON {pid, host, time}. A second exporter is refused with a message naming the
holder. A lock whose pid no longer exists on this host is stale (the exporter crashed) and is taken
over: the stale file is first renamed to a name unique to us, so of two processes racing for the
same stale lock exactly one wins, and a fresh lock renamed by mistake is put back. Locks held on
another host cannot be checked and are always refused. Local stores only (object stores have no
exclusive create); see `storage.py`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from simdistill.errors import StoreError

LOCK_NAME = ".export.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return {}  # unreadable or half-written: treat as held, never as stale


def _refusal(root: Path, holder: dict) -> StoreError:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return StoreError(
        f"store {root} is being written by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"since {when}; wait for it or remove {root / LOCK_NAME} if that process is gone"
    )


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _take_over_stale(path: Path, stale: dict) -> None:
    """Move a stale lock aside; if what we moved was not the stale lock we read, put it back."""
    aside = path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # someone else moved it; the O_EXCL create decides who wins
    if _read(aside) != stale:  # raced: we moved a live lock; restore it unless a third party locked meanwhile
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


@contextlib.contextmanager
def export_lock(root: Path) -> Iterator[None]:
    """Hold `root/.export.lock` for the duration of the block (see the module docstring)."""
    path = root / LOCK_NAME
    host = socket.gethostname()
    for _ in range(3):
        try:
            if _try_create(path):
                break
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
                raise StoreError(
                    f"cannot create the export lock {path} ({exc.strerror}); use a writable store location"
                ) from None
            raise
        holder = _read(path)
        if holder is None:
            continue  # released between our create and our read
        if holder.get("host") == host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
            _take_over_stale(path, holder)
            continue
        raise _refusal(root, holder)
    else:
        raise _refusal(root, _read(path) or {})
    try:
        yield
    finally:
        holder = _read(path)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == host:
            path.unlink(missing_ok=True)
