"""The teacher an export (or an online-teacher run) uses, and what the store records of it.

`cfg.export.teacher` picks it: "simdistill" is a train-teacher checkpoint whose model config must equal
`cfg.model`; "mmdet3d" is the detector of `cfg.export.teacher_config`, tapped (simdistill.interop);
"python" is whatever `torch.nn.Module` the factory `cfg.export.teacher_factory` builds
(simdistill.interop.python_teacher, docs/own-teacher.md). This module is the one place that choice is made.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from simdistill.config import Config, config_to_dict, first_difference, validate
from simdistill.errors import CheckpointError
from simdistill.interop.python_teacher import factory_spec, load_python_teacher, python_teacher_identity
from simdistill.models import build_model
from simdistill.training.checkpoint import file_sha256, load_checkpoint


def _architecture(model: dict[str, Any] | None) -> dict[str, Any] | None:
    """The model config without the image backbone's initialisation: where the pretrained weights were read from
    does not change the network a checkpoint holds (a moved or linked benchmark folder must still export)."""
    if not isinstance(model, dict) or not isinstance(model.get("backbone"), dict):
        return model
    return {**model, "backbone": {k: v for k, v in model["backbone"].items() if k != "pretrained"}}


def check_teacher_checkpoint(cfg: Config, checkpoint: Path) -> dict[str, Any]:
    """The checkpoint must be a teacher whose architecture matches cfg.model (a clear error otherwise)."""
    payload = load_checkpoint(checkpoint, expect_kind="teacher")
    theirs = _architecture(payload["config"].get("model"))
    ours = _architecture(config_to_dict(cfg.model))
    if theirs != ours:
        key, mine, stored = first_difference(ours, theirs, "model") or ("model", ours, theirs)
        diff = f"{key}: config {mine!r} vs checkpoint {stored!r}"
        raise CheckpointError(
            f"checkpoint '{checkpoint}' was trained with a different model config ({diff}); export with the "
            "config it was trained with"
        )
    for key in ("final_height", "final_width"):
        if payload["config"]["augment"][key] != getattr(cfg.augment, key):
            raise CheckpointError(f"checkpoint '{checkpoint}' expects augment.{key}="
                                  f"{payload['config']['augment'][key]}, the config says {getattr(cfg.augment, key)}")
    return payload


def load_teacher(cfg: Config, checkpoint: Path, *, device: str = "cpu") -> nn.Module:
    """The frozen teacher in eval mode; it returns `BEVOutputs` and has a `head` for GT target encoding."""
    checkpoint = Path(checkpoint)
    if cfg.export.teacher == "mmdet3d":
        from simdistill.interop.mmdet3d_teacher import load_mmdet3d_teacher

        model = load_mmdet3d_teacher(cfg, checkpoint, device=device)
    elif cfg.export.teacher == "python":
        model = load_python_teacher(cfg, checkpoint)
    else:
        payload = check_teacher_checkpoint(cfg, checkpoint)
        model = build_model("teacher", cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
        model.load_state_dict(payload["model"])
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def describe_teacher(cfg: Config, checkpoint: Path) -> dict[str, Any]:
    """Check the teacher loads (a clear error before any worker starts) and return what the store records of it.

    `boxes` says how the stored boxes were made: "dense" (a CenterHead's regression at every cell) or, for a
    query-based head, how its queries were written into the grid (simdistill.interop.transfusion).
    """
    checkpoint = Path(checkpoint)
    model = load_teacher(cfg, checkpoint)  # config, weights (mmdet3d: tap paths, head tasks; python: factory) checked
    if cfg.export.teacher == "mmdet3d":
        from simdistill.interop.mmdet3d_teacher import mmdet3d_teacher_identity

        identity = mmdet3d_teacher_identity(cfg, checkpoint)
    elif cfg.export.teacher == "python":
        identity = python_teacher_identity(cfg, checkpoint)
    else:
        identity = {"name": "simdistill-bevfusion", "checkpoint": str(checkpoint.resolve())}
    return {**identity, "boxes": str(getattr(model, "box_source", "dense")),
            "checkpoint_sha256": file_sha256(checkpoint), "config": config_to_dict(cfg.model)}


def with_teacher_factory(cfg: Config, factory: str | Callable[..., Any]) -> Config:
    """A copy of `cfg` whose teacher is the python module `factory` builds (a spec string or a module-level
    function; simdistill.interop.python_teacher), validated as a config is."""
    cfg = copy.deepcopy(cfg)
    cfg.export.teacher = "python"
    cfg.export.teacher_factory = factory_spec(factory)
    cfg.export.teacher_config, cfg.export.taps = "", ()
    validate(cfg)
    return cfg
