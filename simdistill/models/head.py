"""CenterHead (CenterPoint / BEVFusion): per-task heatmaps and box regressions, their targets and decoding.

Box regression layout (the 10 values of `boxes[:, t, :, row, col]`, also the store's `boxes`):
offset_x, offset_y (centre minus the integer cell, in cells), z (gravity centre, m), log l, log w, log h,
sin yaw, cos yaw, vx, vy (m/s). Cells index the BEV grid: col = floor((x - xmin) / xstep),
row = floor((y - ymin) / ystep), flat index = row * W + col.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from simdistill.config import BOX_CODE_SIZE, CLASS_NAMES, BEVConfig, HeadConfig
from simdistill.errors import ConfigError, DataError
from simdistill.models.backbone import conv_bn_relu
from simdistill.models.center_utils import (
    TaskLayout,
    circle_nms,
    draw_heatmap_gaussian,
    gaussian_2d,
    gaussian_radius,
)

__all__ = [
    "BOX_CODE_SIZE",
    "CenterHead",
    "Detections",
    "HeadTargets",
    "TaskLayout",
    "circle_nms",
    "draw_heatmap_gaussian",
    "fg_mask",
    "gaussian_2d",
    "gaussian_radius",
]

HEATMAP_BIAS_INIT = -2.19  # sigmoid(-2.19) ~ 0.1, the CenterNet prior
BRANCHES: tuple[tuple[str, int], ...] = (("reg", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2))


@dataclass
class HeadTargets:
    """CenterPoint training targets on the head's grid (T tasks, K = head.max_objs slots per task)."""

    heatmap: torch.Tensor  # [B, n_cls, H, W] Gaussian targets in [0, 1], channels in flattened task order
    indices: torch.Tensor  # [B, T, K] long, row * W + col of each object's centre cell (0 where unused)
    box_targets: torch.Tensor  # [B, T, K, 10] regression targets (layout in the module docstring)
    mask: torch.Tensor  # [B, T, K] bool, which slots hold a real object


@dataclass
class Detections:
    """Decoded boxes of one sample, in the grid's LiDAR frame, sorted by score (torch tensors from `decode`;
    evaluation also accepts numpy arrays of the same shapes)."""

    boxes: torch.Tensor  # [K, 9] (x, y, z, l, w, h, yaw, vx, vy)
    scores: torch.Tensor  # [K]
    labels: torch.Tensor  # [K] long, indices into CLASS_NAMES

    def cpu(self) -> "Detections":
        return Detections(self.boxes.detach().cpu(), self.scores.detach().cpu(), self.labels.detach().cpu())


def fg_mask(targets: HeadTargets) -> torch.Tensor:
    """CMD foreground mask: the sum over ALL classes of the Gaussian target heatmaps, [B, H, W] (may exceed 1)."""
    return targets.heatmap.sum(dim=1)


def _branch(in_ch: int, head_conv: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(in_ch, head_conv), nn.Conv2d(head_conv, out_ch, 3, padding=1, bias=True))


