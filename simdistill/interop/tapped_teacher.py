"""Any detector as a simdistill teacher: run it, tap its BEV maps and head outputs by module path.

`TappedTeacher` wraps a foreign model (an mmdetection3d BEVFusion, typically) so that it returns the same
`BEVOutputs` as our own teacher; export-teacher then writes the same store from it. What to tap, how to run the
model, how its head's outputs become the store's heatmap and boxes, and whether its BEV maps are x-major is a
*family* (one explicit table below); single paths can be overridden (`--tap cam_bev=some.module`).
- `bevfusion`: a CenterHead (mmdet3d's output: a tuple over tasks of lists over levels of dicts with
  reg/height/dim/rot/vel/heatmap), whose tasks must equal the simdistill config's `model.head.tasks`; the maps
  are taken as they are.
- `bevfusion-transfusion`: mmdet3d 1.x projects/BEVFusion with its TransFusionHead (simdistill.interop.transfusion):
  the dense heatmap, and the query boxes written around their centres; the x-major maps are transposed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from simdistill.config import ModelConfig
from simdistill.errors import ConfigError
from simdistill.interop.bevfusion_inputs import batch_to_bevfusion_inputs
from simdistill.interop.feature_tap import FeatureTap, resolve_module
from simdistill.interop.teacher_outputs import check_teacher_outputs
from simdistill.interop.transfusion import TRANSFUSION_BOXES, transfusion_head_outputs
from simdistill.models.head import BRANCHES, CenterHead
from simdistill.models.outputs import BEVOutputs
from simdistill.pipeline.sample import Batch

__all__ = ["FAMILIES", "TAP_NAMES", "TapFamily", "TappedTeacher", "centerhead_outputs", "tap_paths"]

TAP_NAMES: tuple[str, ...] = ("cam_bev", "lidar_bev", "fused_bev", "head")
# mmdet3d CenterHead's regression heads carry the same names and sizes as ours, in our box layout's order.
CENTERHEAD_KEYS: tuple[tuple[str, int], ...] = BRANCHES


@dataclass(frozen=True)
class TapFamily:
    """How to feed one kind of detector and where its BEV maps live."""

    name: str
    description: str
    paths: Mapping[str, str]  # TAP_NAMES -> module path in model.named_modules()
    to_inputs: Callable[[Batch], tuple[Any, Any]]  # Batch -> what `run` passes to the model
    run: Callable[[nn.Module, Any, Any], None]  # one forward through every tapped module
    # (tapped head output, the head module, config) -> (heatmap logits [B, n_cls, H, W], boxes [B, T, 10, H, W]),
    # rows = y, in the config's task order
    head_outputs: Callable[[Any, nn.Module, ModelConfig], tuple[torch.Tensor, torch.Tensor]]
    feature_rows: str = "y"  # "x": the tapped BEV maps are [B, C, X, Y] and are transposed to our [B, C, Y, X]
    boxes: str = "dense"  # what the store's teacher.boxes attribute says of the boxes


def _run_bevfusion(model: nn.Module, inputs: dict[str, Any], metas: list[dict[str, Any]]) -> None:
    feats = model.extract_feat(inputs, metas)  # runs vtransform, pts_middle_encoder, fusion_layer, backbone, neck
    model.bbox_head(feats)  # the head's raw outputs (tapped); no decoding


def _run_bevfusion_transfusion(model: nn.Module, inputs: dict[str, Any], metas: list[dict[str, Any]]) -> None:
    feats = model.extract_feat(inputs, metas)  # view_transform, pts_middle_encoder, fusion_layer, backbone, neck
    model.bbox_head(feats, metas)  # TransFusionHead.forward(feats, metas): raw outputs, no decoding


def _centerhead_head_outputs(preds: Any, head: nn.Module, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    return centerhead_outputs(preds, [len(t) for t in cfg.head.tasks])


FAMILIES: dict[str, TapFamily] = {
    "bevfusion": TapFamily(
        name="bevfusion",
        description="BEVFusion's layout with a CenterHead as bbox_head: cam_bev = vtransform (mit-han-lab's name; "
        "mmdetection3d's projects/BEVFusion has view_transform), lidar_bev = pts_middle_encoder, fused_bev = "
        "fusion_layer, maps taken as rows = y",
        paths={"cam_bev": "vtransform", "lidar_bev": "pts_middle_encoder", "fused_bev": "fusion_layer",
               "head": "bbox_head"},
        to_inputs=batch_to_bevfusion_inputs,
        run=_run_bevfusion,
        head_outputs=_centerhead_head_outputs,
    ),
    "bevfusion-transfusion": TapFamily(
        name="bevfusion-transfusion",
        description="mmdetection3d 1.x projects/BEVFusion with its TransFusionHead as bbox_head: cam_bev = "
        "view_transform, lidar_bev = pts_middle_encoder, fused_bev = fusion_layer (x-major maps, transposed); "
        "heatmap = the head's dense_heatmap, boxes = its queries' boxes around their centres",
        paths={"cam_bev": "view_transform", "lidar_bev": "pts_middle_encoder", "fused_bev": "fusion_layer",
               "head": "bbox_head"},
        to_inputs=batch_to_bevfusion_inputs,
        run=_run_bevfusion_transfusion,
        head_outputs=transfusion_head_outputs,
        feature_rows="x",
        boxes=TRANSFUSION_BOXES,
    ),
}


def tap_paths(family: str, overrides: Sequence[str] = ()) -> dict[str, str]:
    """The family's module paths with `NAME=module.path` overrides applied."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown teacher family '{family}'; choose one of {', '.join(FAMILIES)}")
    paths = dict(FAMILIES[family].paths)
    for item in overrides:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not path:
            raise ConfigError(f"tap override '{item}' is not NAME=module.path (e.g. cam_bev=vtransform)")
        if name not in TAP_NAMES:
            raise ConfigError(f"tap override '{item}': unknown name '{name}'; tap one of {', '.join(TAP_NAMES)}")
        paths[name] = path
    return paths


