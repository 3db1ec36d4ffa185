"""Read-ahead of cached targets for training (DESIGN.md §8): one task per batch, `prefetch` in flight.

    batches = [[4, 9, 2, 7], [1, 0, 5, 3], ...]         # view indices per step, in the sampler's order
    with TargetPrefetcher(url, arrays=["cam_bev", "fused_bev"], batches=batches, prefetch=2) as targets:
        for views, t in zip(batches, targets):           # t["cam_bev"]: [B, C_cam, H, W] float32
            ...

Two ways to run the tasks:
- `scheduler=None`: each batch is one `dask.delayed` task, computed by Dask's synchronous scheduler
  on a local pool of `threads` read-ahead threads (`student_train.loader_threads`, default 2) in this process
  that share one open reader (zarr's reads release the GIL while decompressing; each batch's chunks decode in
  parallel on zarr's own thread pool, so more threads keep more chunks decoding at once: keep `prefetch` >=
  `threads`, or some threads wait). Why a `dask.delayed` task on the synchronous scheduler and not the threaded
  scheduler or a local `distributed.Client`: the measurements are in benchmarks/results/design_choices.md.
- `scheduler="tcp://host:port"`: `simdistill.cluster.connect(address)`; each task opens the store inside
  the worker (one cached reader per worker process, with this process's storage options) and ships the
  arrays back; a user error there (a corrupted chunk) comes back as the same one-line StoreError. Workers must be
  started with spawn/forkserver (distributed's default): zarr's event loop does not survive fork,
  so an open store is never shared across one. Shipping arrays between processes costs (design_choices.md):
  use it where workers sit next to the data, not on the training host.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import numpy as np

from simdistill.cluster import connect, quiet_task, task_result
from simdistill.errors import StoreError
from simdistill.feature_store.reader import FeatureStoreReader, open_store
from simdistill.feature_store.storage import StoreLike, StoreURL, store_url

LOCAL_THREADS = 2  # default read-ahead threads (student_train.loader_threads)

_WORKER_READERS: dict[str, FeatureStoreReader] = {}
_WORKER_LOCK = threading.Lock()


def read_batch(reader: FeatureStoreReader, views: Sequence[int], arrays: Sequence[str], *,
               float32: bool = True) -> dict[str, np.ndarray]:
    """Synchronous batch read (the "direct Zarr reads" the prefetcher is compared with); `float32=False` keeps
    float16 features as stored."""
    return reader.read_views(views, arrays, float32=float32)


def _worker_reader(location: StoreURL) -> FeatureStoreReader:
    """One reader per worker process and store (URL and options), opened inside it (never inherited across fork)."""
    with _WORKER_LOCK:
        key = location.cache_key()
        if key not in _WORKER_READERS:
            _WORKER_READERS[key] = open_store(location)
        return _WORKER_READERS[key]


def _remote_read(location: StoreURL, views: list[int], arrays: list[str],
                 float32: bool = True) -> dict[str, np.ndarray]:
    """The task a cluster worker runs for one batch (the store's options travel with its URL)."""
    return read_batch(_worker_reader(location), views, arrays, float32=float32)


class TargetPrefetcher:
    """Iterates {array: [B, ...] float32} for each batch of view indices, in batch order (`float32=False`: the
    float16 features as stored, for a consumer that converts them itself, e.g. on its GPU: half the host work)."""

    def __init__(
        self,
        url: StoreLike,
        *,
        arrays: Sequence[str],
        batches: Iterable[Sequence[int]],
        prefetch: int = 2,
        scheduler: str | None = None,
        threads: int = LOCAL_THREADS,
        float32: bool = True,
    ) -> None:
        if prefetch < 1:
            raise StoreError(f"prefetch must be >= 1 batch, got {prefetch}; set student_train.prefetch_batches")
        if threads < 1:
            raise StoreError(f"threads must be >= 1, got {threads}; set student_train.loader_threads")
        self.location = store_url(url)
        self.url = str(url)
        self.arrays = list(arrays)
        self.prefetch = prefetch
        self.float32 = float32
        self._batches = iter(batches)
        self._reader = open_store(self.location, arrays=self.arrays)  # fail early: missing store or arrays
        self._pending: collections.deque[Any] = collections.deque()
        self._client = None
        self._pool: ThreadPoolExecutor | None = None
        if scheduler is None:
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="simdistill-prefetch")
        else:
            self._client = connect(scheduler)  # ClusterError, as in export-teacher, when unreachable

    def _submit(self, views: Sequence[int]) -> Any:
        vs = [int(v) for v in views]
        if self._client is not None:
            return self._client.submit(quiet_task, _remote_read, self.location, vs, self.arrays,
                                       self.float32, pure=False)
        if self._pool is None:
            raise StoreError("this TargetPrefetcher is closed; create a new one for another pass")
        task = dask.delayed(read_batch, pure=False)(self._reader, vs, self.arrays, float32=self.float32)
        return self._pool.submit(task.compute, scheduler="sync")

    def _fill(self) -> None:
        while len(self._pending) < self.prefetch:
            views = next(self._batches, None)
            if views is None:
                return
            self._pending.append(self._submit(views))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self._fill()
        while self._pending:
            future = self._pending.popleft()
            self._fill()  # keep `prefetch` batches in flight while the caller uses this one
            if self._client is None:
                yield future.result()
                continue
            yield task_result(future, what=f"reading targets from {self.url}")

    def close(self) -> None:
        """Cancel what is still in flight and shut the pool / client down."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> TargetPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
