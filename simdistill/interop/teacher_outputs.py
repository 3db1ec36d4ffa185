"""The contract every foreign teacher's result must meet before it reaches the store: five named BEV maps.

A teacher we did not write (a user's `nn.Module`, a tapped mmdet3d detector) returns either `BEVOutputs` or a
mapping with the keys `BEV_MAPS`. `as_bev_outputs` turns the mapping into `BEVOutputs`; `check_teacher_outputs`
refuses, in one line naming the config key to set, a map whose shape is not the one the simdistill config (and
so the store and the student) expects:

    cam_bev   [B, model.channels.cam,   H, W]
    lidar_bev [B, model.channels.lidar, H, W]
    fused_bev [B, model.channels.fused, H, W]
    heatmap   [B, n_cls, H, W]      logits; channels in the flattened order of model.head.tasks
    boxes     [B, T, 10, H, W]      T = len(model.head.tasks); models.head's box layout

with (H, W) = model.bev.grid_size: rows follow y (model.bev.ybound), columns follow x (model.bev.xbound).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from simdistill.config import BOX_CODE_SIZE, ModelConfig
from simdistill.errors import ConfigError
from simdistill.models.outputs import BEVOutputs

__all__ = ["BEV_MAPS", "as_bev_outputs", "check_teacher_outputs", "expected_shapes"]

BEV_MAPS: tuple[str, ...] = ("cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes")
"""What a teacher returns and the store keeps of it (fg_mask and the GT centres come from the GT, not the teacher)."""
CODE_HINT = "each box code has 10 values: offset x, y (cells), z, log l, w, h, sin, cos yaw, vx, vy"


def as_bev_outputs(result: Any, *, source: str) -> BEVOutputs:
    """A teacher's forward result (`BEVOutputs`, or a mapping with every name of BEV_MAPS) as `BEVOutputs`.

    Keys beyond BEV_MAPS are ignored, so a model may return more for its own use. `source` names the teacher in
    errors (e.g. its factory spec).
    """
    if isinstance(result, BEVOutputs):
        return result
    if not isinstance(result, Mapping):
        raise ConfigError(f"the teacher ({source}) returned a {type(result).__name__}; return BEVOutputs or a dict "
                          f"with {', '.join(BEV_MAPS)}")
    missing = [name for name in BEV_MAPS if name not in result]
    if missing:
        raise ConfigError(f"the teacher ({source}) returned no {', '.join(missing)}; its dict must hold "
                          f"{', '.join(BEV_MAPS)} (docs/own-teacher.md)")
    return BEVOutputs(**{name: result[name] for name in BEV_MAPS})


def expected_shapes(cfg: ModelConfig, batch_size: int) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """Map name -> (the shape the config expects, the config key that sets each dimension)."""
    h, w = cfg.bev.grid_size
    ch = cfg.channels
    n_cls, n_tasks = sum(len(t) for t in cfg.head.tasks), len(cfg.head.tasks)
    batch, rows, cols = "", "model.bev.ybound", "model.bev.xbound"
    return {
        "cam_bev": ((batch_size, ch.cam, h, w), (batch, "model.channels.cam", rows, cols)),
        "lidar_bev": ((batch_size, ch.lidar, h, w), (batch, "model.channels.lidar", rows, cols)),
        "fused_bev": ((batch_size, ch.fused, h, w), (batch, "model.channels.fused", rows, cols)),
        "heatmap": ((batch_size, n_cls, h, w), (batch, "model.head.tasks", rows, cols)),
        "boxes": ((batch_size, n_tasks, BOX_CODE_SIZE, h, w),
                  (batch, "model.head.tasks", CODE_HINT, rows, cols)),
    }


def check_teacher_outputs(out: BEVOutputs, cfg: ModelConfig, batch_size: int, *,
                          sources: Mapping[str, str]) -> None:
    """ConfigError unless every map of `out` is a tensor of the shape `cfg` expects (see the module docstring).

    `sources[name]` says where a map came from (a tap path, a factory spec) for the message, which names the first
    dimension that differs and the key that sets it. A heatmap with every value in [0, 1] is refused too: it looks
    like probabilities, and MMD-P would apply a second sigmoid to it without a sign of trouble.
    """
    for name, (shape, keys) in expected_shapes(cfg, batch_size).items():
        tensor = getattr(out, name)
        where = sources.get(name, "")
        label = f"the teacher's {name} ({where})" if where else f"the teacher's {name}"
        if not isinstance(tensor, torch.Tensor):
            raise ConfigError(f"{label} is a {type(tensor).__name__}, not a tensor; return (or tap) the BEV map itself")
        got = tuple(tensor.shape)
        if got != shape:
            raise ConfigError(f"{label} is {list(got)} but the simdistill config expects {list(shape)}; "
                              f"{_shape_hint(got, shape, keys)}")
    heatmap = out.heatmap.detach()
    if heatmap.numel() and bool(heatmap.min() >= 0) and bool(heatmap.max() <= 1):
        where = sources.get("heatmap", "")
        raise ConfigError(f"the teacher's heatmap{f' ({where})' if where else ''} lies entirely in [0, 1], like "
                          "probabilities; return logits (the values before the sigmoid)")


def _shape_hint(got: tuple[int, ...], shape: tuple[int, ...], keys: tuple[str, ...]) -> str:
    if len(got) != len(shape):
        return f"it must have {len(shape)} dimensions"
    dim = next(i for i, (a, b) in enumerate(zip(got, shape)) if a != b)
    if dim == 0:
        return "return one map per sample of the batch"
    if not keys[dim].startswith("model."):
        return keys[dim]
    hint = f"dimension {dim} differs: set {keys[dim]} to the teacher's"
    if dim >= len(shape) - 2:
        hint += " (rows follow y, columns x: (H, W) = model.bev.grid_size)"
    return hint
