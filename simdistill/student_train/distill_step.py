"""One student step's loss: GT + the chosen distillation terms, returned as named terms.

Targets come from the store (float16, already masked) or from an online teacher (float32, raw): the losses
read only what both agree on (CMD masks by fg_mask; MMD-P's box term reads only GT centres), so the two
sources give the same terms up to float16 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from simdistill.config import DISTILL_LOSSES, Config
from simdistill.errors import ConfigError
from simdistill.models.center_loss import gt_terms
from simdistill.models.depth import depth_bin_targets, depth_loss
from simdistill.models.head import fg_mask
from simdistill.models.outputs import BEVOutputs
from simdistill.pipeline.sample import Batch
from simdistill.student_train.losses import cmd_loss, imd_loss, mmd_f_loss, mmd_p_loss
from simdistill.training.fit import unwrap

TERM_KEYS = ("loss", "gt", "gt_heatmap", "gt_bbox", "depth", *DISTILL_LOSSES)
"""Every term a student step returns (and its JSONL log records); "loss" is gt + depth + the distillation terms."""


@dataclass
class TeacherTargets:
    """Teacher targets for a batch; absent arrays are None. Shapes as in the store, batched."""

    cam_bev: torch.Tensor | None = None  # [B, C_cam, H, W]
    lidar_bev: torch.Tensor | None = None  # [B, C_lidar, H, W]
    fused_bev: torch.Tensor | None = None  # [B, C_fused, H, W]
    heatmap: torch.Tensor | None = None  # [B, n_cls, H, W] logits
    boxes: torch.Tensor | None = None  # [B, T, 10, H, W]
    fg_mask: torch.Tensor | None = None  # [B, H, W]

    @classmethod
    def from_arrays(cls, arrays: dict[str, object], device: torch.device) -> "TeacherTargets":
        tensors = {k: torch.as_tensor(v, dtype=torch.float32).to(device) for k, v in arrays.items()
                   if k in cls.__dataclass_fields__}
        return cls(**tensors)


def arrays_needed(losses: tuple[str, ...]) -> list[str]:
    """The store arrays the chosen terms read (the store's schema table is the one source of this)."""
    from simdistill.feature_store import arrays_for_losses

    return arrays_for_losses(losses)


def check_losses_for_variant(losses: tuple[str, ...], variant: str) -> None:
    if variant == "baseline" and "cmd" in losses:
        raise ConfigError("CMD needs the simulated-LiDAR branch, which the baseline variant lacks; use "
                          "--variant simdistill or drop cmd from --losses")


def student_terms(model: nn.Module, batch: Batch, targets: TeacherTargets | None,
                  cfg: Config) -> dict[str, torch.Tensor]:
    """The named terms (`TERM_KEYS`) of one batch: the student runs on its images only (no LiDAR), unless it was
    built to read LiDAR depth (`model.student_depth_input`, the released code's student: not camera-only)."""
    inner = unwrap(model)
    return distill_terms(model(batch if inner.uses_lidar else batch.without_points()), inner.head, batch, targets,
                         cfg)


def distill_terms(out: BEVOutputs, head: nn.Module, batch: Batch, targets: TeacherTargets | None,
                  cfg: Config) -> dict[str, torch.Tensor]:
    """The named terms (`TERM_KEYS`; unused distillation terms are 0) of given student outputs."""
    d = cfg.distill
    terms, gt_targets = gt_terms(head, out.heatmap, out.boxes, batch.gt_boxes, batch.gt_labels)
    zero = terms["gt"].new_zeros(())
    terms.update({name: zero for name in ("depth", *DISTILL_LOSSES)})
    if cfg.student_train.depth_supervision:
        terms["depth"] = depth_term(out, batch, cfg)
    if d.losses and targets is None:
        raise ConfigError("distillation losses were chosen but no teacher targets are available; pass --store or "
                          "--online-teacher, or --losses none")
    fg = fg_mask(gt_targets) if d.feature_normalization == "foreground" else None  # [B, H, W], from the GT
    if "imd" in d.losses:
        terms["imd"] = imd_loss(out.cam_bev, targets.cam_bev, weight=d.imd_weight, fg_mask=fg)
    if "cmd" in d.losses:
        terms["cmd"] = cmd_loss(out.lidar_bev, targets.lidar_bev, targets.fg_mask, weight=d.cmd_weight)
    if "mmd_f" in d.losses:
        terms["mmd_f"] = mmd_f_loss(out.fused_bev, targets.fused_bev, weight=d.mmd_f_weight, fg_mask=fg)
    if "mmd_p" in d.losses:
        terms["mmd_p"] = mmd_p_loss(
            out.heatmap, targets.heatmap, out.boxes, targets.boxes, gt_targets.indices, gt_targets.mask,
            code_weights=head.cfg.code_weights, heatmap_weight=d.mmd_p_heatmap_weight,
            box_weight=d.mmd_p_box_weight, qfl_threshold=d.qfl_threshold,
        )["total"]
    terms["loss"] = terms["gt"] + terms["depth"] + sum(terms[name] for name in DISTILL_LOSSES)
    return terms


def depth_term(out: BEVOutputs, batch: Batch, cfg: Config) -> torch.Tensor:
    """The depth loss averaged over the student's depth nets, against the batch's key-frame LiDAR depth (the
    batch keeps its points for this; the model itself never read them)."""
    if not batch.points:
        raise ConfigError("student_train.depth_supervision needs the batch's LiDAR points; build it with points")
    targets = depth_bin_targets(batch, (cfg.augment.final_height, cfg.augment.final_width),
                                stride=cfg.model.backbone.feature_stride, dbound=cfg.model.bev.dbound)
    losses = [depth_loss(d, targets.to(d.device), weight=cfg.student_train.depth_loss_weight) for d in out.depths]
    return torch.stack(losses).mean()
