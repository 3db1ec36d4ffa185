"""Any detector as a simdistill teacher: run it, tap its BEV maps and head outputs by module path.

`TappedTeacher` wraps a foreign model (an mmdetection3d BEVFusion with a CenterHead, typically) so that it
returns the same `BEVOutputs` as our own teacher; export-teacher then writes the same store from it. What
to tap and how to run the model is a *family* (one explicit table below); single paths can be overridden
(`--tap cam_bev=some.module`). The head must be a CenterHead (mmdet3d's output: a tuple over tasks of
lists over levels of dicts with reg/height/dim/rot/vel/heatmap), because the store's heatmap and box
layout is CenterHead's; its tasks must equal the simdistill config's `model.head.tasks`.
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
from simdistill.interop.feature_tap import FeatureTap
from simdistill.models.head import BOX_CODE_SIZE, BRANCHES, CenterHead
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


def _run_bevfusion(model: nn.Module, inputs: dict[str, Any], metas: list[dict[str, Any]]) -> None:
    feats = model.extract_feat(inputs, metas)  # runs vtransform, pts_middle_encoder, fusion_layer, backbone, neck
    model.bbox_head(feats)  # the head's raw outputs (tapped); no decoding


FAMILIES: dict[str, TapFamily] = {
    "bevfusion": TapFamily(
        name="bevfusion",
        description="mmdetection3d 1.x BEVFusion layout (projects/BEVFusion) with a CenterHead as bbox_head: "
        "cam_bev = vtransform, lidar_bev = pts_middle_encoder, fused_bev = fusion_layer",
        paths={"cam_bev": "vtransform", "lidar_bev": "pts_middle_encoder", "fused_bev": "fusion_layer",
               "head": "bbox_head"},
        to_inputs=batch_to_bevfusion_inputs,
        run=_run_bevfusion,
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
        self.task_sizes = [len(t) for t in cfg.head.tasks]

    def forward(self, batch: Batch) -> BEVOutputs:
        inputs, metas = self.family.to_inputs(batch)
        with self.tap:
            self.family.run(self.model, inputs, metas)
        got = self.tap.require(*TAP_NAMES)
        heatmap, boxes = centerhead_outputs(got["head"], self.task_sizes)
        out = BEVOutputs(cam_bev=got["cam_bev"], lidar_bev=got["lidar_bev"], fused_bev=got["fused_bev"],
                         heatmap=heatmap, boxes=boxes)
        self.check_shapes(out, batch.batch_size)
        return out

    def check_shapes(self, out: BEVOutputs, batch_size: int) -> None:
        """ConfigError unless every tapped map has the shape the simdistill config (and so the store) expects."""
        h, w = self.cfg.bev.grid_size
        ch = self.cfg.channels
        n_cls, n_tasks = sum(self.task_sizes), len(self.task_sizes)
        expected = {
            "cam_bev": ((batch_size, ch.cam, h, w), "model.channels.cam"),
            "lidar_bev": ((batch_size, ch.lidar, h, w), "model.channels.lidar"),
            "fused_bev": ((batch_size, ch.fused, h, w), "model.channels.fused"),
            "heatmap": ((batch_size, n_cls, h, w), "model.head.tasks"),
            "boxes": ((batch_size, n_tasks, BOX_CODE_SIZE, h, w), "model.head.tasks"),
        }
        for name, (shape, key) in expected.items():
            tensor = getattr(out, name)
            if not isinstance(tensor, torch.Tensor):
                raise ConfigError(f"tapped {name} ({self.paths.get(name, 'head')}) is a {type(tensor).__name__}, "
                                  "not a tensor; tap a module that returns the BEV map")
            if tuple(tensor.shape) != shape:
                raise ConfigError(
                    f"the teacher's {name} ({self.paths.get(name, self.paths['head'])}) is {list(tensor.shape)} but "
                    f"the simdistill config expects {list(shape)}; set {key} / model.bev to the teacher's "
                    "(BEV grid (H, W) comes from model.bev xbound/ybound)"
                )
