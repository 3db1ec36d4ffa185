"""Training and distillation losses (DESIGN.md §6), each a pure function of tensors.

Every loss is normalised PER VIEW (sample) and then averaged over the batch, so a view's weight does
not depend on how many objects its batch-mates have. Teacher tensors are `.detach()`ed inside:
gradients reach the student's inputs only. Shapes are checked; a mismatch raises ValueError naming
both shapes. Deliberate differences from the published SimDistill code: MMD-P applies the sigmoid
to the teacher logits once (not twice) and counts only real objects (not all padded slots).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from simdistill.config import DEFAULT_TASKS

BOX_CODE_SIZE = 10
FOCAL_ALPHA = 2.0
FOCAL_GAMMA = 4.0
_CLAMP = 1e-4  # CenterPoint's clamped sigmoid
_EPS = 1e-12  # mmdet's GaussianFocalLoss eps inside the logs


def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: student shape {tuple(a.shape)} != teacher/target shape {tuple(b.shape)}")


def _code_weights(code_weights: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(code_weights, dtype=like.dtype, device=like.device)
    if w.shape != (BOX_CODE_SIZE,):
        raise ValueError(f"code_weights must have {BOX_CODE_SIZE} values, got {tuple(w.shape)}")
    return w


def _check_box_inputs(pred_boxes: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor, what: str) -> None:
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
    starts = [sum(sizes[:i]) for i in range(n_tasks)]
    return [slice(start, start + n) for start, n in zip(starts, sizes)]


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
    _same_shape(pred_heatmap, targets_heatmap, "gt_loss heatmap")
    _check_box_inputs(pred_boxes, indices, mask, "gt_loss")
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
    weight = mask.float()[..., None] * _code_weights(code_weights, pred)  # [B, T, K, 10]
    l1 = (weight * (pred - target).abs()).sum(dim=(2, 3))  # [B, T]
    objects = mask.float().sum(dim=2).clamp(min=1)  # [B, T]
    bbox = bbox_weight * (l1 / objects).sum(dim=1)  # [B]
    heatmap, bbox = heatmap.mean(), bbox.mean()
    return {"heatmap": heatmap, "bbox": bbox, "total": heatmap + bbox}


def _mse(student: torch.Tensor, teacher: torch.Tensor, what: str) -> torch.Tensor:
    _same_shape(student, teacher, what)
    if student.dim() < 2:
        raise ValueError(f"{what}: expected [B, ...] maps, got {tuple(student.shape)}")
    per_view = (student.float() - teacher.detach().float()).pow(2).flatten(1).mean(dim=1)  # [B]
    return per_view.mean()


def imd_loss(student_cam_bev: torch.Tensor, teacher_cam_bev: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """IMD = weight * MSE(student cam_bev, teacher cam_bev); both [B, C_cam, H, W]; mean per view, then over views."""
    return weight * _mse(student_cam_bev, teacher_cam_bev, "imd_loss")


def mmd_f_loss(student_fused: torch.Tensor, teacher_fused: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """MMD-F = weight * MSE(student fused_bev, teacher fused_bev); both [B, C_fused, H, W]; per view, then mean."""
    return weight * _mse(student_fused, teacher_fused, "mmd_f_loss")


def cmd_loss(
    student_lidar_bev: torch.Tensor, teacher_lidar_bev: torch.Tensor, fg_mask: torch.Tensor, *, weight: float = 100.0
) -> torch.Tensor:
    """CMD = weight * MSE(M * s, M * t) over all C*H*W elements of each view, then mean over views.

    student_lidar_bev = adapt(sim_lidar_bev) and teacher_lidar_bev: [B, C_lidar, H, W];
    fg_mask M: [B, H, W] or [B, 1, H, W] (soft; broadcast over channels; the teacher side is detached too).
    """
    _same_shape(student_lidar_bev, teacher_lidar_bev, "cmd_loss")
    if student_lidar_bev.dim() != 4:
        raise ValueError(f"cmd_loss: BEV maps must be [B, C, H, W], got {tuple(student_lidar_bev.shape)}")
    b, _, h, w = student_lidar_bev.shape
    m = fg_mask.detach().float()
    if m.dim() == 3:
        m = m[:, None]
    if m.shape != (b, 1, h, w):
        raise ValueError(f"cmd_loss: fg_mask {tuple(fg_mask.shape)} must be [B, H, W] or [B, 1, H, W] for maps "
                         f"{tuple(student_lidar_bev.shape)}")
    diff = m * student_lidar_bev.float() - m * teacher_lidar_bev.detach().float()
    return weight * diff.pow(2).flatten(1).mean(dim=1).mean()


def quality_focal_loss(student_logits: torch.Tensor, teacher_prob: torch.Tensor) -> torch.Tensor:
    """Element-wise QFL: BCE_with_logits(s, t) * |sigmoid(s) - t|^2 with soft targets t in [0, 1]."""
    bce = F.binary_cross_entropy_with_logits(student_logits.float(), teacher_prob, reduction="none")
    return bce * (student_logits.float().sigmoid() - teacher_prob).pow(2)


def smooth_l1(diff: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise SmoothL1 of a difference: 0.5 x^2 / beta below beta, |x| - beta / 2 above."""
    ad = diff.abs()
    return torch.where(ad < beta, 0.5 * ad * ad / beta, ad - 0.5 * beta)


