"""Read cached teacher targets (DESIGN.md §5): compatibility checks, done checks, float32 out.

    reader = open_store("out/teacher.zarr", expect=StoreLayout.for_model(cfg.model), arrays=arrays_for_losses(losses))
    targets = reader.read_views([4, 9, 2], arrays=["cam_bev"])   # {"cam_bev": [3, C_cam, H, W] float32}

Reads of several arrays run concurrently on zarr's event loop (each array's chunks in parallel too).
A chunk that fails its crc32c or cannot be decoded becomes a StoreError naming the view and the array.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from simdistill.errors import StoreError
from simdistill.feature_store.codecs import quiet_numcodecs_warning
from simdistill.feature_store.lock import LOCK_NAME
from simdistill.feature_store.schema import SCHEMA, SCHEMA_VERSION, StoreLayout
from simdistill.feature_store.storage import (
    StoreLike,
    gather,
    open_group,
    server_errors,
    store_url,
    torn_metadata_message,
)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__


class FeatureStoreReader:
    """Read access to one store. Not fork-safe: open one per process (see prefetch.py)."""

    def __init__(self, url: StoreLike, group: zarr.Group) -> None:
        self.location = store_url(url)  # the URL with its storage options (what a worker needs to open it too)
        self.url = str(url)
        self.group = group
        self.attrs: dict[str, Any] = group.attrs.asdict()
        try:
            with server_errors(self.location, what="opening the store"), quiet_numcodecs_warning(), \
                    warnings.catch_warnings():  # listing parses metadata (BitRound: lossy)
                warnings.filterwarnings("ignore", message=f"Object at {LOCK_NAME} is not recognized")  # exporting
                present = set(group.array_keys())
        except (ValueError, TypeError, KeyError) as exc:  # a member's zarr.json is torn
            raise StoreError(torn_metadata_message(url, "(an array's zarr.json)", exc)) from None
        self.available: list[str] = [n for n in SCHEMA if n in present]
        if "done" not in self.available:
            raise StoreError(f"'{url}' is not a simdistill feature store (no 'done' array); check the path")
        self._arrays: dict[str, zarr.Array] = {}
        self.n_views = int(self.array("done").shape[0])
        self.done_views()

    def array(self, name: str) -> zarr.Array:
        """The zarr array `name` (opened on first use)."""
        if name not in self._arrays:
            try:
                with server_errors(self.location, what="opening the store"), quiet_numcodecs_warning():
                    self._arrays[name] = self.group[name]
            except (ValueError, TypeError, KeyError) as exc:
                raise StoreError(torn_metadata_message(self.url, f"{name}/zarr.json", exc)) from None
        return self._arrays[name]

    # -------------------------------------------------------------------------------------------
    def require(self, arrays: Sequence[str]) -> None:
        """StoreError listing the requested arrays this store lacks."""
        missing = [a for a in arrays if a not in self.available]
        if missing:
            raise StoreError(
                f"store {self.url} lacks array(s) {', '.join(missing)} (it has {', '.join(self.available)}); "
                "re-export the teacher with a schema that includes them or drop the losses that need them"
            )

    def done_views(self) -> np.ndarray:
        """[V] bool, re-read from the store (an export may still be filling it)."""
        with server_errors(self.location, what="reading which views are done"):
            self._done = np.asarray(self.array("done")[:], dtype=bool)
        return self._done.copy()

    def read_view(self, v: int, arrays: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """One view: name → array without the V axis (float16 features come back as float32)."""
        return {name: x[0] for name, x in self.read_views([v], arrays).items()}

    def read_views(self, vs: Sequence[int], arrays: Sequence[str] | None = None, *,
                   float32: bool = True) -> dict[str, np.ndarray]:
        """Several views: name → [len(vs), ...] in the order of `vs` (float16 features as float32, or as stored
        with `float32=False`: half the bytes, converted where they are used, e.g. on a GPU)."""
        names = list(arrays) if arrays is not None else [n for n in self.available if n != "done"]
        self.require(names)
        idx = np.asarray(vs, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_views):
            bad = int(idx.min() if idx.min() < 0 else idx.max())
            raise StoreError(f"view {bad} is outside store {self.url}, which has views 0..{self.n_views - 1}")
        self._check_done(idx)
        try:
            with server_errors(self.location, what="reading teacher targets"):
                raw = gather(self.array(n).async_array.get_orthogonal_selection((idx,)) for n in names)
        except StoreError:
            raise
        except Exception:  # noqa: BLE001 - find which chunk is bad, then report it precisely
            self._raise_corrupted(idx, names)
            raise
        return {n: (x.astype(np.float32) if float32 and x.dtype == np.float16 else np.asarray(x))
                for n, x in zip(names, raw)}

    # -------------------------------------------------------------------------------------------
    def _check_done(self, idx: np.ndarray) -> None:
        if self._done[idx].all():
            return
        self.done_views()  # the export may have finished more views since we opened
        if self._done[idx].all():
            return
        first = int(idx[~self._done[idx]][0])
        missing = int((~self._done).sum())
        raise StoreError(
            f"view {first} of store {self.url} is not exported yet ({missing} of {self.n_views} views are missing); "
            "finish the export by re-running the same `simdistill export-teacher` command (it resumes)"
        )

    def _raise_corrupted(self, idx: np.ndarray, names: Sequence[str]) -> None:
        for name in names:
            for v in idx:
                try:
                    self.array(name)[int(v)]
                except Exception as exc:  # noqa: BLE001 - any decode failure means a bad chunk
                    raise StoreError(corrupted_message(self.url, int(v), name, one_line(exc))) from None


def corrupted_message(url: str, v: int, name: str, reason: str) -> str:
    return (
        f"store {url}: view {v} array '{name}' is corrupted ({reason}); run `simdistill store verify --reset-bad "
        f"{url}`, then re-run the same `simdistill export-teacher` command to rewrite the bad views"
    )


# -----------------------------------------------------------------------------------------------
def _expected(layout: StoreLayout) -> dict[str, Any]:
    recorded = layout.to_attrs()
    return {
        "schema_version": SCHEMA_VERSION,
        "BEV xbound": recorded["bev"]["xbound"],
        "BEV ybound": recorded["bev"]["ybound"],
        "channels": recorded["channels"],
        "class_names": recorded["class_names"],
        "tasks": recorded["tasks"],
    }


def _stored(attrs: dict[str, Any]) -> dict[str, Any]:
    bev = attrs.get("bev", {})
    return {
        "schema_version": attrs.get("schema_version"),
        "BEV xbound": bev.get("xbound"),
        "BEV ybound": bev.get("ybound"),
        "channels": attrs.get("channels"),
        "class_names": attrs.get("class_names"),
        "tasks": attrs.get("tasks"),
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def check_compatible(url: str, attrs: dict[str, Any], layout: StoreLayout) -> None:
    """StoreError naming both values when the store's schema, grid, channels, classes or tasks differ."""
    stored = _stored(attrs)
    for what, want in _expected(layout).items():
        if not _same(stored[what], want):
            raise StoreError(
                f"store {url} has {what} {stored[what]}, the config expects {want}; "
                "re-export the teacher with this config or train with the config the store was made with"
            )


