"""The feature store schema (DESIGN.md §5) as one declared table.

Every array is indexed by view `v` first (V = samples × views_per_sample) and chunked one view per
chunk, so an export task that owns a range of views owns whole chunk files. Shapes are written with
symbolic dimension names that `dim_sizes` resolves from a Config:

    V        views in the store
    C_cam    cfg.model.channels.cam        C_lidar  cfg.model.channels.lidar
    C_fused  cfg.model.channels.fused      n_cls    len(CLASS_NAMES)
    n_tasks  len(cfg.model.head.tasks)     H, W     cfg.model.bev.grid_size
    P        length of the augmentation replay vector (given at creation)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simdistill.config import CLASS_NAMES, DISTILL_LOSSES, Config
from simdistill.errors import ConfigError
from simdistill.models.head import BOX_CODE_SIZE

SCHEMA_VERSION = 2  # 2: the config section `store` became `store_format`


@dataclass(frozen=True)
class ArraySpec:
    """One stored array: symbolic shape, on-disk dtype, the losses that read it, and what it holds."""

    dims: tuple[str, ...]  # symbolic, first is always "V"
    dtype: str  # dtype on disk
    losses: tuple[str, ...]  # distillation losses that need this array
    doc: str

    @property
    def is_feature(self) -> bool:
        """Float16 teacher outputs (compressed, optionally bit-rounded); the rest is small metadata."""
        return self.dtype == "float16"


SCHEMA: dict[str, ArraySpec] = {
    "cam_bev": ArraySpec(("V", "C_cam", "H", "W"), "float16", ("imd",), "teacher camera BEV"),
    "lidar_bev": ArraySpec(
        ("V", "C_lidar", "H", "W"), "float16", ("cmd",), "teacher LiDAR BEV × (fg_mask > 0); zeros compress away"
    ),
    "fused_bev": ArraySpec(("V", "C_fused", "H", "W"), "float16", ("mmd_f",), "teacher fused BEV"),
    "heatmap": ArraySpec(("V", "n_cls", "H", "W"), "float16", ("mmd_p",), "head logits"),
    "boxes": ArraySpec(
        ("V", "n_tasks", "box", "H", "W"),
        "float16",
        ("mmd_p",),
        "head regression (offset 2, height 1, log-dims 3, sin/cos 2, velocity 2); zero off GT centres if compacted",
    ),
    "fg_mask": ArraySpec(("V", "H", "W"), "float16", ("cmd",), "sum of GT Gaussian heatmaps (CMD mask)"),
    "aug": ArraySpec(("V", "P"), "float32", (), "augmentation replay params"),
    "sample_index": ArraySpec(("V",), "int32", (), "which sample the view belongs to"),
    "view": ArraySpec(("V",), "int16", (), "which view of its sample"),
    "done": ArraySpec(("V",), "bool", (), "set only after the view's data is durable"),
}
"""Array name → spec, in the order arrays are listed everywhere (info tables, verify reports)."""

FEATURE_ARRAYS: tuple[str, ...] = tuple(n for n, s in SCHEMA.items() if s.is_feature)
"""Arrays a TeacherView carries as float features (what the writer transforms and casts)."""

VIEW_ARRAYS: tuple[str, ...] = tuple(n for n in SCHEMA if n != "done")
"""Arrays whose chunks hold a view's data; `done` is written after all of them."""

def dim_sizes(cfg: Config, *, n_views: int, aug_dim: int) -> dict[str, int]:
    """Resolve the symbolic dimension names for a config."""
    h, w = cfg.model.bev.grid_size
    ch = cfg.model.channels
    return {
        "V": n_views,
        "C_cam": ch.cam,
        "C_lidar": ch.lidar,
        "C_fused": ch.fused,
        "n_cls": len(CLASS_NAMES),
        "n_tasks": len(cfg.model.head.tasks),
        "box": BOX_CODE_SIZE,
        "H": h,
        "W": w,
        "P": aug_dim,
    }


def attrs_dim_sizes(attrs: dict[str, Any], *, n_views: int) -> dict[str, int]:
    """The same sizes, read back from a store's group attributes (what `verify_store` checks against)."""
    h, w = attrs["bev"]["grid_size"]
    ch = attrs["channels"]
    return {
        "V": n_views,
        "C_cam": ch["cam"],
        "C_lidar": ch["lidar"],
        "C_fused": ch["fused"],
        "n_cls": len(attrs["class_names"]),
        "n_tasks": len(attrs["tasks"]),
        "box": BOX_CODE_SIZE,
        "H": h,
        "W": w,
        "P": len(attrs["aug_layout"]),
    }


def array_shape(name: str, sizes: dict[str, int]) -> tuple[int, ...]:
    """Full on-disk shape of array `name`, [V, ...]."""
    return tuple(sizes[d] for d in SCHEMA[name].dims)


def view_shape(name: str, sizes: dict[str, int]) -> tuple[int, ...]:
    """Shape of one view's slice of array `name` (the full shape without V)."""
    return array_shape(name, sizes)[1:]


def chunk_shape(name: str, sizes: dict[str, int]) -> tuple[int, ...]:
    """One view per chunk: (1, *view_shape)."""
    return (1, *view_shape(name, sizes))


def arrays_for_losses(losses: list[str] | tuple[str, ...]) -> list[str]:
    """The arrays the given distillation losses read, in schema order.

    `imd` → cam_bev; `cmd` → lidar_bev, fg_mask; `mmd_f` → fused_bev; `mmd_p` → heatmap, boxes
    (its box term also needs the GT-centre indices, which the trainer recomputes from GT boxes).
    """
    unknown = [loss for loss in losses if loss not in DISTILL_LOSSES]
    if unknown:
        raise ConfigError(f"unknown distillation loss '{unknown[0]}'; choose from {', '.join(DISTILL_LOSSES)}")
    return [name for name, spec in SCHEMA.items() if any(loss in spec.losses for loss in losses)]
