"""Create a feature store, or reopen one to finish it, refusing a store made from another teacher or config.

    writer = create_or_resume_store(url, layout=StoreLayout(...), store_format=StoreFormatConfig(...), n_views=V,
                                    aug_dim=P, attrs=StoreAttrs(...))

What must match to resume is `simdistill.config.run_content(attrs.config, only=STORE_CONTENT)` (the same rule
training resume uses) plus every sha256 the teacher records (checkpoint, mmdet3d config, python factory) and the
dataset, augmentation policy, views per sample and aug layout the store records. Where the data or the checkpoint
live, and how many workers export, may change.
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

import zarr

import simdistill
from simdistill.config import (
    STORE_CONTENT,
    StoreFormatConfig,
    config_from_dict,
    describe_difference,
    first_difference,
    run_content,
)
from simdistill.errors import ConfigError, StoreError
from simdistill.feature_store.codecs import (
    array_codecs,
    codecs_attr,
    lossy_arrays,
    quiet_numcodecs_warning,
)
from simdistill.feature_store.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    StoreLayout,
    array_shape,
    chunk_shape,
)
from simdistill.feature_store.storage import StoreLike, StoreURL, local_root, make_store, open_group, store_url
from simdistill.feature_store.writer import FeatureStoreWriter, store_errors

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
    config: dict[str, Any] = field(default_factory=dict)  # the exporter's whole config (JSON): provenance, and
    # what resume compares (its store content, config.STORE_CONTENT); the store reads only `store_format` from it

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


def group_attrs(layout: StoreLayout, store_format: StoreFormatConfig, attrs: StoreAttrs) -> dict[str, Any]:
    """Every group attribute (JSON) of a new store."""
    given = attrs.to_json()  # teacher, dataset, augmentation, views_per_sample, aug_layout, config
    config = given.pop("config")
    return {
        "schema_version": SCHEMA_VERSION,
        **given,
        **layout.to_attrs(),  # bev, channels, class_names, tasks
        "codecs": codecs_attr(store_format),
        "package_version": simdistill.__version__,
        "config": config,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def create_store(
    url: StoreLike,
    *,
    layout: StoreLayout,
    store_format: StoreFormatConfig,
    n_views: int,
    aug_dim: int,
    attrs: StoreAttrs,
    overwrite: bool = False,
) -> FeatureStoreWriter:
    """Create an empty store for `n_views` views (refuses an existing store unless `overwrite`)."""
    url = store_url(url)
    attrs.validate(n_views=n_views, aug_dim=aug_dim)
    if store_format.sharding and store_format.views_per_shard < 1:
        raise StoreError(f"store_format.views_per_shard must be >= 1, got {store_format.views_per_shard}")
    lossy_arrays(store_format)  # validates the lossy settings before anything is written
    root = local_root(url)
    if _exists(url):
        if not overwrite:
            raise StoreError(
                f"a feature store already exists at {url}; resume it (re-run the same export, or "
                "create_or_resume_store) or pass --overwrite to replace it"
            )
        if root is not None and not (root / "zarr.json").is_file():  # never delete what we did not write
            raise StoreError(f"{url} exists and is not a feature store; choose another output path")
    sizes = layout.dim_sizes(n_views=n_views, aug_dim=aug_dim)
    with store_errors(url, "creating the store"):
        if root is not None and root.exists() and overwrite:
            shutil.rmtree(root)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(make_store(url, read_only=False), mode="w", attributes=group_attrs(layout, store_format, attrs))
        with quiet_numcodecs_warning():
            for name, spec in SCHEMA.items():
                chunks = chunk_shape(name, sizes)
                shards = None
                if store_format.sharding and name != "done":  # done stays one file per view
                    shards = (min(store_format.views_per_shard, max(n_views, 1)), *chunks[1:])
                codecs = array_codecs(name, store_format)
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
    return FeatureStoreWriter(url, group, store_format)


def open_for_resume(url: StoreLike, *, attrs: StoreAttrs) -> FeatureStoreWriter:
    """Reopen a store to finish it; refuses one made from another teacher, config or dataset.

    Compared: `store_content` of the stored attributes and of this run (see the module docstring).
    """
    url = store_url(url)
    group = open_group(url, mode="r+")
    check_resumable(url, group, attrs=attrs)
    return _writer(url, group)


def check_resumable(url: StoreLike, group: zarr.Group, *, attrs: StoreAttrs) -> None:
    """StoreError unless the store at `url` was made by a run with the same store content as this one."""
    stored = json.loads(json.dumps(group.attrs.asdict()))  # a deep copy we may edit
    if stored.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"store {url} has schema version {stored.get('schema_version')}, this simdistill writes "
            f"{SCHEMA_VERSION}; re-export it with --overwrite"
        )
    diff = first_difference(store_content(stored), store_content(attrs.to_json()))
    if diff:
        raise StoreError(f"store {url} was exported by another run ({describe_difference(diff)}); export with the "
                         "same settings to resume, or pass --overwrite to re-export from scratch")


def creation_unfinished(url: StoreLike, group: zarr.Group) -> bool:
    """Whether the store's creation was cut short (a lost storage server, a crash): some array was never made.

    Views are written only once every array exists, so such a store holds no data yet and is made again."""
    with store_errors(url, "reopening the store"), quiet_numcodecs_warning():
        return any(name not in group for name in SCHEMA)


def store_content(attrs: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides what a store holds, from its attributes: the config's store content, the teacher's
    sha256s and the recorded dataset (less where it lives), augmentation policy, views per sample and aug layout."""
    teacher = attrs.get("teacher", {})
    dataset = {k: v for k, v in (attrs.get("dataset") or {}).items() if k not in ("dataroot", "infos")}
    return {
        **run_content(attrs.get("config") or {}, only=STORE_CONTENT),
        "teacher.checkpoint_sha256": teacher.get("checkpoint_sha256"),
        # and any other sha256 a teacher records (an mmdet3d config's, a python teacher's factory)
        **{f"teacher.{k}": v for k, v in teacher.items() if k.endswith("_sha256")},
        **{f"dataset.{k}": v for k, v in dataset.items()},
        **{k: attrs.get(k) for k in ("augmentation", "views_per_sample", "aug_layout")},
    }


