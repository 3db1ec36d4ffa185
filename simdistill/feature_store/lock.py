"""The exporter's exclusive lock: `STORE/.export.lock`, created only if it does not exist yet.

The lock holds JSON {pid, host, time}. A second exporter is refused with a message naming the holder.
A lock whose pid no longer exists on this host is stale (the exporter crashed) and is taken over; locks
held on another host cannot be checked and are always refused.

- Local stores: created with O_CREAT|O_EXCL. A stale lock is first renamed to a name unique to us, so of
  two processes racing for it exactly one wins, and a fresh lock renamed by mistake is put back.
- Object stores (s3://): a conditional PUT, `If-None-Match: *` (s3fs `pipe_file(mode="create")`), which
  S3 and S3-compatible servers that implement conditional writes apply atomically. A stale lock is replaced
  by a PUT with `If-Match: <its ETag>`, so of two racers only one replaces it. Other fsspec backends get
  fsspec's `mode="create"`, which checks and writes in two steps (not atomic).
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
from typing import Any

from simdistill.errors import StoreError
from simdistill.feature_store.storage import StoreLike, local_root, remote_errors, remote_fs

LOCK_NAME = ".export.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder_bytes() -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode()


def _parse(raw: bytes) -> dict:
    try:
        holder = json.loads(raw)
    except ValueError:
        return {}  # half-written or foreign: treat as held, never as stale
    return holder if isinstance(holder, dict) else {}


def _is_stale(holder: dict) -> bool:
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


def _is_ours(holder: dict | None) -> bool:
    return bool(holder) and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _refusal(where: str, holder: dict) -> StoreError:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    store = where.rsplit("/", 1)[0]
    return StoreError(
        f"store {store} is being written by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"since {when}; wait for it or remove {where} if that process is gone"
    )


# ------------------------------------------------------------------------------------------------ local
def _read(path: Path) -> dict | None:
    try:
        return _parse(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError:
        return {}


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(_holder_bytes())
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


def _acquire_local(path: Path) -> None:
    for _ in range(3):
        try:
            if _try_create(path):
                return
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
                raise StoreError(
                    f"cannot create the export lock {path} ({exc.strerror}); use a writable store location"
                ) from None
            raise
        holder = _read(path)
        if holder is None:
            continue  # released between our create and our read
        if _is_stale(holder):
            _take_over_stale(path, holder)
            continue
        raise _refusal(str(path), holder)
    raise _refusal(str(path), _read(path) or {})


# ----------------------------------------------------------------------------------------------- remote
class _RemoteLock:
    """The lock object of a store on an fsspec file system (see the module docstring)."""

    def __init__(self, url: StoreLike) -> None:
        self.fs, root = remote_fs(url)
        self.path = f"{root.rstrip('/')}/{LOCK_NAME}"
        self.where = f"{str(url).rstrip('/')}/{LOCK_NAME}"
        self.conditional = "s3" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def read(self) -> tuple[dict | None, Any]:
        """(holder, ETag) of the lock object, (None, None) when there is none."""
        self.fs.invalidate_cache(self.path)
        try:
            info = self.fs.info(self.path)
            return _parse(self.fs.cat_file(self.path)), info.get("ETag")
        except FileNotFoundError:
            return None, None

    def create(self) -> bool:
        try:
            self.fs.pipe_file(self.path, _holder_bytes(), mode="create")
        except FileExistsError:
            return False
        return True

    def replace_stale(self, etag: Any) -> None:
        """Replace the stale lock we read; a racer that replaced it first makes our conditional PUT fail."""
        if self.conditional and etag:
            with contextlib.suppress(OSError):  # 412 Precondition Failed: another process took it over
                self.fs.pipe_file(self.path, _holder_bytes(), IfMatch=etag)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path)
        self.create()

    def acquire(self) -> None:
        for _ in range(3):
            if self.create():
                return
            holder, etag = self.read()
            if holder is None:
                continue  # released between our create and our read
            if _is_stale(holder):
                self.replace_stale(etag)
                if _is_ours(self.read()[0]):
                    return
                continue
            raise _refusal(self.where, holder)
        raise _refusal(self.where, self.read()[0] or {})

    def release(self) -> None:
        if _is_ours(self.read()[0]):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)


@contextlib.contextmanager
def export_lock(url: StoreLike) -> Iterator[None]:
    """Hold the export lock of the store at `url` for the duration of the block (see the module docstring)."""
    root = local_root(url)
    if root is not None:
        path = root / LOCK_NAME
        _acquire_local(path)
        try:
            yield
        finally:
            if _is_ours(_read(path)):
                path.unlink(missing_ok=True)
        return
    with remote_errors(url, what="taking the export lock"):
        lock = _RemoteLock(url)
        lock.acquire()
    try:
        yield
    except BaseException:
        # The error under way is the one to report, even when the storage server is gone and the lock cannot be
        # released now: a lock left behind by this process is stale once it has exited, and the re-run takes it over.
        with contextlib.suppress(Exception):
            lock.release()
        raise
    with remote_errors(url, what="releasing the export lock"):
        lock.release()
