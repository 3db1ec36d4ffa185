"""Create a feature store, or reopen one to finish it, refusing a store made from another teacher or config.

    writer = create_or_resume_store(url, cfg=cfg, n_views=V, aug_dim=P, attrs=attrs)

What must match to resume is `simdistill.config.run_content(cfg, only=STORE_CONTENT)` (the same rule training
resume uses) plus the teacher's sha256 and the dataset, augmentation policy, views per sample and aug layout the
store records. Where the data or the checkpoint live, and how many workers export, may change.
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import asdict, dataclass
from typing import Any

import zarr

import simdistill
from simdistill.config import (
    CLASS_NAMES,
    STORE_CONTENT,
    Config,
    config_from_dict,
    config_to_dict,
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
    array_shape,
    chunk_shape,
    dim_sizes,
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
        "codecs": codecs_attr(cfg.store_format),
        "package_version": simdistill.__version__,
        "config": config_to_dict(cfg),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def create_store(
    url: StoreLike,
    *,
    cfg: Config,
    n_views: int,
    aug_dim: int,
    attrs: StoreAttrs,
    overwrite: bool = False,
) -> FeatureStoreWriter:
    """Create an empty store for `n_views` views (refuses an existing store unless `overwrite`)."""
    url = store_url(url)
    attrs.validate(n_views=n_views, aug_dim=aug_dim)
    if cfg.store_format.sharding and cfg.store_format.views_per_shard < 1:
        raise StoreError(f"store_format.views_per_shard must be >= 1, got {cfg.store_format.views_per_shard}")
    lossy_arrays(cfg.store_format)  # validates the lossy settings before anything is written
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
    with store_errors(url, "creating the store"):
        if root is not None and root.exists() and overwrite:
            shutil.rmtree(root)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(make_store(url, read_only=False), mode="w", attributes=group_attrs(cfg, attrs))
        with quiet_numcodecs_warning():
            for name, spec in SCHEMA.items():
                chunks = chunk_shape(name, sizes)
                shards = None
                if cfg.store_format.sharding and name != "done":  # done stays one file per view
                    shards = (min(cfg.store_format.views_per_shard, max(n_views, 1)), *chunks[1:])
                codecs = array_codecs(name, cfg.store_format)
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


def open_for_resume(url: StoreLike, *, cfg: Config, attrs: StoreAttrs) -> FeatureStoreWriter:
    """Reopen a store to finish it; refuses one made from another teacher, config or dataset.

    Compared: `store_content` of the stored attributes and of this run (see the module docstring).
    """
    url = store_url(url)
    group = open_group(url, mode="r+")
    stored = json.loads(json.dumps(group.attrs.asdict()))  # a deep copy we may edit
    if stored.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"store {url} has schema version {stored.get('schema_version')}, this simdistill writes "
            f"{SCHEMA_VERSION}; re-export it with --overwrite"
        )
    diff = first_difference(store_content(stored.get("config", {}), stored), store_content(cfg, attrs.to_json()))
    if diff:
        raise StoreError(f"store {url} was exported by another run ({describe_difference(diff)}); export with the "
                         "same settings to resume, or pass --overwrite to re-export from scratch")
    return FeatureStoreWriter(url, group, cfg)


def store_content(cfg: Config | dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides what a store holds: the config's store content, the teacher's sha256s and
    the recorded dataset (less where it lives), augmentation policy, views per sample and aug layout."""
    teacher = attrs.get("teacher", {})
    dataset = {k: v for k, v in (attrs.get("dataset") or {}).items() if k not in ("dataroot", "infos")}
    return {
        **run_content(cfg, only=STORE_CONTENT),
        "teacher.checkpoint_sha256": teacher.get("checkpoint_sha256"),
        "teacher.mmdet3d_config_sha256": teacher.get("mmdet3d_config_sha256"),  # mmdet3d teachers only
        **{f"dataset.{k}": v for k, v in dataset.items()},
        **{k: attrs.get(k) for k in ("augmentation", "views_per_sample", "aug_layout")},
    }


def create_or_resume_store(
    url: StoreLike,
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
    if overwrite or not _exists(store_url(url)):
        return create_store(url, cfg=cfg, n_views=n_views, aug_dim=aug_dim, attrs=attrs, overwrite=overwrite)
    writer = open_for_resume(url, cfg=cfg, attrs=attrs)
    if (writer.n_views, writer.sizes["P"]) != (n_views, aug_dim):
        raise StoreError(
            f"store {url} has {writer.n_views} views × {writer.sizes['P']} aug params, this run plans "
            f"{n_views} × {aug_dim}; pass --overwrite to re-export from scratch"
        )
    return writer


def open_for_write(url: StoreLike) -> FeatureStoreWriter:
    """Reopen a store inside an export task, with the config it was created with (no checks: the
    coordinator made them with `create_or_resume_store` and holds the lock)."""
    url = store_url(url)
    group = open_group(url, mode="r+")
    try:
        cfg = config_from_dict(group.attrs["config"])
    except (KeyError, ConfigError) as exc:
        raise StoreError(
            f"store {url} has no usable 'config' attribute ({exc}); re-export it with --overwrite"
        ) from None
    return FeatureStoreWriter(url, group, cfg)


def _exists(url: StoreURL) -> bool:
    root = local_root(url)
    if root is not None:
        return root.exists() and (root.is_file() or any(root.iterdir()))
    try:
        open_group(url, mode="r")
    except StoreError:
        return False
    return True
