"""Data pipeline: nuScenes loading (devkit), augmentation with recorded parameters, data contracts.

The synthetic world generator lives in `simdistill.pipeline.synthetic` (imported on its own).
"""

from simdistill.pipeline.augment import AugParams, CameraAug, ViewBuilder, aug_dim, aug_names, augment, draw_params
from simdistill.pipeline.dataset import NuScenesSource, SampleMeta
from simdistill.pipeline.sample import Batch, Sample, View, collate

__all__ = [
    "AugParams",
    "Batch",
    "CameraAug",
    "NuScenesSource",
    "Sample",
    "SampleMeta",
    "View",
    "ViewBuilder",
    "aug_dim",
    "aug_names",
    "augment",
    "collate",
    "draw_params",
]
