"""Your own teacher in plain PyTorch, exported into a simdistill store.

This file stands for a teacher you wrote elsewhere: none of simdistill's model classes are used. It is a small
LiDAR-camera BEV detector (a camera encoder whose features are sampled at BEV cells projected into each camera, a
pillar scatter of the LiDAR points, a conv fuser and a CenterHead-shaped dense head). What simdistill needs from it
is the factory at the bottom, `make_teacher(model_cfg, checkpoint)`, and a forward that takes a simdistill `Batch`
and returns the five BEV maps (docs/own-teacher.md has the contract, the shapes and the frames).

Try it with random weights (a real teacher would load its trained checkpoint instead):

    python examples/own_teacher.py own_teacher.pt --config demo        # writes random weights for that config
    simdistill export-teacher --config demo --teacher python \\
        --teacher-factory examples/own_teacher.py:make_teacher --checkpoint own_teacher.pt --out own.zarr
    simdistill store verify own.zarr
    simdistill train-student --config demo --store own.zarr --out runs/own_student

From Python: `export_teacher(cfg, checkpoint=..., out=..., teacher_factory=make_teacher)`
(simdistill.teacher_export.export).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from simdistill.config import ModelConfig, load_config
from simdistill.pipeline.sample import Batch

HEIGHTS_M = (-1.5, -0.5, 0.5, 1.5)  # heights (LiDAR frame) at which each BEV cell is looked up in the cameras
BOX_CODE = 10  # offset x, y (cells), z, log l, w, h, sin, cos yaw, vx, vy: simdistill's box layout


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True))


class CameraToBEV(nn.Module):
    """Image features sampled where each BEV cell (at a few heights) projects into each camera, averaged."""

    def __init__(self, cfg: ModelConfig, out_channels: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(conv_bn_relu(3, 16, 2), conv_bn_relu(16, 32, 2), conv_bn_relu(32, 32, 2),
                                     nn.Conv2d(32, out_channels, 1))  # stride 8
        (xmin, _, xstep), (ymin, _, ystep) = cfg.bev.xbound, cfg.bev.ybound
        h, w = cfg.bev.grid_size
        ys = ymin + (torch.arange(h) + 0.5) * ystep  # rows follow y
        xs = xmin + (torch.arange(w) + 0.5) * xstep  # columns follow x
        z, y, x = torch.meshgrid(torch.tensor(HEIGHTS_M), ys, xs, indexing="ij")  # [Z, H, W] each
        self.register_buffer("cells", torch.stack([x, y, z, torch.ones_like(x)], -1), persistent=False)  # [Z,H,W,4]

    def forward(self, batch: Batch) -> torch.Tensor:
        b, n, _, img_h, img_w = batch.images.shape
        feats = self.encoder(batch.images.flatten(0, 1))  # [B*N, C, fH, fW]
        # augmented LiDAR frame -> raw LiDAR -> camera -> raw pixels (u*d, v*d, d) -> augmented pixels
        lidar2cam = torch.linalg.inv(batch.camera2lidar) @ torch.linalg.inv(batch.lidar_aug_matrix)[:, None]
        cam = torch.einsum("bnij,zhwj->bnzhwi", lidar2cam, self.cells)  # [B, N, Z, H, W, 4]
        depth = cam[..., 2:3].clamp(min=1e-3)
        pix = torch.einsum("bnij,bnzhwj->bnzhwi", batch.cam_intrinsics, cam)[..., :2] / depth  # raw image (u, v)
        raw = torch.cat([pix, depth, torch.ones_like(depth)], -1)
        aug = torch.einsum("bnij,bnzhwj->bnzhwi", batch.img_aug_matrix, raw)[..., :2]  # augmented image (u, v)
        grid = torch.stack([aug[..., 0] / img_w, aug[..., 1] / img_h], -1) * 2 - 1  # [-1, 1] inside the image
        seen = (cam[..., 2] > 0.5) & (grid.abs() <= 1).all(-1)  # [B, N, Z, H, W]
        z, h, w = self.cells.shape[:3]
        sampled = F.grid_sample(feats, grid.flatten(0, 1).flatten(1, 2), align_corners=False)  # [B*N, C, Z*H, W]
        sampled = sampled.view(b, n, -1, z, h, w) * seen[:, :, None]
        return sampled.sum((1, 3)) / seen.sum((1, 2))[:, None].clamp(min=1)  # [B, C, H, W]


class PillarScatter(nn.Module):
    """LiDAR points [P, 5] (augmented LiDAR frame) -> per-point MLP -> mean per BEV cell -> conv: [B, C, H, W]."""

    def __init__(self, cfg: ModelConfig, pillar_channels: int, out_channels: int) -> None:
        super().__init__()
        (self.xmin, _, self.xstep), (self.ymin, _, self.ystep) = cfg.bev.xbound, cfg.bev.ybound
        self.grid_hw = cfg.bev.grid_size
        self.point_net = nn.Sequential(nn.Linear(7, pillar_channels), nn.ReLU(True))
        self.conv = conv_bn_relu(pillar_channels, out_channels)

    def forward(self, points: list[torch.Tensor]) -> torch.Tensor:
        h, w = self.grid_hw
        canvases = []
        for pts in points:  # [P, 5] = x, y, z, intensity, time lag
            col = torch.floor((pts[:, 0] - self.xmin) / self.xstep).long()
            row = torch.floor((pts[:, 1] - self.ymin) / self.ystep).long()
            keep = (col >= 0) & (col < w) & (row >= 0) & (row < h)
            pts, col, row = pts[keep], col[keep], row[keep]
            centre_x = self.xmin + (col + 0.5) * self.xstep
            centre_y = self.ymin + (row + 0.5) * self.ystep
            feats = self.point_net(torch.cat([pts, (pts[:, :1] - centre_x[:, None]),
                                              (pts[:, 1:2] - centre_y[:, None])], 1))  # [P', C_p]
            cell = row * w + col
            summed = feats.new_zeros(h * w, feats.shape[1]).index_add_(0, cell, feats)
            count = feats.new_zeros(h * w).index_add_(0, cell, torch.ones_like(cell, dtype=feats.dtype))
            canvases.append((summed / count.clamp(min=1)[:, None]).T.reshape(-1, h, w))
        return self.conv(torch.stack(canvases))  # [B, C_lidar, H, W]


class OwnTeacher(nn.Module):
    """Camera + LiDAR BEV, fused, with a CenterPoint-style dense head per task."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.camera = CameraToBEV(cfg, ch.cam)
        self.lidar = PillarScatter(cfg, ch.pillar, ch.lidar)
        self.fuser = conv_bn_relu(ch.cam + ch.lidar, ch.fused)
        self.shared = conv_bn_relu(ch.fused, 32)
        self.heatmaps = nn.ModuleList(nn.Conv2d(32, len(task), 3, padding=1) for task in cfg.head.tasks)
        self.regressions = nn.ModuleList(nn.Conv2d(32, BOX_CODE, 3, padding=1) for _ in cfg.head.tasks)
        for conv in self.heatmaps:
            nn.init.constant_(conv.bias, -math.log((1 - 0.1) / 0.1))  # sigmoid = 0.1 at the start, as CenterNet

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        cam_bev = self.camera(batch)  # [B, C_cam, H, W]
        lidar_bev = self.lidar(batch.points)  # [B, C_lidar, H, W]
        fused_bev = self.fuser(torch.cat([cam_bev, lidar_bev], 1))  # [B, C_fused, H, W]
        x = self.shared(fused_bev)
        return {
            "cam_bev": cam_bev,
            "lidar_bev": lidar_bev,
            "fused_bev": fused_bev,
            "heatmap": torch.cat([hm(x) for hm in self.heatmaps], 1),  # [B, n_cls, H, W] logits
            "boxes": torch.stack([reg(x) for reg in self.regressions], 1),  # [B, T, 10, H, W]
        }


def make_teacher(model_cfg: ModelConfig, checkpoint: Path) -> nn.Module:
    """The factory simdistill calls in every export process: build the teacher and load its weights."""
    model = OwnTeacher(model_cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("state_dict", state))
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write random weights of this teacher for a simdistill config.")
    parser.add_argument("out", type=Path, help="where to write the checkpoint (.pt)")
    parser.add_argument("--config", default="demo", help="simdistill config name or YAML path")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.save({"state_dict": OwnTeacher(load_config(args.config).model).state_dict()}, args.out)
    print(f"wrote {args.out}")
