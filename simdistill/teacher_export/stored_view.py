"""Rebuild what a stored view showed (its GT boxes) from the store's replay params and the dataset it records."""

from __future__ import annotations

import numpy as np

from simdistill.data import recorded_view_builder
from simdistill.feature_store import StoreLike, open_store


def stored_view_gt_boxes(url: StoreLike, v: int) -> np.ndarray:
    """GT boxes [M, 9] of view `v` in its augmented LiDAR frame (what the store's BEV maps show)."""
    reader = open_store(url)
    data = reader.read_view(v, ["aug", "sample_index"])
    # The split, dataroot and info file the store records, read through the same source choice as export.
    builder = recorded_view_builder(reader.attrs, reader.url, check_files=False)
    return builder.build(int(data["sample_index"]), np.asarray(data["aug"], np.float32)).gt_boxes
