"""Rebuild what a stored view showed (its GT boxes) from the store's replay params and the dataset it records."""

from __future__ import annotations

import dataclasses

import numpy as np

from simdistill.config import config_from_dict
from simdistill.errors import SimDistillError
from simdistill.feature_store import StoreLike, open_store
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sources import open_data_source


def stored_view_gt_boxes(url: StoreLike, v: int) -> np.ndarray:
    """GT boxes [M, 9] of view `v` in its augmented LiDAR frame (what the store's BEV maps show)."""
    reader = open_store(url)
    attrs = reader.attrs
    data = reader.read_view(v, ["aug", "sample_index"])
    dataset = attrs["dataset"]
    cfg = config_from_dict(attrs["config"])
    # The split, dataroot and info file the store records, read through the same source choice as every stage.
    recorded = dataclasses.replace(cfg.data, dataroot=dataset.get("dataroot", cfg.data.dataroot),
                                   version=dataset["version"], train_split=dataset["split"],
                                   infos_train=dataset.get("infos") or "")
    source = open_data_source(recorded, "train")
    n_sweeps = sum(1 for name in attrs["aug_layout"] if name.startswith("sweep"))
    builder = ViewBuilder(source, cfg.augment, train=True)
    params = AugParams.from_vector(np.asarray(data["aug"], np.float32), n_cams=builder.n_cams, n_sweeps=n_sweeps)
    index = int(data["sample_index"])
    if source.tokens[index] != dataset["sample_tokens"][index]:
        raise SimDistillError(f"the dataset at {source} no longer matches the store's sample tokens")
    return builder.build(index, params).gt_boxes
