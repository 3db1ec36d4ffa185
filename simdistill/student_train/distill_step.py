"""One student step's loss: GT + the chosen distillation terms, returned as named terms.

Targets come from the store (float16, already masked) or from an online teacher (float32, raw): the losses
read only what both agree on (CMD masks by fg_mask; MMD-P's box term reads only GT centres), so the two
sources give the same terms up to float16 rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from simdistill.config import DISTILL_LOSSES, WEIGHT_SCHEDULES, Config, DistillConfig
from simdistill.errors import ConfigError
from simdistill.models.center_loss import gt_terms
from simdistill.models.depth import depth_bin_targets, depth_loss
from simdistill.models.head import fg_mask
from simdistill.models.outputs import BEVOutputs
from simdistill.pipeline.sample import Batch
from simdistill.student_train.losses import cmd_loss, imd_loss, mmd_f_loss, mmd_p_loss
from simdistill.training.fit import unwrap
from simdistill.training.optim import WARMUP_FRACTION

TERM_KEYS = ("loss", "gt", "gt_heatmap", "gt_bbox", "depth", *DISTILL_LOSSES)
"""Every term a student step returns (and its JSONL log records); "loss" is gt + depth + the distillation terms."""

DISTILL_FACTOR = "distill_factor"
"""With a `distill.weight_schedule` other than constant, a step also returns (and logs) this factor; "loss" is then
gt + depth + factor × the distillation terms, which themselves stay unscaled (curves compare across schedules)."""

STANDARDIZED = {"imd": "cam_bev", "cmd": "lidar_bev", "mmd_f": "fused_bev"}
"""The MSE terms `distill.channel_standardization` applies to, and the teacher map each one's σ_c comes from."""

SIGMA_FLOOR = 1e-3
"""σ_c is clamped from below at this × the median of the array's positive σ_c: a (near-)constant teacher channel
must not get an unbounded weight."""


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


@dataclass(frozen=True)
class ChannelScales:
    """The teacher's per-channel std σ_c of the maps the MSE terms compare (from the store's `channel_stats`),
    clamped from below, on the student's device: with `distill.channel_standardization` IMD, CMD and MMD-F divide
    each channel's squared error by σ_c². Per run, not per batch, so it travels beside the targets."""

    std: dict[str, torch.Tensor]  # array name (cam_bev, lidar_bev, fused_bev) -> [C]

    @classmethod
    def from_std(cls, std: Mapping[str, Sequence[float]], device: torch.device) -> ChannelScales:
        """From array name -> σ [C] as the store keeps it, each clamped at SIGMA_FLOOR × its median positive σ."""
        out = {}
        for name, values in std.items():
            sigma = torch.tensor(list(values), dtype=torch.float32)  # [C]
            positive = sigma[sigma > 0]
            floor = SIGMA_FLOOR * float(positive.median()) if positive.numel() else 1.0
            out[name] = sigma.clamp(min=floor).to(device)
        return cls(std=out)


def standardized_arrays(d: DistillConfig) -> list[str]:
    """The teacher maps whose channel stds the chosen terms need (none without `distill.channel_standardization`)."""
    return [STANDARDIZED[t] for t in d.losses if t in STANDARDIZED] if d.channel_standardization else []


def distill_factor(schedule: str, progress: float) -> float:
    """The factor on the distillation terms at `progress` (steps done / total steps, in [0, 1)): constant 1; ramp_up
    0 → 1 linearly over the LR warm-up (`WARMUP_FRACTION` of the run), then 1; decay 1 → 0 linearly over the run
    (the teacher guides early, GT finishes)."""
    if schedule not in WEIGHT_SCHEDULES:
        raise ConfigError(f"distill.weight_schedule '{schedule}' is unknown; use {', '.join(WEIGHT_SCHEDULES)}")
    if schedule == "ramp_up":
        return min(1.0, progress / WARMUP_FRACTION)
    if schedule == "decay":
        return max(0.0, 1.0 - progress)
    return 1.0


def arrays_needed(losses: tuple[str, ...]) -> list[str]:
    """The store arrays the chosen terms read (the store's schema table is the one source of this)."""
    from simdistill.feature_store import arrays_for_losses

    return arrays_for_losses(losses)


