"""Rebuild what a stored view showed (its GT boxes) from the store's replay params and the dataset."""

from __future__ import annotations

import numpy as np

from simdistill.config import AugmentConfig, config_from_dict
from simdistill.errors import SimDistillError
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.dataset import NuScenesSource
from simdistill.pipeline.mmdet3d_infos import InfoFileSource


def stored_view_gt_boxes(url: str, v: int) -> np.ndarray:
    """GT boxes [M, 9] of view `v` in its augmented LiDAR frame (what the store's BEV maps show)."""
    from simdistill.feature_store import open_store

    reader = open_store(url)
    attrs = reader.attrs
    data = reader.read_view(v, ["aug", "sample_index"])
    dataset = attrs["dataset"]
    cfg = config_from_dict(attrs["config"])
    dataroot = dataset.get("dataroot", cfg.data.dataroot)
    if dataset.get("infos"):  # exported from an mmdet3d info file
        source = InfoFileSource(dataset["infos"], dataroot, split=dataset["split"], sweeps=cfg.data.sweeps)
    else:
        source = NuScenesSource(dataroot, dataset["version"], dataset["split"], sweeps=cfg.data.sweeps)
    n_sweeps = sum(1 for name in attrs["aug_layout"] if name.startswith("sweep"))
    policy: AugmentConfig = cfg.augment
    builder = ViewBuilder(source, policy, train=True)
    params = AugParams.from_vector(np.asarray(data["aug"], np.float32), n_cams=builder.n_cams, n_sweeps=n_sweeps)
    index = int(data["sample_index"])
    if source.tokens[index] != dataset["sample_tokens"][index]:
        raise SimDistillError(f"the dataset at {source} no longer matches the store's sample tokens")
    return builder.build(index, params).gt_boxes
