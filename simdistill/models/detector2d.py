"""A CenterNet-style 2D detector around the image backbone: the model of the backbone's pretraining stage.

BEVFusion-C and SimDistill start their image backbones from weights pretrained on nuImages (2D detection).
`simdistill pretrain-backbone` does the analogue on the train split's own camera images: the 2D boxes are the
projected 3D boxes (`boxes_in_images`). Only `backbone` is kept afterwards; it initialises the image backbone of
the teacher and of every student arm, identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from simdistill.config import BackboneConfig
from simdistill.models.backbone import ImageBackbone
from simdistill.models.center_loss import gaussian_focal_loss
from simdistill.models.center_utils import draw_heatmap_gaussian, gaussian_radius
from simdistill.pipeline.geometry import box_corners
from simdistill.pipeline.sample import Batch

BOX_CODE = 4  # per feature cell: (dx, dy) sub-cell offset of the centre, (log w, log h) in feature cells
MIN_DEPTH = 0.2  # [m] box corners nearer the camera plane are dropped before projecting


class Detector2D(nn.Module):
    """images [B*N, 3, H, W] -> (heatmap logits [B*N, n_cls, fH, fW], box code [B*N, 4, fH, fW])."""

    def __init__(self, cfg: BackboneConfig, num_classes: int, *, head_channels: int = 64) -> None:
        super().__init__()
        self.backbone = ImageBackbone(cfg)
        self.feature_stride = cfg.feature_stride
        c = self.backbone.out_channels
        self.heatmap = nn.Sequential(nn.Conv2d(c, head_channels, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(head_channels, num_classes, 1))
        self.box = nn.Sequential(nn.Conv2d(c, head_channels, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(head_channels, BOX_CODE, 1))
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.1) / 0.1))  # CenterNet's prior of 0.1

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(images)  # [B*N, C, fH, fW]
        return self.heatmap(feats), self.box(feats)


def lidar2camera(batch: Batch) -> np.ndarray:
    """[B, N, 4, 4] float64: the augmented LiDAR frame -> each camera's frame (undoing the LiDAR augmentation)."""
    cam2lidar = batch.camera2lidar.double().numpy()  # [B, N, 4, 4]
    lidar_unaug = np.linalg.inv(batch.lidar_aug_matrix.double().numpy())[:, None]  # [B, 1, 4, 4]
    return np.linalg.inv(cam2lidar) @ lidar_unaug


def boxes_in_images(batch: Batch, *, min_size: float = 2.0) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The GT boxes of each view as 2D boxes in each augmented camera image: [b][n] = (xyxy [K, 4], labels [K]).

    A box is the bounding rectangle of its projected corners (those in front of the camera), clipped to the
    image; it is kept when both clipped sides are at least `min_size` pixels.
    """
    h, w = batch.images.shape[-2:]
    to_camera = lidar2camera(batch)  # [B, N, 4, 4]
    intrinsics = batch.cam_intrinsics[..., :3, :3].double().numpy()  # [B, N, 3, 3]
    img_aug = batch.img_aug_matrix.double().numpy()  # [B, N, 4, 4]: affine on raw pixels (u, v)
    out: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for b, (boxes, labels) in enumerate(zip(batch.gt_boxes, batch.gt_labels)):
        corners = box_corners(boxes.double().numpy())  # [M, 8, 3]
        views = []
        for n in range(to_camera.shape[1]):
            cam = corners @ to_camera[b, n, :3, :3].T + to_camera[b, n, :3, 3]  # [M, 8, 3]
            depth = cam[..., 2]
            front = depth > MIN_DEPTH  # [M, 8]
            raw = (cam @ intrinsics[b, n].T)[..., :2] / np.maximum(depth, MIN_DEPTH)[..., None]  # raw pixels
            uv = raw @ img_aug[b, n, :2, :2].T + img_aug[b, n, :2, 3]  # [M, 8, 2] augmented pixels
            lo = np.where(front[..., None], uv, np.inf).min(1)  # [M, 2]; inf where no corner is in front
            hi = np.where(front[..., None], uv, -np.inf).max(1)
            x0, y0 = lo[:, 0].clip(0, w), lo[:, 1].clip(0, h)
            x1, y1 = hi[:, 0].clip(0, w), hi[:, 1].clip(0, h)
            keep = front.any(1) & (x1 - x0 >= min_size) & (y1 - y0 >= min_size)  # a box wholly outside has size 0
            views.append((np.stack([x0, y0, x1, y1], 1)[keep], labels.numpy()[keep]))
        out.append(views)
    return out


@dataclass
class Targets2D:
    heatmap: torch.Tensor  # [B*N, n_cls, fH, fW] Gaussian peaks
    index: torch.Tensor  # [K] flat index (image * fH * fW + row * fW + col) of each box centre
    box: torch.Tensor  # [K, 4] (dx, dy, log w, log h) in feature cells


def build_targets_2d(batch: Batch, num_classes: int, stride: int, *, min_box_pixels: float = 2.0,
                     min_overlap: float = 0.7) -> Targets2D:
    """CenterNet targets of every camera image of `batch` at the feature stride (boxes: `boxes_in_images`)."""
    b, n, _, h, w = batch.images.shape
    fh, fw = h // stride, w // stride
    heatmap = torch.zeros(b * n, num_classes, fh, fw)
    index, code = [], []
    for bi, views in enumerate(boxes_in_images(batch, min_size=min_box_pixels)):
        for ni, (xyxy, labels) in enumerate(views):
            image = bi * n + ni
            for (x0, y0, x1, y1), label in zip(xyxy / stride, labels):
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                col, row = min(int(cx), fw - 1), min(int(cy), fh - 1)
                radius = max(0, int(gaussian_radius((y1 - y0, x1 - x0), min_overlap)))
                draw_heatmap_gaussian(heatmap[image, int(label)], (col, row), radius)
                index.append(image * fh * fw + row * fw + col)
                code.append([cx - col, cy - row, math.log(max(x1 - x0, 1e-3)), math.log(max(y1 - y0, 1e-3))])
    return Targets2D(heatmap=heatmap, index=torch.tensor(index, dtype=torch.long),
                     box=torch.tensor(code, dtype=torch.float32).reshape(-1, BOX_CODE))


def detection_2d_terms(heatmap: torch.Tensor, box: torch.Tensor, targets: Targets2D, *,
                       box_weight: float = 0.1) -> dict[str, torch.Tensor]:
    """CenterNet's loss: focal loss on the heatmap / #boxes + box_weight x L1 on the box code at the centres."""
    n_boxes = max(1, len(targets.index))
    hm = gaussian_focal_loss(heatmap, targets.heatmap.to(heatmap.device)).sum() / n_boxes
    flat = box.permute(0, 2, 3, 1).reshape(-1, BOX_CODE)  # [B*N*fH*fW, 4]
    pred = flat[targets.index.to(box.device)]  # [K, 4]
    l1 = (pred - targets.box.to(box.device)).abs().sum() / n_boxes
    return {"loss": hm + box_weight * l1, "heatmap_2d": hm, "box_2d": l1}