def check_schema_version(url: str, attrs: dict[str, Any]) -> None:
    """StoreError unless the store has this simdistill's SCHEMA_VERSION: an older one is re-exported, a newer one
    needs a newer simdistill (no version reads another's stores; the message says which way to go)."""
    stored = attrs.get("schema_version")
    if stored == SCHEMA_VERSION:
        return
    if not isinstance(stored, int):
        raise StoreError(f"store {url} has no usable schema_version ({stored!r}), this simdistill expects "
                         f"{SCHEMA_VERSION}; it is not a complete simdistill feature store: re-export it")
    fix = ("re-export it with this simdistill (`simdistill export-teacher ... --overwrite`)" if stored < SCHEMA_VERSION
           else "upgrade simdistill to read it")
    raise StoreError(f"store {url} has schema_version {stored}, this simdistill expects {SCHEMA_VERSION}; {fix}")


def open_store(
    url: StoreLike,
    *,
    expect: StoreLayout | None = None,
    arrays: list[str] | None = None,
    any_version: bool = False,
) -> FeatureStoreReader:
    """Open a store for reading; `expect` checks compatibility (a student's layout), `arrays` checks they exist.

    A store of another schema version is refused (`check_schema_version`); `any_version=True` opens it anyway, for
    the tools that only inspect and report (`store info`, `store verify`)."""
    reader = FeatureStoreReader(url, open_group(url, mode="r"))
    if not any_version:
        check_schema_version(reader.url, reader.attrs)
    if expect is not None:
        check_compatible(reader.url, reader.attrs, expect)
    if arrays is not None:
        reader.require(arrays)
    return reader
