"""Teacher outputs → the per-view arrays the store keeps (and the online-teacher mode compares against)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from simdistill.feature_store import TeacherView
from simdistill.models.outputs import BEVOutputs
from simdistill.pipeline.sample import Batch


@dataclass
class TeacherArrays:
    """One view's teacher targets as float32 numpy (before the store's masking / fp16 cast)."""

    cam_bev: np.ndarray  # [C_cam, H, W]
    lidar_bev: np.ndarray  # [C_lidar, H, W]
    fused_bev: np.ndarray  # [C_fused, H, W]
    heatmap: np.ndarray  # [n_cls, H, W] logits
    boxes: np.ndarray  # [T, 10, H, W]
    fg_mask: np.ndarray  # [H, W]
    centre_indices: np.ndarray  # [T, K] int64, row * W + col
    centre_mask: np.ndarray  # [T, K] bool

    def to_teacher_view(self, *, aug: np.ndarray, sample_index: int, view: int) -> TeacherView:
        return TeacherView(
            cam_bev=self.cam_bev, lidar_bev=self.lidar_bev, fused_bev=self.fused_bev, heatmap=self.heatmap,
            boxes=self.boxes, fg_mask=self.fg_mask, aug=np.asarray(aug, np.float32), sample_index=sample_index,
            view=view, centre_indices=self.centre_indices, centre_mask=self.centre_mask,
        )


def teacher_view_arrays(teacher: torch.nn.Module, out: BEVOutputs, batch: Batch) -> list[TeacherArrays]:
    """Split a batched teacher result into per-view arrays, with the GT-derived fg_mask and centres."""
    targets = teacher.head.build_targets(batch.gt_boxes, batch.gt_labels)
    fg = teacher.head.fg_mask(targets)  # [B, H, W]

    def np32(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    if out.lidar_bev is None:
        raise ValueError("teacher_view_arrays needs a teacher result with lidar_bev (got a camera-only model's)")
    return [
        TeacherArrays(
            cam_bev=np32(out.cam_bev[b]),
            lidar_bev=np32(out.lidar_bev[b]),
            fused_bev=np32(out.fused_bev[b]),
            heatmap=np32(out.heatmap[b]),
            boxes=np32(out.boxes[b]),
            fg_mask=np32(fg[b]),
            centre_indices=targets.indices[b].cpu().numpy().astype(np.int64),
            centre_mask=targets.mask[b].cpu().numpy().astype(bool),
        )
        for b in range(out.cam_bev.shape[0])
    ]
