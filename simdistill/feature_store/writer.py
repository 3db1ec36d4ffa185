"""Create, resume and fill a feature store (DESIGN.md §5).

    writer = create_store("out/teacher.zarr", cfg=cfg, n_views=V, aug_dim=P, attrs=attrs)
    # or, to finish an interrupted export: writer = open_for_resume(url, cfg=cfg, attrs=attrs)
    with writer.lock():
        todo = set(writer.pending_views())
        for r in writer.task_ranges(cfg.export.views_per_task):   # one export task per range
            for v in r:                                            # (sharded stores: write_views per shard)
                if v in todo:
                    writer.write_view(v, teacher_view(v))

Durability: a view's chunks are written (each by zarr's atomic temp-file rename), fsynced with their
directories on local stores, and only then is its `done` flag written. `done` has one chunk per view,
so concurrent export tasks that own disjoint view ranges (whole shards when sharded) never share a
file. A crash or a full disk leaves every view whose `done` is set valid; resume rewrites the rest.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zarr

import simdistill
from simdistill.config import CLASS_NAMES, Config, config_from_dict, config_to_dict, first_difference
from simdistill.errors import ConfigError, StoreError
from simdistill.feature_store.codecs import array_codecs, codecs_attr, lossy_arrays, quiet_numcodecs_warning
from simdistill.feature_store.lock import export_lock
from simdistill.feature_store.schema import SCHEMA, SCHEMA_VERSION, VIEW_ARRAYS, array_shape, chunk_shape, dim_sizes
from simdistill.feature_store.storage import chunk_key, fsync_files, gather, local_root, make_store, open_group
from simdistill.feature_store.transforms import TeacherView, prepare_view

# Config sections that determine what the store holds; the rest (workers, training) may change on resume.
CONTENT_SECTIONS = ("seed", "data", "augment", "model", "store")
CONTENT_EXPORT_KEYS = ("views_per_sample", "split", "teacher", "tap_family", "taps")

FILL_VALUES = {"float16": float("nan"), "float32": float("nan"), "int32": -1, "int16": -1, "bool": False}
"""NaN / -1 fill: a chunk missing from a done view reads as NaN or -1, which `verify_store` reports."""


@dataclass
class StoreAttrs:
    """Who made the store and from what: written to the group attributes, checked on resume.

    Plain JSON dicts, so an exporter can add provenance (e.g. the checkpoint path) without a schema change.
    """

    teacher: dict[str, Any]  # name, checkpoint_sha256 (sha256 of the checkpoint file), config (dict), ...
    dataset: dict[str, Any]  # dataroot, version (v1.0-mini), split (mini_train), sample_tokens (list)
    augmentation: dict[str, Any]  # the augmentation policy (AugmentConfig as a dict)
    views_per_sample: int
    aug_layout: list[str]  # names of the entries of the aug vector, in order

    def to_json(self) -> dict[str, Any]:
        """The group attributes these fields become (a deep, JSON-normalised copy: tuples become lists)."""
        try:
            return json.loads(json.dumps(asdict(self)))
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"store attributes must be plain JSON values ({exc}); pass dicts, lists, strings and numbers"
            ) from None

    def validate(self, *, n_views: int, aug_dim: int) -> None:
        required = {"teacher": ("name", "checkpoint_sha256"), "dataset": ("version", "split", "sample_tokens")}
        for section, keys in required.items():
            missing = [k for k in keys if k not in getattr(self, section)]
            if missing:
                raise StoreError(f"StoreAttrs.{section} lacks {', '.join(missing)}; the exporter must provide them")
        n_samples = len(self.dataset["sample_tokens"])
        if n_views != n_samples * self.views_per_sample:
            raise StoreError(
                f"n_views={n_views} but the dataset has {n_samples} samples × {self.views_per_sample} views per "
                "sample; pass n_views = samples × views_per_sample"
            )
        if aug_dim != len(self.aug_layout):
            raise StoreError(f"aug_dim={aug_dim} but aug_layout lists {len(self.aug_layout)} names; make them agree")


def content_config(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved config that determine the store's contents (compared on resume)."""
    d = json.loads(json.dumps(cfg if isinstance(cfg, dict) else config_to_dict(cfg)))  # a copy, tuples as lists
    out = {k: d.get(k) for k in CONTENT_SECTIONS}
    if isinstance(out["store"], dict):  # where the store lives may change; its contents may not
        out["store"].pop("storage_options", None)
    if isinstance(out["data"], dict):
        for key in ("dataroot", "infos_train", "infos_val"):  # the data may move; the sample tokens identify it
            out["data"].pop(key, None)
    out["export"] = {k: d.get("export", {}).get(k) for k in CONTENT_EXPORT_KEYS}
    return out


