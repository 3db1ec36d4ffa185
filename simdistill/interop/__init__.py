"""Interop with mmdetection3d, the optional extra `simdistill[mmdet3d]` (see README, "mmdetection3d interop").

Nothing here is imported by the core package: `feature_tap` is plain PyTorch, and the modules that need
mmdet3d import it lazily through `require_mmdet3d`, which turns a missing install into a clear error.
"""

from __future__ import annotations

from types import ModuleType

from simdistill.errors import ConfigError

INSTALL_HINT = "install the extra: bash scripts/install_mmdet3d.sh (builds mmcv 2.1.0, then pip install -e '.[mmdet3d]')"


def require_mmdet3d() -> ModuleType:
    """Import mmdet3d (and check mmcv's compiled ops are there), or raise a ConfigError saying how to install it."""
    try:
        import mmdet3d  # noqa: F401
        from mmcv import ops  # noqa: F401 - mmcv-lite lacks these; mmdet3d.structures needs them
    except ImportError as exc:
        raise ConfigError(f"mmdetection3d is not usable here ({exc}); {INSTALL_HINT}") from None
    import mmdet3d

    return mmdet3d
