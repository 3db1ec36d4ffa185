"""Teachers we did not write: any torch module (docs/own-teacher.md) and mmdetection3d detectors, the optional extra
`simdistill[mmdet3d]` (docs/mmdet3d.md).

`teacher_outputs` (the five maps a teacher must return, and their shape checks), `python_teacher` (a user's
module built by a factory spec), `feature_tap`, `tapped_teacher`, `transfusion` and `bevfusion_inputs` are plain
PyTorch; `simdistill.teacher.loader` is the one place that picks among them. `mmdet3d_teacher` (build a user's
detector) and `mmdet3d_cpu_bevfusion` (a BEVFusion-layout detector that runs on the CPU) need mmdet3d and reach
it through `require_mmdet3d`, which turns a missing install into a clear error; nothing imports them unless the
teacher is an mmdet3d one. The mmdet3d info-file data source lives with the other sources in `pipeline/`.
"""

from __future__ import annotations

from types import ModuleType

from simdistill.errors import ConfigError

INSTALL_HINT = "install the extra: bash scripts/install_mmdet3d.sh (builds mmcv 2.1.0, then installs '.[mmdet3d]')"


def require_mmdet3d() -> ModuleType:
    """Import mmdet3d (and check mmcv's compiled ops are there), or raise a ConfigError saying how to install it."""
    try:
        import mmdet3d
        from mmcv import ops  # noqa: F401 - mmcv-lite lacks these; mmdet3d.structures needs them
    except ImportError as exc:
        raise ConfigError(f"mmdetection3d is not usable here ({exc}); {INSTALL_HINT}") from None
    return mmdet3d
