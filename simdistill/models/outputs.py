"""The one named result every model returns (teacher, SimDistill student, baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BEVOutputs:
    """BEV features and head outputs on the model's BEV grid [H, W] (DESIGN.md §5 names).

    For the teacher, `lidar_bev` is its LiDAR-branch BEV. For the SimDistill student, `lidar_bev` is
    `adapt(sim_lidar_bev)` (already mapped to C_lidar channels, what CMD compares) and `sim_lidar_bev`
    is the GCM output itself. The baseline has neither (None).
    """

    cam_bev: torch.Tensor  # [B, C_cam, H, W]
    fused_bev: torch.Tensor  # [B, C_fused, H, W] (baseline: its camera BEV after the fuser-equivalent conv)
    heatmap: torch.Tensor  # [B, n_cls, H, W] logits; channels follow the flattened task order == CLASS_NAMES
    boxes: torch.Tensor  # [B, n_tasks, 10, H, W]: offset 2, z 1, log(l, w, h) 3, sin/cos yaw 2, velocity 2
    lidar_bev: torch.Tensor | None = None  # [B, C_lidar, H, W]
    sim_lidar_bev: torch.Tensor | None = None  # [B, C_cam, H, W] (student only)
    depths: tuple[torch.Tensor, ...] = ()  # each depth net's distribution [B*N, D, fH, fW] (students: for the
    #                                        train-time depth loss; the teacher leaves this empty)
