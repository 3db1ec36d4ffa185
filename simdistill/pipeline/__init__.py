"""Data pipeline: nuScenes loading (devkit), augmentation with recorded parameters, data contracts, and the view
plan that export and every student run share (`view_plan`).

The synthetic world generator lives in `simdistill.pipeline.synthetic` (imported on its own).
"""

from simdistill.pipeline.augment import (
    AugParams,
    CameraAug,
    ViewBuilder,
    augment,
    draw_params,
)
from simdistill.pipeline.dataset import NuScenesSource, SampleMeta
from simdistill.pipeline.mmdet3d_infos import InfoFileSource, load_info_file
from simdistill.pipeline.mmdet3d_infos_write import write_mmdet3d_infos
from simdistill.pipeline.sample import Batch, Sample, View, collate
from simdistill.pipeline.sources import DataSource, open_data_source

__all__ = [
    "AugParams",
    "Batch",
    "CameraAug",
    "DataSource",
    "InfoFileSource",
    "NuScenesSource",
    "Sample",
    "SampleMeta",
    "View",
    "ViewBuilder",
    "augment",
    "collate",
    "draw_params",
    "load_info_file",
    "open_data_source",
    "write_mmdet3d_infos",
]