def _short(value: Any) -> str:
    """repr for error messages; long lists (sample tokens) as a count."""
    if isinstance(value, list) and len(value) > 4:
        return f"[{len(value)} items]"
    return repr(value)


def group_attrs(cfg: Config, attrs: StoreAttrs) -> dict[str, Any]:
    """Every group attribute (JSON) of a new store."""
    bev, ch = cfg.model.bev, cfg.model.channels
    return {
        "schema_version": SCHEMA_VERSION,
        **attrs.to_json(),  # teacher, dataset, augmentation, views_per_sample, aug_layout
        "bev": {"xbound": list(bev.xbound), "ybound": list(bev.ybound), "grid_size": list(bev.grid_size)},
        "channels": {"cam": ch.cam, "lidar": ch.lidar, "fused": ch.fused},
        "class_names": list(CLASS_NAMES),
        "tasks": [list(t) for t in cfg.model.head.tasks],
        "codecs": codecs_attr(cfg.store),
        "package_version": simdistill.__version__,
        "config": config_to_dict(cfg),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def _store_errors(url: str, what: str) -> Iterator[None]:
    """Turn OS errors while writing into one-line StoreErrors naming the fix."""
    try:
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

    def __init__(self, url: str, group: zarr.Group, cfg: Config) -> None:
        self.url = url
        self.group = group
        self.cfg = cfg
        self.n_views = int(group["done"].shape[0])
        self.sizes = dim_sizes(cfg, n_views=self.n_views, aug_dim=int(group["aug"].shape[1]))
        self._root = local_root(url)
        with quiet_numcodecs_warning():
            self._arrays = {name: group[name] for name in SCHEMA}
        self._lossy = {name: cfg.store.lossy_keepbits for name in lossy_arrays(cfg.store)}
        self.views_per_shard = cfg.store.views_per_shard if cfg.store.sharding else 1

    # -------------------------------------------------------------------------------------------
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive export lock (a file on local stores, a conditionally created object on s3://; see lock.py)."""
        return export_lock(self.url)

    def done_views(self) -> np.ndarray:
        """[V] bool: which views are durable."""
        return np.asarray(self._arrays["done"][:], dtype=bool)

    def pending_views(self) -> list[int]:
        """Views still to export (done is False)."""
        return [int(v) for v in np.flatnonzero(~self.done_views())]

    def reset_done(self, views: Sequence[int]) -> None:
        """Mark views as not done (e.g. the corrupted ones `verify_store` found) so resume rewrites them."""
        with _store_errors(self.url, "resetting done flags"):
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
            prepare_view(tv, start + i, sizes=self.sizes, compact=self.cfg.store.compact_boxes, lossy=self._lossy)
            for i, tv in enumerate(views)
        ]
        sel = slice(start, stop)
        with _store_errors(self.url, f"writing views {start}..{stop - 1}"):
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


# -----------------------------------------------------------------------------------------------
def create_store(
    url: str,
    *,
    cfg: Config,
    n_views: int,
    aug_dim: int,
    attrs: StoreAttrs,
    overwrite: bool = False,
) -> FeatureStoreWriter:
    """Create an empty store for `n_views` views (refuses an existing store unless `overwrite`)."""
    url = str(url)
    attrs.validate(n_views=n_views, aug_dim=aug_dim)
    if cfg.store.sharding and cfg.store.views_per_shard < 1:
        raise StoreError(f"store.views_per_shard must be >= 1, got {cfg.store.views_per_shard}")
    lossy_arrays(cfg.store)  # validates the lossy settings before anything is written
    root = local_root(url)
    if _exists(url):
        if not overwrite:
            raise StoreError(
                f"a feature store already exists at {url}; resume it (re-run the same export, or "
                "create_or_resume_store) or pass --overwrite to replace it"
            )
        if root is not None and not (root / "zarr.json").is_file():  # never delete what we did not write
            raise StoreError(f"{url} exists and is not a feature store; choose another output path")
    sizes = dim_sizes(cfg, n_views=n_views, aug_dim=aug_dim)
    with _store_errors(url, "creating the store"):
        if root is not None and root.exists() and overwrite:
            shutil.rmtree(root)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(make_store(url, read_only=False), mode="w", attributes=group_attrs(cfg, attrs))
        with quiet_numcodecs_warning():
            for name, spec in SCHEMA.items():
                chunks = chunk_shape(name, sizes)
                shards = None
                if cfg.store.sharding and name != "done":  # done stays one file per view
                    shards = (min(cfg.store.views_per_shard, max(n_views, 1)), *chunks[1:])
                codecs = array_codecs(name, cfg.store)
                group.create_array(
                    name,
                    shape=array_shape(name, sizes),
                    dtype=spec.dtype,
                    chunks=chunks,
                    shards=shards,
                    fill_value=FILL_VALUES[spec.dtype],
                    dimension_names=spec.dims,
                    attributes={"doc": spec.doc, "losses": list(spec.losses)},
                    **codecs,
                )
    return FeatureStoreWriter(url, group, cfg)


def open_for_resume(url: str, *, cfg: Config, attrs: StoreAttrs) -> FeatureStoreWriter:
    """Reopen a store to finish it; refuses one made from another teacher, config or dataset.

    Compared: the teacher checkpoint's sha256, the content sections of the resolved config
    (`content_config`), and the dataset (less its dataroot), augmentation policy, views per sample and
    aug layout. Provenance such as the checkpoint's path or the worker count may change.
    """
    url = str(url)
    group = open_group(url, mode="r+")
    stored = json.loads(json.dumps(group.attrs.asdict()))  # a deep copy we may edit
    if stored.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"store {url} has schema version {stored.get('schema_version')}, this simdistill writes "
            f"{SCHEMA_VERSION}; re-export it with --overwrite"
        )
    fix = "export with the same settings to resume, or pass --overwrite to re-export from scratch"
    for key in ("checkpoint_sha256", "mmdet3d_config_sha256"):  # the second only for mmdet3d teachers
        old_sha, new_sha = stored.get("teacher", {}).get(key), attrs.teacher.get(key)
        if old_sha != new_sha:
            what = "checkpoint" if key == "checkpoint_sha256" else "mmdet3d config"
            raise StoreError(
                f"store {url} holds teacher {what} sha256 {old_sha}, this run's teacher is {new_sha}; {fix}"
            )
    diff = first_difference(content_config(stored.get("config", {})), content_config(cfg))
    diff = diff or first_difference(_resume_attrs(stored), _resume_attrs(attrs.to_json()))
    if diff:
        key, old, new = diff
        raise StoreError(f"store {url} was exported with {key}={_short(old)}, this run has {key}={_short(new)}; {fix}")
    return FeatureStoreWriter(url, group, cfg)


