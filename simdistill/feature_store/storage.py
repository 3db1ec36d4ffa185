"""Store URLs → zarr stores, plus the few file-system operations zarr does not do (fsync, sizes).

A store URL is a local path, a `file://` URL, or any fsspec URL (`s3://bucket/path` works once
`s3fs` is installed; `gs://` with `gcsfs`, ...). Local paths use zarr's `LocalStore` (atomic
writes by rename, and the writer can fsync what it wrote); everything else uses `FsspecStore`.
Export locking and fsync are local-only: object stores have neither (each PUT is atomic and
durable on success, which is what `done` relies on there).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import zarr
from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from simdistill.errors import StoreError

T = TypeVar("T")


def local_root(url: str | Path) -> Path | None:
    """The directory of a local store URL (plain path or file://), None for remote URLs."""
    text = str(url)
    parsed = urlparse(text)
    if parsed.scheme == "file":  # file:///abs/path, or file://rel/path relative to the working directory
        return Path(parsed.netloc + parsed.path)
    if parsed.scheme == "":
        return Path(text)
    return None


def make_store(url: str | Path, *, read_only: bool) -> Store:
    """A zarr Store for `url` (see the module docstring)."""
    root = local_root(url)
    if root is not None:
        return LocalStore(root, read_only=read_only)
    try:
        return FsspecStore.from_url(str(url), read_only=read_only)
    except (ImportError, ValueError) as exc:
        scheme = urlparse(str(url)).scheme
        raise StoreError(
            f"cannot open store URL '{url}' ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
            f"install the fsspec backend for '{scheme}://' (s3fs for s3://, gcsfs for gs://) or use a local path"
        ) from None


def open_group(url: str | Path, *, mode: str) -> zarr.Group:
    """Open the store's root group; a missing store is a StoreError naming the URL."""
    store = make_store(url, read_only=mode == "r")
    try:
        return zarr.open_group(store, mode=mode)
    except FileNotFoundError:
        raise StoreError(
            f"no feature store at '{url}'; run `simdistill export-teacher` to create it or check the path"
        ) from None


def gather(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run zarr async operations concurrently on zarr's own event loop (arrays overlap their I/O)."""
    pending = list(coros)  # build them here: zarr's sync helpers cannot run inside the loop

    async def run() -> list[T]:
        return list(await asyncio.gather(*pending))

    return sync(run())


def fsync_files(root: Path, keys: Iterable[str]) -> int:
    """fsync the files behind store keys, then their directories (so the renames are durable too).

    Returns the files' total size in bytes.

    zarr's LocalStore writes each chunk to a temporary file and renames it into place but never
    fsyncs; `done[v]` may only be set once a view's chunks survive a power cut.
    """
    dirs: set[Path] = set()
    total = 0
    for key in keys:
        path = root / key
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # a chunk equal to the fill value is not written at all
        try:
            os.fsync(fd)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
        dirs.add(path.parent)
    for d in dirs:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return total


def chunk_key(array: zarr.Array, coords: tuple[int, ...]) -> str:
    """Store key (relative to the store root) of the chunk — or shard — at grid `coords`."""
    return f"{array.path}/{array.metadata.encode_chunk_key(coords)}"


def chunk_bytes(array: zarr.Array) -> int:
    """Bytes of the array's chunk (or shard) files, without its metadata document."""
    return int(sync(array.store_path.store.getsize_prefix(f"{array.path}/c")))


def store_bytes(group: zarr.Group) -> int:
    """Bytes of everything in the store (chunks and metadata)."""
    return int(sync(group.store_path.store.getsize_prefix(group.path)))
