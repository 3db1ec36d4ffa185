"""The feature store as a data interface for a student loop of one's own (docs/api.md).

`CachedTeacherDataset` (item = one stored view: replayed inputs + teacher targets, or targets only),
`OneViewPerSampleSampler` (one view per sample per epoch, seeded, distributed-aware) and `collate_cached_views`
(-> `CachedBatch`) plug into a plain `torch.utils.data.DataLoader`. `recorded_view_builder` rebuilds the data
source and augmentation a store was exported with. Layered above the store and the pipeline; nothing below
imports it.
"""

from simdistill.data.collate import CachedBatch, collate_cached_views
from simdistill.data.dataset import DEFAULT_ARRAYS, TARGET_ARRAYS, CachedTeacherDataset, CachedView
from simdistill.data.replay import aug_matrices, recorded_source, recorded_view_builder
from simdistill.data.sampler import OneViewPerSampleSampler

__all__ = [
    "DEFAULT_ARRAYS",
    "TARGET_ARRAYS",
    "CachedBatch",
    "CachedTeacherDataset",
    "CachedView",
    "OneViewPerSampleSampler",
    "aug_matrices",
    "collate_cached_views",
    "recorded_source",
    "recorded_view_builder",
]