class CenterHead(nn.Module):
    """BEV features [B, C_in, H, W] -> (heatmap logits [B, n_cls, H, W], boxes [B, T, 10, H, W])."""

    def __init__(self, in_channels: int, cfg: HeadConfig, bev: BEVConfig) -> None:
        super().__init__()
        if len(cfg.code_weights) != BOX_CODE_SIZE:
            raise ConfigError(f"model.head.code_weights needs {BOX_CODE_SIZE} values, got {len(cfg.code_weights)}")
        if len(cfg.nms_radius) != len(cfg.tasks):
            raise ConfigError("model.head.nms_radius needs one radius per task")
        self.cfg = cfg
        self.bev = bev
        self.layout = TaskLayout(tuple(tuple(t) for t in cfg.tasks))
        self.grid_hw = bev.grid_size
        self.shared = conv_bn_relu(in_channels, cfg.shared_channels)
        self.heatmaps = nn.ModuleList()
        self.regressions = nn.ModuleList()
        for task in cfg.tasks:
            hm = _branch(cfg.shared_channels, cfg.head_conv, len(task))
            nn.init.constant_(hm[-1].bias, HEATMAP_BIAS_INIT)
            self.heatmaps.append(hm)
            self.regressions.append(
                nn.ModuleDict({name: _branch(cfg.shared_channels, cfg.head_conv, n) for name, n in BRANCHES})
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.shared(x)  # [B, C_shared, H, W]
        heatmap = torch.cat([hm(x) for hm in self.heatmaps], dim=1)  # [B, n_cls, H, W]
        boxes = torch.stack(
            [torch.cat([reg[name](x) for name, _ in BRANCHES], dim=1) for reg in self.regressions], dim=1
        )  # [B, T, 10, H, W]
        return heatmap, boxes

    # ------------------------------------------------------------------------------------------ targets

    @staticmethod
    def fg_mask(targets: HeadTargets) -> torch.Tensor:
        """`fg_mask(targets)` as a method, so callers holding only the model can reach it: [B, H, W]."""
        return fg_mask(targets)

    def build_targets(self, gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor]) -> HeadTargets:
        """CenterPoint targets from per-sample boxes [M_i, 9] and labels [M_i] (CLASS_NAMES indices).

        Objects whose centre falls outside the grid are skipped; at most `max_objs` objects per task
        and sample are kept (input order). Radius = max(min_radius, int(gaussian_radius((l, w) in cells))).
        """
        if len(gt_boxes) != len(gt_labels):
            raise ValueError(f"gt_boxes has {len(gt_boxes)} samples but gt_labels has {len(gt_labels)}")
        cfg, layout = self.cfg, self.layout
        h, w = self.grid_hw
        xmin, _, xstep = self.bev.xbound
        ymin, _, ystep = self.bev.ybound
        b, t, k = len(gt_boxes), layout.num_tasks, cfg.max_objs
        heatmap = torch.zeros(b, layout.num_classes, h, w)
        indices = torch.zeros(b, t, k, dtype=torch.long)
        box_targets = torch.zeros(b, t, k, BOX_CODE_SIZE)
        mask = torch.zeros(b, t, k, dtype=torch.bool)
        slots = [layout.locate(c) for c in range(len(CLASS_NAMES))]  # global class -> (task, cls)
        for i, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
            boxes = boxes.detach().to("cpu", torch.float64)
            labels = labels.detach().to("cpu", torch.long)
            if boxes.dim() != 2 or boxes.shape[1] < 9 or labels.shape != boxes.shape[:1]:
                raise ValueError(f"sample {i}: gt_boxes must be [M, 9] and gt_labels [M], got "
                                 f"{tuple(boxes.shape)} and {tuple(labels.shape)}")
            if boxes.numel() and not bool((boxes[:, 3:6] > 0).all()):
                raise DataError(f"sample {i} has a GT box with a non-positive size; fix the annotations (l, w, h > 0)")
            filled = [0] * t
            for box, label in zip(boxes, labels):
                if not 0 <= int(label) < len(slots):
                    raise DataError(f"sample {i} has GT label {int(label)} outside 0..{len(slots) - 1}")
                task, cls = slots[int(label)]
                if filled[task] >= k:
                    continue
                cx = (float(box[0]) - xmin) / xstep  # centre in cells (float)
                cy = (float(box[1]) - ymin) / ystep
                col, row = math.floor(cx), math.floor(cy)
                if not (0 <= col < w and 0 <= row < h):
                    continue
                radius = gaussian_radius((float(box[3]) / xstep, float(box[4]) / ystep), cfg.gaussian_overlap)
                radius = max(cfg.min_radius, int(radius))
                channel = layout.task_channels(task)[0] + cls
                draw_heatmap_gaussian(heatmap[i, channel], (col, row), radius)
                slot = filled[task]
                filled[task] += 1
                indices[i, task, slot] = row * w + col
                mask[i, task, slot] = True
                yaw = float(box[6])
                box_targets[i, task, slot] = torch.tensor(
                    [cx - col, cy - row, float(box[2]), math.log(float(box[3])), math.log(float(box[4])),
                     math.log(float(box[5])), math.sin(yaw), math.cos(yaw), float(box[7]), float(box[8])]
                )
        device = gt_boxes[0].device if len(gt_boxes) else torch.device("cpu")
        return HeadTargets(heatmap.to(device), indices.to(device), box_targets.to(device), mask.to(device))

    # ------------------------------------------------------------------------------------------ decoding

    @torch.no_grad()
    def decode(self, heatmap: torch.Tensor, boxes: torch.Tensor) -> list[Detections]:
        """Head outputs -> per-sample detections: sigmoid, top-`pre_max_size` (class, cell) pairs per task,
        score threshold, circle NMS per task (radius `nms_radius[t]` m), at most `max_detections` by score."""
        cfg, layout = self.cfg, self.layout
        b, n_cls, h, w = heatmap.shape
        if n_cls != layout.num_classes or boxes.shape != (b, layout.num_tasks, BOX_CODE_SIZE, h, w):
            raise ValueError(
                f"decode needs heatmap [B, {layout.num_classes}, H, W] and boxes [B, {layout.num_tasks}, "
                f"{BOX_CODE_SIZE}, H, W], got {tuple(heatmap.shape)} and {tuple(boxes.shape)}"
            )
        xmin, _, xstep = self.bev.xbound
        ymin, _, ystep = self.bev.ybound
        results = []
        for i in range(b):
            out_boxes, out_scores, out_labels = [], [], []
            for t in range(layout.num_tasks):
                start, stop = layout.task_channels(t)
                scores = heatmap[i, start:stop].float().sigmoid().reshape(-1)  # [n_c * H * W]
                top_scores, top_idx = scores.topk(min(cfg.pre_max_size, scores.numel()))
                keep = top_scores > cfg.score_threshold
                top_scores, top_idx = top_scores[keep], top_idx[keep]
                cls, cell = top_idx // (h * w), top_idx % (h * w)
                row, col = cell // w, cell % w
                reg = boxes[i, t].float().reshape(BOX_CODE_SIZE, h * w)[:, cell].T  # [k, 10]
                x = (col.float() + reg[:, 0]) * xstep + xmin
                y = (row.float() + reg[:, 1]) * ystep + ymin
                yaw = torch.atan2(reg[:, 6], reg[:, 7])
                decoded = torch.stack([x, y, reg[:, 2], *reg[:, 3:6].exp().unbind(1), yaw, reg[:, 8], reg[:, 9]], 1)
                kept = circle_nms(decoded[:, :2], top_scores, cfg.nms_radius[t])
                global_ids = torch.tensor([layout.to_global(t, c) for c in range(stop - start)], device=heatmap.device)
                out_boxes.append(decoded[kept])
                out_scores.append(top_scores[kept])
                out_labels.append(global_ids[cls[kept]])
            all_scores = torch.cat(out_scores)
            order = torch.sort(all_scores, descending=True, stable=True).indices[: cfg.max_detections]
            results.append(Detections(torch.cat(out_boxes)[order], all_scores[order], torch.cat(out_labels)[order]))
        return results
