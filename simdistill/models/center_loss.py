"""CenterHead's training loss against GT targets, and the box helpers every head-output loss shares.

Every loss is normalised PER VIEW (sample) and then averaged over the batch, so a view's weight does not
depend on how many objects its batch-mates have. Shapes are checked; a mismatch raises ValueError naming both
shapes. The distillation losses (`simdistill.student_train.losses`) build on `gather_boxes` and the checks here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from simdistill.config import DEFAULT_TASKS
from simdistill.models.center_utils import channel_ranges
from simdistill.models.head import BOX_CODE_SIZE

FOCAL_ALPHA = 2.0
FOCAL_GAMMA = 4.0
_CLAMP = 1e-4  # CenterPoint's clamped sigmoid
_EPS = 1e-12  # mmdet's GaussianFocalLoss eps inside the logs


def same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: student shape {tuple(a.shape)} != teacher/target shape {tuple(b.shape)}")


def code_weight_tensor(code_weights: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(code_weights, dtype=like.dtype, device=like.device)
    if w.shape != (BOX_CODE_SIZE,):
        raise ValueError(f"code_weights must have {BOX_CODE_SIZE} values, got {tuple(w.shape)}")
    return w


def check_box_inputs(pred_boxes: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    if pred_boxes.dim() != 5 or pred_boxes.shape[2] != BOX_CODE_SIZE:
        raise ValueError(f"{what}: boxes must be [B, T, {BOX_CODE_SIZE}, H, W], got {tuple(pred_boxes.shape)}")
    if indices.shape != mask.shape or indices.shape[:2] != pred_boxes.shape[:2]:
        raise ValueError(
            f"{what}: indices {tuple(indices.shape)} and mask {tuple(mask.shape)} must both be [B, T, K] with "
            f"B, T of boxes {tuple(pred_boxes.shape)}"
        )


def gather_boxes(boxes: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """boxes [B, T, 10, H, W] at flat cells indices [B, T, K] (row * W + col) -> [B, T, K, 10]."""
    b, t, c, h, w = boxes.shape
    flat = boxes.reshape(b, t, c, h * w)
    idx = indices.long()[:, :, None, :].expand(-1, -1, c, -1)  # [B, T, 10, K]
    return flat.gather(3, idx).transpose(2, 3)  # [B, T, K, 10]


def _task_channel_slices(n_cls: int, task_sizes: Sequence[int] | None, n_tasks: int) -> list[slice]:
    """Heatmap channel slice of each task; task_sizes None = the default tasks (DEFAULT_TASKS)."""
    sizes = [len(task) for task in DEFAULT_TASKS] if task_sizes is None else list(task_sizes)
    if sum(sizes) != n_cls or len(sizes) != n_tasks:
        hint = " (pass task_sizes=[len(t) for t in cfg.model.head.tasks])" if task_sizes is None else ""
        raise ValueError(f"task sizes {sizes} must have {n_tasks} entries summing to {n_cls} heatmap channels{hint}")
    return [slice(start, stop) for start, stop in channel_ranges(sizes)]


def gaussian_focal_loss(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise CenterNet focal loss (alpha=2, gamma=4) on clamp(sigmoid(logits), 1e-4, 1 - 1e-4)."""
    pred = pred_logits.float().sigmoid().clamp(_CLAMP, 1.0 - _CLAMP)
    target = target.float()
    pos = -(pred + _EPS).log() * (1.0 - pred).pow(FOCAL_ALPHA) * target.eq(1).float()
    neg = -(1.0 - pred + _EPS).log() * pred.pow(FOCAL_ALPHA) * (1.0 - target).pow(FOCAL_GAMMA)
    return pos + neg


def gt_loss(
    pred_heatmap: torch.Tensor,
    pred_boxes: torch.Tensor,
    targets_heatmap: torch.Tensor,
    indices: torch.Tensor,
    box_targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    code_weights: Sequence[float],
    bbox_weight: float = 0.25,
    task_sizes: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """CenterHead loss against GT targets (as mmdet3d's CenterHead, but normalised per view).

    pred_heatmap, targets_heatmap: [B, n_cls, H, W] (logits / Gaussian targets, flattened task order);
    pred_boxes: [B, T, 10, H, W]; indices: [B, T, K] long; box_targets: [B, T, K, 10]; mask: [B, T, K] bool.
    task_sizes: classes per task, in order (default: DEFAULT_TASKS, i.e. [1, 2, 2, 1, 2, 2]). Per view v, task t:
      heatmap_vt = sum(focal over t's channels) / max(1, #(target == 1) in t's channels),
      bbox_vt = sum_k mask * sum_c w_c |pred - target| / max(1, #objects of t)   (pred gathered at indices);
    each summed over tasks, averaged over views; "bbox" already carries `bbox_weight`.
    Returns {"heatmap", "bbox", "total" = heatmap + bbox}.
    """
    same_shape(pred_heatmap, targets_heatmap, "gt_loss heatmap")
    check_box_inputs(pred_boxes, indices, mask, "gt_loss")
    b, t = pred_boxes.shape[:2]
    if box_targets.shape != (*indices.shape, BOX_CODE_SIZE) or pred_heatmap.shape[0] != b:
        raise ValueError(f"gt_loss: box_targets {tuple(box_targets.shape)} must be [B, T, K, {BOX_CODE_SIZE}] "
                         f"matching indices {tuple(indices.shape)} and heatmap batch {pred_heatmap.shape[0]}")
    focal = gaussian_focal_loss(pred_heatmap, targets_heatmap)  # [B, n_cls, H, W]
    heatmap = pred_heatmap.new_zeros(b, dtype=torch.float32)
    for sl in _task_channel_slices(pred_heatmap.shape[1], task_sizes, t):
        peaks = targets_heatmap[:, sl].eq(1).flatten(1).sum(1).clamp(min=1).float()  # [B]
        heatmap = heatmap + focal[:, sl].flatten(1).sum(1) / peaks

    pred = gather_boxes(pred_boxes, indices).float()  # [B, T, K, 10]
    target = torch.where(mask.bool()[..., None], box_targets.float(), 0.0)  # padded slots may hold anything
    weight = mask.float()[..., None] * code_weight_tensor(code_weights, pred)  # [B, T, K, 10]
    l1 = (weight * (pred - target).abs()).sum(dim=(2, 3))  # [B, T]
    objects = mask.float().sum(dim=2).clamp(min=1)  # [B, T]
    bbox = bbox_weight * (l1 / objects).sum(dim=1)  # [B]
    heatmap, bbox = heatmap.mean(), bbox.mean()
    return {"heatmap": heatmap, "bbox": bbox, "total": heatmap + bbox}


def gt_terms(head: torch.nn.Module, heatmap: torch.Tensor, boxes: torch.Tensor, gt_boxes: Sequence[torch.Tensor],
             gt_labels: Sequence[torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """The GT loss of a CenterHead's outputs, as named terms {"gt", "gt_heatmap", "gt_bbox"}, and the head
    targets it built (MMD-P gathers the student's and teacher's boxes at the same GT centres)."""
    hc = head.cfg
    targets = head.build_targets(gt_boxes, gt_labels)
    out = gt_loss(heatmap, boxes, targets.heatmap, targets.indices, targets.box_targets, targets.mask,
                  code_weights=hc.code_weights, bbox_weight=hc.loss_bbox_weight,
                  task_sizes=[len(t) for t in hc.tasks])
    return {"gt": out["total"], "gt_heatmap": out["heatmap"], "gt_bbox": out["bbox"]}, targets