def centerhead_outputs(preds: Any, task_sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdet3d CenterHead forward output -> (heatmap logits [B, n_cls, H, W], boxes [B, T, 10, H, W]).

    `preds[t][0]` is task t's dict at the first (only) level; heatmaps concatenate in task order, boxes
    stack reg(2), height(1), dim(3), rot(2) = (sin, cos), vel(2) per task, which is our layout.
    """
    first = preds[0][0] if isinstance(preds, (list, tuple)) and preds and isinstance(preds[0], list) and preds[0] \
        else None
    if isinstance(first, Mapping) and "dense_heatmap" in first:
        raise ConfigError("the tapped head returns TransFusionHead outputs (dense_heatmap, per-query boxes); use "
                          "--tap-family bevfusion-transfusion")
    if not isinstance(preds, (list, tuple)) or len(preds) != len(task_sizes):
        got = len(preds) if isinstance(preds, (list, tuple)) else type(preds).__name__
        raise ConfigError(f"the tapped head returned {got} task outputs, the config's model.head.tasks has "
                          f"{len(task_sizes)}; tap a CenterHead whose tasks equal model.head.tasks")
    heatmaps, boxes = [], []
    for t, (task, n_cls) in enumerate(zip(preds, task_sizes)):
        level = task[0] if isinstance(task, (list, tuple)) else task
        if not isinstance(level, Mapping) or "heatmap" not in level:
            raise ConfigError("the tapped head does not return CenterHead outputs (dicts with 'heatmap'); tap the "
                              "model's CenterHead (--tap head=module.path)")
        missing = [k for k, _ in CENTERHEAD_KEYS if k not in level]
        if missing:
            raise ConfigError(f"the teacher's CenterHead has no {', '.join(missing)} output; simdistill needs "
                              "common_heads reg(2), height(1), dim(3), rot(2), vel(2)")
        sizes = {k: level[k].shape[1] for k, _ in CENTERHEAD_KEYS}
        if any(sizes[k] != n for k, n in CENTERHEAD_KEYS) or level["heatmap"].shape[1] != n_cls:
            raise ConfigError(f"task {t} of the teacher's CenterHead has channels {sizes} and "
                              f"{level['heatmap'].shape[1]} classes; expected reg 2, height 1, dim 3, rot 2, vel 2 "
                              f"and {n_cls} classes")
        heatmaps.append(level["heatmap"])
        boxes.append(torch.cat([level[k] for k, _ in CENTERHEAD_KEYS], dim=1))  # [B, 10, H, W]
    return torch.cat(heatmaps, dim=1), torch.stack(boxes, dim=1)


class TappedTeacher(nn.Module):
    """A foreign detector that returns simdistill `BEVOutputs` (see the module docstring).

    `head` is a simdistill CenterHead used only for GT target encoding (the store's fg_mask and centre
    indices come from the GT and the simdistill config, never from the teacher); its layers never run.
    """

    uses_lidar = True

    def __init__(self, model: nn.Module, cfg: ModelConfig, *, family: str = "bevfusion",
                 paths: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        if family not in FAMILIES:
            raise ConfigError(f"unknown teacher family '{family}'; choose one of {', '.join(FAMILIES)}")
        self.family = FAMILIES[family]
        self.paths = dict(paths) if paths is not None else dict(self.family.paths)
        self.tap = FeatureTap(model, self.paths)
        self.head = CenterHead(1, cfg.head, cfg.bev)

    @property
    def box_source(self) -> str:
        """What the store's `teacher.boxes` attribute records: "dense", or how the family made its boxes."""
        return self.family.boxes

    def forward(self, batch: Batch) -> BEVOutputs:
        inputs, metas = self.family.to_inputs(batch)
        with self.tap:
            self.family.run(self.model, inputs, metas)
        got = self.tap.require(*TAP_NAMES)
        head = resolve_module(self.model, self.paths["head"].partition("#")[0])
        heatmap, boxes = self.family.head_outputs(got["head"], head, self.cfg)
        maps = {name: got[name] for name in ("cam_bev", "lidar_bev", "fused_bev")}
        if self.family.feature_rows == "x":  # [B, C, X, Y] -> [B, C, Y, X]
            maps = {name: m.transpose(-1, -2) if isinstance(m, torch.Tensor) else m for name, m in maps.items()}
        out = BEVOutputs(**maps, heatmap=heatmap, boxes=boxes)
        sources = {**self.paths, "heatmap": self.paths["head"], "boxes": self.paths["head"]}
        check_teacher_outputs(out, self.cfg, batch.batch_size, sources=sources)
        return out

