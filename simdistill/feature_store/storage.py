"""Store URLs → zarr stores, plus the few file-system operations zarr does not do (fsync, sizes).

A store URL is a local path, a `file://` URL, or any fsspec URL (`s3://bucket/path` with `s3fs`, the `s3`
extra; `gs://` with `gcsfs`, ...). Local paths use zarr's `LocalStore` (atomic writes by rename, and the
writer can fsync what it wrote); everything else uses `FsspecStore`. Object stores have no fsync: each PUT
is atomic and durable on success, which is what `done` relies on there.

Options for remote URLs (endpoint, region, ...) travel with the URL: a `StoreURL` is the URL plus the config's
`storage_options` ({protocol: fsspec kwargs}), passed wherever a URL goes, into Dask workers too. Nothing here
writes fsspec's process-global config; what the backend reads by itself still applies beneath the options (its
environment variables: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for s3fs; FSSPEC_<PROTOCOL>_<KWARG> variables;
~/.config/fsspec files). A remote store is probed with one plain request before zarr opens it, so a wrong
endpoint, missing credentials or a missing bucket is one StoreError naming the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import fsspec
import zarr
from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from simdistill.errors import StoreError

T = TypeVar("T")


@dataclass(frozen=True)
class StoreURL:
    """A store URL and the fsspec options to open it with: one picklable value, so the options go wherever the URL
    goes (a Dask worker on another host included) and no process-global state is needed."""

    url: str
    storage_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)  # {protocol: kwargs}

    def __str__(self) -> str:
        return self.url

    @property
    def protocol(self) -> str:
        return urlparse(self.url).scheme

    def fs_options(self) -> dict[str, Any]:
        """The fsspec keyword arguments for this URL's file system (its protocol's options, never a listings cache)."""
        return {**copy.deepcopy(dict(self.storage_options.get(self.protocol, {}))), **NO_LISTINGS_CACHE}

    def cache_key(self) -> str:
        """A string that differs whenever the URL or its options do (for per-process caches of open stores)."""
        return json.dumps([self.url, self.storage_options], sort_keys=True, default=str)


StoreLike = str | Path | StoreURL
"""What every function taking a store accepts: a plain path or URL (no options) or a StoreURL."""


def store_url(url: StoreLike, storage_options: Mapping[str, Mapping[str, Any]] | None = None) -> StoreURL:
    """`url` as a StoreURL; `storage_options` (config `storage_options`) replace a StoreURL's own when given."""
    if isinstance(url, StoreURL):
        return url if storage_options is None else StoreURL(url.url, copy.deepcopy(dict(storage_options)))
    return StoreURL(str(url), copy.deepcopy(dict(storage_options or {})))


def local_root(url: StoreLike) -> Path | None:
    """The directory of a local store URL (plain path or file://), None for remote URLs."""
    text = str(url)
    parsed = urlparse(text)
    if parsed.scheme == "file":  # file:///abs/path, or file://rel/path relative to the working directory
        return Path(parsed.netloc + parsed.path)
    if parsed.scheme == "":
        return Path(text)
    return None


# A store changes while it is read (training follows an export; resume re-reads `done`): never answer from a
# cached directory listing, or new chunks and a released lock stay invisible to a long-running process.
NO_LISTINGS_CACHE = {"use_listings_cache": False}
CREDENTIALS_HINT = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://"
ENDPOINT_HINT = "AWS_ENDPOINT_URL (or storage_options.s3.endpoint_url) for s3://"


def _backend_error(url: StoreLike, exc: Exception) -> StoreError:
    scheme = urlparse(str(url)).scheme
    return StoreError(
        f"cannot open store URL '{url}' ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
        f"install the fsspec backend for '{scheme}://' (pip install 'simdistill[s3]' for s3://, gcsfs for gs://) "
        "or use a local path"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:160]}" if text else exc.__class__.__name__