def _resume_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {k: attrs.get(k) for k in ("dataset", "augmentation", "views_per_sample", "aug_layout")}
    out["dataset"] = {k: v for k, v in (out["dataset"] or {}).items() if k not in ("dataroot", "infos")}  # may move
    return out


def create_or_resume_store(
    url: str,
    *,
    cfg: Config,
    n_views: int,
    aug_dim: int,
    attrs: StoreAttrs,
    overwrite: bool = False,
) -> FeatureStoreWriter:
    """What `export-teacher` does: resume the store at `url` if there is one, else create it.

    `overwrite` replaces an existing store instead (the only way past a resume refusal).
    """
    if overwrite or not _exists(str(url)):
        return create_store(url, cfg=cfg, n_views=n_views, aug_dim=aug_dim, attrs=attrs, overwrite=overwrite)
    writer = open_for_resume(url, cfg=cfg, attrs=attrs)
    if (writer.n_views, writer.sizes["P"]) != (n_views, aug_dim):
        raise StoreError(
            f"store {url} has {writer.n_views} views × {writer.sizes['P']} aug params, this run plans "
            f"{n_views} × {aug_dim}; pass --overwrite to re-export from scratch"
        )
    return writer


def open_for_write(url: str) -> FeatureStoreWriter:
    """Reopen a store inside an export task, with the config it was created with (no checks: the
    coordinator made them with `create_or_resume_store` and holds the lock)."""
    url = str(url)
    group = open_group(url, mode="r+")
    try:
        cfg = config_from_dict(group.attrs["config"])
    except (KeyError, ConfigError) as exc:
        raise StoreError(
            f"store {url} has no usable 'config' attribute ({exc}); re-export it with --overwrite"
        ) from None
    return FeatureStoreWriter(url, group, cfg)


def _exists(url: str) -> bool:
    root = local_root(url)
    if root is not None:
        return root.exists() and (root.is_file() or any(root.iterdir()))
    try:
        open_group(url, mode="r")
    except StoreError:
        return False
    return True
