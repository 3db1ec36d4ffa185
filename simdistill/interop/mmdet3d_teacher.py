"""Build a user's mmdetection3d detector from its config and checkpoint, wrapped as a `TappedTeacher`.

Checkpoints are read with `torch.load(weights_only=True)` (plus numpy's array reconstruction, which
mmengine checkpoints carry in their `meta`): a checkpoint that needs arbitrary unpickling is refused with
the one-line recipe to strip it to its weights in a trusted environment.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simdistill.config import Config
from simdistill.errors import CheckpointError, ConfigError
from simdistill.interop import require_mmdet3d
from simdistill.interop.bevfusion_inputs import check_preprocessor
from simdistill.interop.tapped_teacher import TappedTeacher, tap_paths

__all__ = ["load_mmdet3d_teacher", "mmdet3d_teacher_identity", "read_mmdet3d_config", "read_state_dict"]

# numpy arrays and scalars, as mmengine checkpoints hold in `meta`: reconstruction, and the dtype classes.
_NUMPY_SAFE: list[Any] = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, np.core.multiarray.scalar] + [
    type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                                np.uint64, np.float16, np.float32, np.float64, np.str_)
]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of an mmengine/mmdet3d checkpoint (`state_dict`, or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint {path} does not exist; pass the .pth your mmdet3d training wrote")
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "got <" in ln or "Unsupported global" in ln),
                     lines[0] if lines else type(exc).__name__)
        raise CheckpointError(
            f"checkpoint {path} cannot be read with weights_only=True ({first[:160]}); in an environment you trust, "
            "keep only its weights: python -c \"import torch; c = torch.load('IN.pth', weights_only=False); "
            "torch.save({'state_dict': c['state_dict']}, 'OUT.pth')\""
        ) from None
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state_dict of tensors; pass an mmdet3d model checkpoint")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_mmdet3d_config(path: Path) -> Any:
    """The mmengine Config of a model config file (its custom_imports are imported, as mmdet3d does)."""
    require_mmdet3d()
    from mmengine.config import Config as MMConfig

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"teacher config {path} does not exist; pass the mmdet3d model config (.py) it was trained "
                          "with (--teacher-config)")
    try:
        mcfg = MMConfig.fromfile(str(path))
    except (ImportError, SyntaxError, KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read mmdet3d config {path}: {exc}") from None
    if "model" not in mcfg:
        raise ConfigError(f"mmdet3d config {path} defines no `model`; pass a model config")
    return mcfg


def _check_head_tasks(mcfg: Any, cfg: Config, path: Path) -> None:
    head = mcfg.model.get("bbox_head") or mcfg.model.get("pts_bbox_head")
    if not head or "tasks" not in head:
        return  # the tap reports a non-CenterHead head at the first forward
    theirs = [tuple(t["class_names"]) for t in head["tasks"]]
    ours = [tuple(t) for t in cfg.model.head.tasks]
    if theirs != ours:
        raise ConfigError(f"the teacher's CenterHead tasks {theirs} (in {path}) differ from model.head.tasks {ours}; "
                          "set model.head.tasks to the teacher's")


def load_mmdet3d_teacher(cfg: Config, checkpoint: Path, *, device: str = "cpu") -> TappedTeacher:
    """The detector of cfg.export.teacher_config with `checkpoint`'s weights, tapped per cfg.export, in eval mode."""
    require_mmdet3d()
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    config_path = Path(cfg.export.teacher_config)
    mcfg = read_mmdet3d_config(config_path)
    check_preprocessor(mcfg.model.get("data_preprocessor"))
    _check_head_tasks(mcfg, cfg, config_path)
    paths = tap_paths(cfg.export.tap_family, cfg.export.taps)
    init_default_scope(mcfg.get("default_scope", "mmdet3d"))
    try:
        model = MODELS.build(mcfg.model)
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"cannot build the model of {config_path}: {str(exc).splitlines()[0]}") from None
    checkpoint = Path(checkpoint)
    state = read_state_dict(checkpoint)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing (e.g. {', '.join(result.missing_keys[:3])})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected (e.g. {', '.join(result.unexpected_keys[:3])})")
        raise CheckpointError(f"checkpoint {checkpoint} does not fit the model of {cfg.export.teacher_config}: "
                              f"{'; '.join(parts)} weights; pass the config the checkpoint was trained with")
    teacher = TappedTeacher(model, cfg.model, family=cfg.export.tap_family, paths=paths)
    return teacher.to(device).eval()


def mmdet3d_teacher_identity(cfg: Config, checkpoint: Path) -> dict[str, Any]:
    """What the store records about an mmdet3d teacher (and what a resumed export must match)."""
    config_path = Path(cfg.export.teacher_config).resolve()
    checkpoint = Path(checkpoint).resolve()
    return {
        "name": "mmdet3d",
        "family": cfg.export.tap_family,
        "taps": tap_paths(cfg.export.tap_family, cfg.export.taps),
        "mmdet3d_config": str(config_path),
        "mmdet3d_config_sha256": hashlib.sha256(config_path.read_bytes()).hexdigest(),
        "checkpoint": str(checkpoint),
    }
