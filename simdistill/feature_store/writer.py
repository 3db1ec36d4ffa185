"""Fill a feature store (DESIGN.md §5): `FeatureStoreWriter` writes whole views and then marks them done.

    writer = create_or_resume_store(url, layout=..., store_format=..., n_views=V, aug_dim=P, attrs=...)  # create.py
    with writer.lock():
        done = writer.done_views()
        for r in writer.task_ranges(views_per_task):               # one export task per range
            ...                                                    # writer.write_views(start, views) per shard

Durability: a view's chunks are written (each by zarr's atomic temp-file rename), fsynced with their
directories on local stores, and only then is its `done` flag written. `done` has one chunk per view,
so concurrent export tasks that own disjoint view ranges (whole shards when sharded) never share a
file. A crash or a full disk leaves every view whose `done` is set valid; resume rewrites the rest.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Sequence

import numpy as np
import zarr

from simdistill.config import StoreFormatConfig
from simdistill.errors import StoreError
from simdistill.feature_store.codecs import lossy_arrays, quiet_numcodecs_warning
from simdistill.feature_store.lock import export_lock
from simdistill.feature_store.schema import SCHEMA, VIEW_ARRAYS, StoreLayout
from simdistill.feature_store.storage import (
    StoreLike,
    chunk_key,
    fsync_files,
    gather,
    local_root,
    server_errors,
    store_url,
)
from simdistill.feature_store.transforms import TeacherView, prepare_view


@contextlib.contextmanager
def store_errors(url: StoreLike, what: str) -> Iterator[None]:
    """Turn OS errors while writing, and a storage server lost meanwhile, into one-line StoreErrors naming the fix."""
    try:
        with server_errors(url, what=what):
            yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(
                f"disk full while {what} in {url}; free space (or choose another output) and re-run the export "
                "to resume: views already marked done stay valid"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
            raise StoreError(
                f"cannot write the feature store at {url} ({exc.strerror}); choose a writable output path"
            ) from None
        raise


class FeatureStoreWriter:
    """Writes teacher views into an existing store; see the module docstring."""

    def __init__(self, url: StoreLike, group: zarr.Group, store_format: StoreFormatConfig) -> None:
        self.location = store_url(url)  # the URL with its storage options
        self.url = str(url)
        self.group = group
        self.store_format = store_format
        self.n_views = int(group["done"].shape[0])
        self.layout = StoreLayout.from_attrs(group.attrs.asdict())
        self.sizes = self.layout.dim_sizes(n_views=self.n_views, aug_dim=int(group["aug"].shape[1]))
        self._root = local_root(self.location)
        with quiet_numcodecs_warning():
            self._arrays = {name: group[name] for name in SCHEMA}
        self._lossy = {name: store_format.lossy_keepbits for name in lossy_arrays(store_format)}
        self.views_per_shard = store_format.views_per_shard if store_format.sharding else 1

    # -------------------------------------------------------------------------------------------
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive export lock (a file on local stores, a conditionally created object on s3://; see lock.py)."""
        return export_lock(self.location)

    def done_views(self) -> np.ndarray:
        """[V] bool: which views are durable."""
        with server_errors(self.location, what="reading which views are done"):
            return np.asarray(self._arrays["done"][:], dtype=bool)

    def reset_done(self, views: Sequence[int]) -> None:
        """Mark views as not done (e.g. the corrupted ones `verify_store` found) so resume rewrites them."""
        with store_errors(self.location, "resetting done flags"):
            for v in views:
                self._arrays["done"][int(v)] = False

    def task_ranges(self, views_per_task: int) -> list[range]:
        """Consecutive view ranges, one per export task, aligned to whole shards (no shared files)."""
        if views_per_task < 1:
            raise StoreError(f"views_per_task must be >= 1, got {views_per_task}; set export.views_per_task")
        step = -(-views_per_task // self.views_per_shard) * self.views_per_shard  # round up to whole shards
        return [range(s, min(s + step, self.n_views)) for s in range(0, self.n_views, step)]

    # -------------------------------------------------------------------------------------------
    def write_view(self, v: int, view: TeacherView) -> int:
        """Write one view, then mark it done; returns the bytes its chunks take in the store.

        Sharded stores with several views per shard take whole shards only: use `write_views`.
        """
        return self.write_views(v, [view])

    def write_views(self, start: int, views: Sequence[TeacherView]) -> int:
        """Write views start .. start+len(views)-1 (whole shards when sharded), then mark them done.

        Returns the bytes of the chunk (or shard) files written, `done` flags aside.
        """
        stop = start + len(views)
        if not views or start < 0 or stop > self.n_views:
            raise StoreError(f"views {start}..{stop - 1} are outside the store's 0..{self.n_views - 1}")
        vps = self.views_per_shard
        if start % vps or (stop % vps and stop != self.n_views):
            raise StoreError(
                f"views {start}..{stop - 1} do not cover whole shards of {vps} views; "
                "write shard by shard with write_views(start, views) over writer.task_ranges(...)"
            )
        prepared = [
            prepare_view(tv, start + i, sizes=self.sizes, compact=self.store_format.compact_boxes, lossy=self._lossy)
            for i, tv in enumerate(views)
        ]
        sel = slice(start, stop)
        with store_errors(self.location, f"writing views {start}..{stop - 1}"):
            gather(
                self._arrays[name].async_array.setitem(sel, np.stack([p[name] for p in prepared]))
                for name in VIEW_ARRAYS
            )
            keys = self._keys(VIEW_ARRAYS, start, stop)
            if self._root is not None:
                nbytes = fsync_files(self._root, keys)
            else:
                nbytes = sum(gather(self.group.store_path.store.getsize(k) for k in keys))
            self._arrays["done"][sel] = True
            if self._root is not None:
                fsync_files(self._root, self._keys(("done",), start, stop))
        return int(nbytes)

    def _keys(self, names: Sequence[str], start: int, stop: int) -> list[str]:
        keys = []
        for name in names:
            arr = self._arrays[name]
            grid = arr.shards[0] if arr.shards else arr.chunks[0]
            zeros = (0,) * (arr.ndim - 1)
            keys += [chunk_key(arr, (c, *zeros)) for c in range(start // grid, -(-stop // grid))]
        return keys
