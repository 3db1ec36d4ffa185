"""collate_cached_views: stacking, device moves, and the batches it refuses (its input path is checked against the
trainer's in test_dataset.py)."""

from __future__ import annotations

import pytest
import torch
from helpers.data_store import PlannedStore

from simdistill.data import CachedTeacherDataset, collate_cached_views
from simdistill.errors import ConfigError


def test_targets_only_batches_stack_every_array(planned: PlannedStore) -> None:
    ds = CachedTeacherDataset(planned.url, arrays=["cam_bev", "boxes", "fg_mask"], inputs=False)
    items = [ds[v] for v in (1, 4, 6)]
    batch = collate_cached_views(items)
    h, w = ds.layout.grid_size
    assert batch.batch_size == 3 and batch.inputs is None
    assert batch.targets["cam_bev"].shape == (3, ds.layout.cam_channels, h, w)
    assert batch.targets["boxes"].shape == (3, len(ds.layout.tasks), 10, h, w)
    assert batch.targets["fg_mask"].shape == (3, h, w)
    assert batch.img_aug_matrix.shape == (3, 6, 4, 4) and batch.lidar_aug_matrix.shape == (3, 4, 4)
    assert torch.equal(batch.targets["boxes"][1], items[1].targets["boxes"])
    moved = batch.to("cpu")
    assert moved.sample_tokens == batch.sample_tokens and torch.equal(moved.targets["cam_bev"], batch.targets["cam_bev"])


def test_mixed_or_empty_batches_are_refused(planned: PlannedStore) -> None:
    full = CachedTeacherDataset(planned.url, arrays=["heatmap"])
    bare = CachedTeacherDataset(planned.url, arrays=["heatmap"], inputs=False)
    with pytest.raises(ConfigError, match="with and without inputs"):
        collate_cached_views([full[0], bare[1]])
    with pytest.raises(ConfigError, match="empty batch"):
        collate_cached_views([])