def mmd_p_loss(
    student_heatmap: torch.Tensor,
    teacher_heatmap: torch.Tensor,
    student_boxes: torch.Tensor,
    teacher_boxes: torch.Tensor,
    indices: torch.Tensor,
    mask: torch.Tensor,
    *,
    code_weights: Sequence[float],
    heatmap_weight: float = 0.25,
    box_weight: float = 0.25,
    qfl_threshold: float = 0.1,
    beta: float = 1.0 / 9.0,
) -> dict[str, torch.Tensor]:
    """MMD-P: prediction distillation from the teacher's head outputs, per view then averaged.

    student_heatmap, teacher_heatmap: [B, n_cls, H, W] LOGITS; t = sigmoid(teacher logits) (once).
    student_boxes: [B, T, 10, H, W]; teacher_boxes: [B, T, 10, H, W], or already gathered at the GT
    centres as [B, T, K, 10] (a compact store); indices [B, T, K] long and mask [B, T, K] bool come from
    `CenterHead.build_targets` (real objects only).
      heatmap_v = heatmap_weight * sum QFL(s, t) / max(1, #(t > qfl_threshold) in view v)
      bbox_v = box_weight * sum_{t,k} mask * sum_c w_c SmoothL1_beta(s - t) / max(1, #objects in view v)
    Returns {"heatmap", "bbox", "total"} (weights already applied), each the mean over views.
    """
    _same_shape(student_heatmap, teacher_heatmap, "mmd_p_loss heatmap")
    _check_box_inputs(student_boxes, indices, mask, "mmd_p_loss")
    b = student_boxes.shape[0]
    if student_heatmap.shape[0] != b:
        raise ValueError(f"mmd_p_loss: heatmap batch {student_heatmap.shape[0]} != boxes batch {b}")
    t_prob = teacher_heatmap.detach().float().sigmoid()
    qfl = quality_focal_loss(student_heatmap, t_prob).flatten(1).sum(1)  # [B]
    positives = (t_prob > qfl_threshold).flatten(1).sum(1).clamp(min=1).float()  # [B]
    heatmap = heatmap_weight * (qfl / positives)

    s = gather_boxes(student_boxes, indices).float()  # [B, T, K, 10]
    if teacher_boxes.dim() == 5:
        _same_shape(student_boxes, teacher_boxes, "mmd_p_loss boxes")
        t = gather_boxes(teacher_boxes.detach(), indices).float()
    elif teacher_boxes.shape == s.shape:
        t = teacher_boxes.detach().float()
    else:
        raise ValueError(f"mmd_p_loss: teacher_boxes {tuple(teacher_boxes.shape)} must be [B, T, 10, H, W] like "
                         f"student_boxes {tuple(student_boxes.shape)} or gathered [B, T, K, 10] = {tuple(s.shape)}")
    t = torch.where(mask.bool()[..., None], t, 0.0)  # padded slots of a compact store may hold anything
    weight = mask.float()[..., None] * _code_weights(code_weights, s)  # [B, T, K, 10]
    box_sum = (weight * smooth_l1(s - t, beta)).flatten(1).sum(1)  # [B]
    objects = mask.flatten(1).float().sum(1).clamp(min=1)  # [B]
    bbox = box_weight * (box_sum / objects)
    heatmap, bbox = heatmap.mean(), bbox.mean()
    return {"heatmap": heatmap, "bbox": bbox, "total": heatmap + bbox}