def check_losses_for_variant(losses: tuple[str, ...], variant: str) -> None:
    if variant == "baseline" and "cmd" in losses:
        raise ConfigError("CMD needs the simulated-LiDAR branch, which the baseline variant lacks; use "
                          "--variant simdistill or drop cmd from --losses")


def student_terms(model: nn.Module, batch: Batch, targets: TeacherTargets | None, cfg: Config, *,
                  scales: ChannelScales | None = None, progress: float | None = None) -> dict[str, torch.Tensor]:
    """The named terms (`TERM_KEYS`) of one batch: the student runs on its images only (no LiDAR), unless it was
    built to read LiDAR depth (`model.student_depth_input`, the released code's student: not camera-only)."""
    inner = unwrap(model)
    return distill_terms(model(batch if inner.uses_lidar else batch.without_points()), inner.head, batch, targets,
                         cfg, scales=scales, progress=progress)


def distill_terms(out: BEVOutputs, head: nn.Module, batch: Batch, targets: TeacherTargets | None, cfg: Config, *,
                  scales: ChannelScales | None = None, progress: float | None = None) -> dict[str, torch.Tensor]:
    """The named terms (`TERM_KEYS`; unused distillation terms are 0) of given student outputs. `scales`: the
    teacher's channel stds (needed with `distill.channel_standardization`); `progress`: how far the run is, for
    `distill.weight_schedule` (None, outside a run: no schedule, as constant)."""
    d = cfg.distill
    std = _channel_std(d, scales)
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
        terms["imd"] = imd_loss(out.cam_bev, targets.cam_bev, weight=d.imd_weight, fg_mask=fg,
                                channel_std=std.get("cam_bev"))
    if "cmd" in d.losses:
        terms["cmd"] = cmd_loss(out.lidar_bev, targets.lidar_bev, targets.fg_mask, weight=d.cmd_weight,
                                channel_std=std.get("lidar_bev"))
    if "mmd_f" in d.losses:
        terms["mmd_f"] = mmd_f_loss(out.fused_bev, targets.fused_bev, weight=d.mmd_f_weight, fg_mask=fg,
                                    channel_std=std.get("fused_bev"))
    if "mmd_p" in d.losses:
        terms["mmd_p"] = mmd_p_loss(
            out.heatmap, targets.heatmap, out.boxes, targets.boxes, gt_targets.indices, gt_targets.mask,
            code_weights=head.cfg.code_weights, heatmap_weight=d.mmd_p_heatmap_weight,
            box_weight=d.mmd_p_box_weight, qfl_threshold=d.qfl_threshold,
        )["total"]
    distill = sum(terms[name] for name in DISTILL_LOSSES)
    if progress is None or d.weight_schedule == "constant":
        terms["loss"] = terms["gt"] + terms["depth"] + distill
        return terms
    factor = distill_factor(d.weight_schedule, progress)
    terms["loss"] = terms["gt"] + terms["depth"] + factor * distill
    terms[DISTILL_FACTOR] = zero.new_tensor(factor)
    return terms


def _channel_std(d: DistillConfig, scales: ChannelScales | None) -> dict[str, torch.Tensor]:
    """Array name -> σ_c [C] for the standardised terms (empty when standardisation is off)."""
    wanted = standardized_arrays(d)
    missing = [a for a in wanted if scales is None or a not in scales.std]
    if missing:
        raise ConfigError(f"distill.channel_standardization needs the teacher's channel stds of {', '.join(missing)}; "
                          "train from a store that has them (`simdistill store stats STORE`)")
    return {a: scales.std[a] for a in wanted}


def depth_term(out: BEVOutputs, batch: Batch, cfg: Config) -> torch.Tensor:
    """The depth loss averaged over the student's depth nets, against the batch's key-frame LiDAR depth (the
    batch keeps its points for this; the model itself never read them)."""
    if not batch.points:
        raise ConfigError("student_train.depth_supervision needs the batch's LiDAR points; build it with points")
    targets = depth_bin_targets(batch, (cfg.augment.final_height, cfg.augment.final_width),
                                stride=cfg.model.backbone.feature_stride, dbound=cfg.model.bev.dbound)
    losses = [depth_loss(d, targets.to(d.device), weight=cfg.student_train.depth_loss_weight) for d in out.depths]
    return torch.stack(losses).mean()
