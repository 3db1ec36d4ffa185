"""BEV models shared by teacher and students (DESIGN.md §7); every model returns `BEVOutputs`."""

from simdistill.models.build import MODELS, build_model
from simdistill.models.center_utils import (
    TaskLayout,
    circle_nms,
    draw_heatmap_gaussian,
    gaussian_radius,
)
from simdistill.models.gcm import GCM
from simdistill.models.head import CenterHead, Detections, HeadTargets, fg_mask
from simdistill.models.lss import LSSTransform, bev_pool
from simdistill.models.outputs import BEVOutputs
from simdistill.models.student import Student
from simdistill.models.teacher import Teacher

__all__ = [
    "MODELS",
    "BEVOutputs",
    "CenterHead",
    "Detections",
    "GCM",
    "HeadTargets",
    "LSSTransform",
    "Student",
    "TaskLayout",
    "Teacher",
    "bev_pool",
    "build_model",
    "circle_nms",
    "draw_heatmap_gaussian",
    "fg_mask",
    "gaussian_radius",
]
