"""Rebuild, from what a store records, the data source and view builder its views were exported from.

A store's group attributes hold the exporter's whole config (`config`: its `data`, `augment` and `export.split`
sections choose the source and replay the views) and the dataset it read (`dataset`: dataroot, version, split,
sample tokens, info file). Replaying view v is then `builder.build(sample_index[v], aug[v])`, the very call export
made, so the inputs match the cached targets. The recorded dataroot is that of the exporting machine; a user
elsewhere passes their own copy, and the sample tokens must match the store's, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simdistill.config import CAMERA_NAMES, Config, config_from_dict
from simdistill.errors import ConfigError, DataError, StoreError
from simdistill.pipeline.augment import AugParams, ViewBuilder, img_aug_matrix, lidar_aug_matrix
from simdistill.pipeline.sources import DataSource, check_data_files, open_data_source


def recorded_config(attrs: Mapping[str, Any], url: str) -> Config:
    """The config a store was exported with (StoreError when it records none this simdistill can read)."""
    if not isinstance(attrs.get("config"), dict) or not isinstance(attrs.get("dataset"), dict):
        raise StoreError(f"store {url} records no exporter config or dataset in its attributes; re-export it with "
                         "`simdistill export-teacher` (it records both)")
    try:
        return config_from_dict(attrs["config"])
    except ConfigError as exc:
        raise StoreError(f"store {url} records a config this simdistill cannot read ({exc}); read it with the "
                         f"simdistill version that wrote it ({attrs.get('package_version')})") from None


def recorded_sweeps(attrs: Mapping[str, Any], url: str) -> int:
    """LiDAR sweeps per view, from the aug layout; StoreError unless the layout is `AugParams.names`'s."""
    layout = list(attrs.get("aug_layout") or [])
    n_sweeps = sum(1 for name in layout if name.startswith("sweep"))
    if layout != AugParams.names(len(CAMERA_NAMES), n_sweeps):
        raise StoreError(f"store {url} has an aug layout of {len(layout)} entries ({', '.join(layout[:3])}, ...) "
                         f"that is not simdistill's replay vector for {len(CAMERA_NAMES)} cameras; only views "
                         "exported by `simdistill export-teacher` can be replayed (use inputs=False for targets only)")
    return n_sweeps


def recorded_source(attrs: Mapping[str, Any], url: str, *, dataroot: str | Path | None = None,
                    infos: str | Path | None = None, check_files: bool = True) -> DataSource:
    """The source export read (the same `open_data_source` choice), at `dataroot` (default: the recorded one).

    `infos` replaces the recorded mmdet3d info file (a path on the exporting machine) for a store made from one.
    DataError when the dataroot is missing, holds other samples than the store, or (`check_files`, one stat per input
    file of every sample) lacks input files.
    """
    cfg = recorded_config(attrs, url)
    dataset = attrs["dataset"]
    info_file = str(infos) if infos is not None else str(dataset.get("infos") or "")
    data = dataclasses.replace(cfg.data, dataroot=str(dataroot if dataroot is not None else dataset["dataroot"]),
                               version=dataset["version"], infos_train=info_file, infos_val=info_file)
    source = open_data_source(data, cfg.export.split)
    stored = list(dataset["sample_tokens"])
    if list(source.tokens) != stored:
        same = sum(1 for a, b in zip(source.tokens, stored) if a == b)
        raise DataError(f"dataroot {source.dataroot} holds other samples than store {url} ({len(source)} samples of "
                        f"split '{source.split}' there, {len(stored)} in the store, {same} in the same place); pass "
                        "the dataroot (and info file) of the data the store was exported from")
    if check_files:
        check_data_files(source, needed_by=f"store {url}")
    return source


def recorded_view_builder(attrs: Mapping[str, Any], url: str, *, dataroot: str | Path | None = None,
                          infos: str | Path | None = None, check_files: bool = True) -> ViewBuilder:
    """The builder export used (recorded augmentation policy, `data.max_points`) over `recorded_source`."""
    cfg = recorded_config(attrs, url)
    n_sweeps = recorded_sweeps(attrs, url)
    source = recorded_source(attrs, url, dataroot=dataroot, infos=infos, check_files=check_files)
    if source.sweeps != n_sweeps:
        raise StoreError(f"store {url} records {n_sweeps} sweeps in its aug layout but data.sweeps={source.sweeps} "
                         "in its config; the store is inconsistent: re-export it")
    return ViewBuilder.for_config(source, cfg, train=True)


def aug_matrices(params: AugParams, final_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(img_aug_matrix [N_cam, 4, 4], lidar_aug_matrix [4, 4]) float32 of one view, without loading its data:
    the matrices `augment` puts in a View, for a pipeline that applies the stored augmentation itself."""
    cams = np.stack([img_aug_matrix(cam, final_hw) for cam in params.cams]).astype(np.float32)
    return cams, lidar_aug_matrix(params).astype(np.float32)
