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

from simdistill.models.center_loss import (
    check_box_inputs,
    code_weight_tensor,
    gather_boxes,
    gt_loss,
    same_shape,
)

__all__ = ["cmd_loss", "gt_loss", "imd_loss", "mmd_f_loss", "mmd_p_loss", "quality_focal_loss", "smooth_l1"]


def _mse(student: torch.Tensor, teacher: torch.Tensor, what: str, fg_mask: torch.Tensor | None = None,
         channel_std: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per view, then over views; with `fg_mask` ([B, H, W] or [B, 1, H, W], soft) each cell's
    error is weighted by the mask and the view's sum divided by C * sum(M) (BEVDistill's foreground
    normalisation), so the term is about the objects, not the 95 % of the grid that is background. With
    `channel_std` σ [C] each channel's error is (s/σ_c - t/σ_c)², see `_standardized`."""
    same_shape(student, teacher, what)
    if student.dim() < 2:
        raise ValueError(f"{what}: expected [B, ...] maps, got {tuple(student.shape)}")
    diff = student.float() - teacher.detach().float()
    err = (diff if channel_std is None else _standardized(diff, channel_std, what)).pow(2)
    if fg_mask is None:
        return err.flatten(1).mean(dim=1).mean()
    m = _as_mask(fg_mask, student, what)  # [B, 1, H, W]
    per_view = (err * m).flatten(1).sum(1) / (m.flatten(1).sum(1).clamp(min=1.0) * student.shape[1])  # [B]
    return per_view.mean()


def _standardized(diff: torch.Tensor, channel_std: torch.Tensor, what: str) -> torch.Tensor:
    """diff [B, C, ...] / σ_c: the difference of the teacher-standardised maps, (s - μ_c)/σ_c - (t - μ_c)/σ_c (the
    teacher's mean μ_c cancels), so every channel weighs alike however the teacher scales it (PKD)."""
    if channel_std.dim() != 1 or channel_std.shape[0] != diff.shape[1]:
        raise ValueError(f"{what}: channel_std {tuple(channel_std.shape)} must be [C] for maps {tuple(diff.shape)}")
    return diff / channel_std.detach().float().view(1, -1, *([1] * (diff.dim() - 2)))


def _as_mask(fg_mask: torch.Tensor, maps: torch.Tensor, what: str) -> torch.Tensor:
    """fg_mask [B, H, W] or [B, 1, H, W] -> detached float [B, 1, H, W] matching maps [B, C, H, W]."""
    if maps.dim() != 4:
        raise ValueError(f"{what}: BEV maps must be [B, C, H, W], got {tuple(maps.shape)}")
    b, _, h, w = maps.shape
    m = fg_mask.detach().float()
    if m.dim() == 3:
        m = m[:, None]
    if m.shape != (b, 1, h, w):
        raise ValueError(f"{what}: fg_mask {tuple(fg_mask.shape)} must be [B, H, W] or [B, 1, H, W] for maps "
                         f"{tuple(maps.shape)}")
    return m


def imd_loss(student_cam_bev: torch.Tensor, teacher_cam_bev: torch.Tensor, *, weight: float = 1.0,
             fg_mask: torch.Tensor | None = None, channel_std: torch.Tensor | None = None) -> torch.Tensor:
    """IMD = weight * MSE(student cam_bev, teacher cam_bev); both [B, C_cam, H, W]; mean per view, then over views
    (foreground-normalised when `fg_mask` is given, per channel standardised by the teacher's σ [C_cam] when
    `channel_std` is, see `_mse`)."""
    return weight * _mse(student_cam_bev, teacher_cam_bev, "imd_loss", fg_mask, channel_std)


def mmd_f_loss(student_fused: torch.Tensor, teacher_fused: torch.Tensor, *, weight: float = 1.0,
               fg_mask: torch.Tensor | None = None, channel_std: torch.Tensor | None = None) -> torch.Tensor:
    """MMD-F = weight * MSE(student fused_bev, teacher fused_bev); both [B, C_fused, H, W]; per view, then mean
    (foreground-normalised when `fg_mask` is given, standardised by σ [C_fused] when `channel_std` is, see `_mse`)."""
    return weight * _mse(student_fused, teacher_fused, "mmd_f_loss", fg_mask, channel_std)


def cmd_loss(
    student_lidar_bev: torch.Tensor, teacher_lidar_bev: torch.Tensor, fg_mask: torch.Tensor, *, weight: float = 100.0,
    channel_std: torch.Tensor | None = None,
) -> torch.Tensor:
    """CMD = weight * MSE(M * s, M * t) over all C*H*W elements of each view, then mean over views.

    student_lidar_bev = adapt(sim_lidar_bev) and teacher_lidar_bev: [B, C_lidar, H, W];
    fg_mask M: [B, H, W] or [B, 1, H, W] (soft; broadcast over channels; the teacher side is detached too);
    channel_std σ [C_lidar] (optional): each channel's difference is divided by σ_c (the teacher's foreground std).
    """
    same_shape(student_lidar_bev, teacher_lidar_bev, "cmd_loss")
    m = _as_mask(fg_mask, student_lidar_bev, "cmd_loss")  # [B, 1, H, W]
    diff = m * student_lidar_bev.float() - m * teacher_lidar_bev.detach().float()
    if channel_std is not None:
        diff = _standardized(diff, channel_std, "cmd_loss")
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
    same_shape(student_heatmap, teacher_heatmap, "mmd_p_loss heatmap")
    check_box_inputs(student_boxes, indices, mask, "mmd_p_loss")
    b = student_boxes.shape[0]
    if student_heatmap.shape[0] != b:
        raise ValueError(f"mmd_p_loss: heatmap batch {student_heatmap.shape[0]} != boxes batch {b}")
    t_prob = teacher_heatmap.detach().float().sigmoid()
    qfl = quality_focal_loss(student_heatmap, t_prob).flatten(1).sum(1)  # [B]
    positives = (t_prob > qfl_threshold).flatten(1).sum(1).clamp(min=1).float()  # [B]
    heatmap = heatmap_weight * (qfl / positives)

    s = gather_boxes(student_boxes, indices).float()  # [B, T, K, 10]
    if teacher_boxes.dim() == 5:
        same_shape(student_boxes, teacher_boxes, "mmd_p_loss boxes")
        t = gather_boxes(teacher_boxes.detach(), indices).float()
    elif teacher_boxes.shape == s.shape:
        t = teacher_boxes.detach().float()
    else:
        raise ValueError(f"mmd_p_loss: teacher_boxes {tuple(teacher_boxes.shape)} must be [B, T, 10, H, W] like "
                         f"student_boxes {tuple(student_boxes.shape)} or gathered [B, T, K, 10] = {tuple(s.shape)}")
    t = torch.where(mask.bool()[..., None], t, 0.0)  # padded slots of a compact store may hold anything
    weight = mask.float()[..., None] * code_weight_tensor(code_weights, s)  # [B, T, K, 10]
    box_sum = (weight * smooth_l1(s - t, beta)).flatten(1).sum(1)  # [B]
    objects = mask.flatten(1).float().sum(1).clamp(min=1)  # [B]
    bbox = box_weight * (box_sum / objects)
    heatmap, bbox = heatmap.mean(), bbox.mean()
    return {"heatmap": heatmap, "bbox": bbox, "total": heatmap + bbox}