def create_or_resume_store(
    url: StoreLike,
    *,
    layout: StoreLayout,
    store_format: StoreFormatConfig,
    n_views: int,
    aug_dim: int,
    attrs: StoreAttrs,
    overwrite: bool = False,
) -> FeatureStoreWriter:
    """What `export-teacher` does: resume the store at `url` if there is one, else create it.

    `overwrite` replaces an existing store instead (the only way past a resume refusal).
    """
    url = store_url(url)
    create = dict(layout=layout, store_format=store_format, n_views=n_views, aug_dim=aug_dim, attrs=attrs)
    if overwrite or not _exists(url):
        return create_store(url, **create, overwrite=overwrite)
    group = open_group(url, mode="r+")
    check_resumable(url, group, attrs=attrs)
    if creation_unfinished(url, group):
        return create_store(url, **create, overwrite=True)
    writer = _writer(url, group)
    if (writer.n_views, writer.sizes["P"]) != (n_views, aug_dim):
        raise StoreError(
            f"store {url} has {writer.n_views} views × {writer.sizes['P']} aug params, this run plans "
            f"{n_views} × {aug_dim}; pass --overwrite to re-export from scratch"
        )
    return writer


def open_for_write(url: StoreLike) -> FeatureStoreWriter:
    """Reopen a store inside an export task, with the store format it was created with (no checks: the
    coordinator made them with `create_or_resume_store` and holds the lock)."""
    url = store_url(url)
    return _writer(url, open_group(url, mode="r+"))


def _writer(url: StoreURL, group: zarr.Group) -> FeatureStoreWriter:
    """A writer of an existing store, with the codec settings recorded in its `config` attribute."""
    try:
        store_format = config_from_dict(group.attrs["config"]).store_format
    except (KeyError, ConfigError) as exc:
        raise StoreError(
            f"store {url} has no usable 'config' attribute ({exc}); re-export it with --overwrite"
        ) from None
    return FeatureStoreWriter(url, group, store_format)


def _exists(url: StoreURL) -> bool:
    root = local_root(url)
    if root is not None:
        return root.exists() and (root.is_file() or any(root.iterdir()))
    try:
        open_group(url, mode="r")
    except StoreError:
        return False
    return True