LOST_SERVER_ERRORS = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
    "ResponseStreamingError", "ConnectionError",  # botocore's, and the builtin (refused, reset, aborted)
})
"""Exception class names (botocore, aiohttp, builtin) that mean the storage server cannot be reached: they are not
all OSErrors, and zarr, s3fs and aiobotocore re-raise them from different layers, so they are recognised by name
anywhere in the exception's chain."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for e in _chain(exc) for cls in type(e).__mro__}


def storage_server(url: StoreLike, exc: BaseException | None = None) -> str:
    """Where the storage server of a remote store is: its endpoint from the options, the environment or the error."""
    loc = store_url(url)
    options = loc.fs_options()
    endpoint = options.get("endpoint_url") or options.get("client_kwargs", {}).get("endpoint_url")
    if not endpoint and loc.protocol == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint and exc is not None:
        found = re.search(r"https?://[^/\s\"']+", " ".join(str(e) for e in _chain(exc)))
        endpoint = found.group(0) if found else None
    return str(endpoint or f"the {loc.protocol}:// service")


@contextlib.contextmanager
def remote_errors(url: StoreLike, *, what: str | None = None) -> Iterator[None]:
    """Credentials, endpoint and permission failures of a remote store as one-line StoreErrors.

    `what` names the work under way: a server lost in the middle of it is reported with how to resume.
    """
    try:
        yield
    except StoreError:
        raise
    except PermissionError as exc:
        raise StoreError(f"access to {url} was denied ({_reason(exc)}); check the credentials "
                         f"({CREDENTIALS_HINT}) and the bucket's permissions") from None
    except Exception as exc:  # botocore / aiohttp errors are not OSErrors: recognise them by name
        names = _names(exc)
        if names & {"NoCredentialsError", "PartialCredentialsError"}:
            raise StoreError(f"no credentials to open {url} ({_reason(exc)}); set {CREDENTIALS_HINT}") from None
        if names & LOST_SERVER_ERRORS:
            settle_pending_io()
            raise lost_server_error(url, exc, what=what) from None
        raise


@contextlib.contextmanager
def server_errors(url: StoreLike, *, what: str) -> Iterator[None]:
    """A storage server lost in the middle of `what` as one StoreError; every other error passes through unchanged
    (so a local store's errors keep their own messages)."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - recognised by name, re-raised otherwise
        if _names(exc) & LOST_SERVER_ERRORS:
            settle_pending_io()
            raise lost_server_error(url, exc, what=what) from None
        raise


SETTLE_S = 10.0  # how long a failed operation waits for the I/O it left in flight


def settle_pending_io() -> None:
    """Let the I/O that a failed zarr operation left in flight finish (bounded by SETTLE_S), and mark its errors seen.

    asyncio.gather does not cancel the rest when one request fails: without this, those requests are destroyed
    pending at exit and print tracebacks ("Task was destroyed but it is pending!", "coroutine ... never awaited")
    after the one-line error.
    """

    async def settle() -> None:
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            done, _ = await asyncio.wait(others, timeout=SETTLE_S)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: no "exception was never retrieved" log later

    with contextlib.suppress(Exception):
        sync(settle())


def lost_server_error(url: StoreLike, exc: BaseException, *, what: str | None = None) -> StoreError:
    """The one-line error for an unreachable storage server, before any work or in the middle of `what`: it names
    the server and says how to resume."""
    server = storage_server(url, exc)
    cause = next((e for e in _chain(exc) if {c.__name__ for c in type(e).__mro__} & LOST_SERVER_ERRORS), exc)
    during = f" while {what}" if what else ""
    return StoreError(f"cannot reach the storage server of {url} at {server}{during} ({_reason(cause)}); start it "
                      f"or set {ENDPOINT_HINT}, then re-run the same command: it resumes, finished work is kept")


def remote_fs(url: StoreLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """The synchronous fsspec file system of a remote store URL, and the store's path in it."""
    loc = store_url(url)
    try:
        return fsspec.core.url_to_fs(loc.url, **loc.fs_options())
    except (ImportError, ValueError) as exc:
        raise _backend_error(url, exc) from None


def probe_remote(url: StoreLike, *, for_write: bool = False) -> bool:
    """Whether a remote store exists (its zarr.json), checked with one plain request before zarr opens it.

    Unreachable endpoints, missing credentials and (for_write) a missing bucket are StoreErrors here, not
    zarr's concurrent failures. Local URLs are not probed (True).
    """
    if local_root(url) is not None:
        return True
    fs, path = remote_fs(url)
    with remote_errors(url):
        fs.invalidate_cache()
        try:
            fs.info(f"{path.rstrip('/')}/zarr.json")
            return True
        except FileNotFoundError:
            pass
        bucket = path.split("/", 1)[0]
        if for_write and "/" in path.strip("/") and not fs.exists(bucket):
            raise StoreError(f"bucket '{bucket}' of {url} does not exist; create it (e.g. `aws s3 mb s3://{bucket}`) "
                             "or fix the URL")
    return False


def make_store(url: StoreLike, *, read_only: bool) -> Store:
    """A zarr Store for `url` (see the module docstring)."""
    root = local_root(url)
    if root is not None:
        return LocalStore(root, read_only=read_only)
    loc = store_url(url)
    try:
        return FsspecStore.from_url(loc.url, read_only=read_only, storage_options=loc.fs_options())
    except (ImportError, ValueError) as exc:
        raise _backend_error(url, exc) from None


def open_group(url: StoreLike, *, mode: str) -> zarr.Group:
    """Open the store's root group; a missing store, or one whose metadata is torn, is a StoreError."""
    missing = StoreError(f"no feature store at '{url}'; run `simdistill export-teacher` to create it or check the path")
    if not probe_remote(url):
        raise missing
    store = make_store(url, read_only=mode == "r")
    try:
        with remote_errors(url):
            return zarr.open_group(store, mode=mode)
    except FileNotFoundError:
        raise missing from None
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError, or a zarr.json zarr cannot parse
        raise StoreError(torn_metadata_message(url, "zarr.json", exc)) from None


def torn_metadata_message(url: StoreLike, what: str, exc: BaseException) -> str:
    return (
        f"store {url} has unreadable metadata {what} ({_reason(exc)}); the store is damaged (an interrupted "
        "copy, or edited by hand): re-export it with `simdistill export-teacher ... --overwrite`"
    )


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
