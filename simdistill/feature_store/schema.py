"""The feature store schema (DESIGN.md §5) as one declared table.

Every array is indexed by view `v` first (V = samples × views_per_sample) and chunked one view per
chunk, so an export task that owns a range of views owns whole chunk files. Shapes are written with
symbolic dimension names that `StoreLayout.dim_sizes` resolves:

    V        views in the store
    C_cam    layout.cam_channels           C_lidar  layout.lidar_channels
    C_fused  layout.fused_channels         n_cls    len(layout.class_names)
    n_tasks  len(layout.tasks)             H, W     layout.grid_size
    box      BOX_CODE_SIZE                 P        length of the augmentation replay vector (given at creation)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simdistill.config import BOX_CODE_SIZE, CLASS_NAMES, DISTILL_LOSSES, ModelConfig
from simdistill.errors import ConfigError

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

@dataclass(frozen=True)
class StoreLayout:
    """What the stored maps are made of: the BEV grid, the BEV channels, the classes and the head's tasks.

    A store takes this (with the codec settings of `StoreFormatConfig`) instead of an experiment's config; a stage
    makes it from its model config with `StoreLayout.for_model(cfg.model)`.
    """

    xbound: tuple[float, float, float]  # BEV x (min, max, step) [m]; columns
    ybound: tuple[float, float, float]  # BEV y (min, max, step) [m]; rows
    cam_channels: int  # C_cam of cam_bev
    lidar_channels: int  # C_lidar of lidar_bev
    fused_channels: int  # C_fused of fused_bev
    tasks: tuple[tuple[str, ...], ...]  # the head's class groups
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def grid_size(self) -> tuple[int, int]:
        """(H, W) = (ny, nx) cells of every stored BEV map."""
        nx = round((self.xbound[1] - self.xbound[0]) / self.xbound[2])
        ny = round((self.ybound[1] - self.ybound[0]) / self.ybound[2])
        return ny, nx

    @classmethod
    def for_model(cls, model: ModelConfig) -> StoreLayout:
        """The layout of the maps a model of this config makes (the stages' translation of their config)."""
        bev, ch = model.bev, model.channels
        return cls(xbound=_floats(bev.xbound), ybound=_floats(bev.ybound), cam_channels=ch.cam,
                   lidar_channels=ch.lidar, fused_channels=ch.fused, tasks=_tasks(model.head.tasks))

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StoreLayout:
        """The layout a store records in its group attributes."""
        bev, ch = attrs["bev"], attrs["channels"]
        return cls(xbound=_floats(bev["xbound"]), ybound=_floats(bev["ybound"]), cam_channels=ch["cam"],
                   lidar_channels=ch["lidar"], fused_channels=ch["fused"], tasks=_tasks(attrs["tasks"]),
                   class_names=tuple(attrs["class_names"]))

    def to_attrs(self) -> dict[str, Any]:
        """The group attributes that record it (bev, channels, class_names, tasks)."""
        return {
            "bev": {"xbound": list(self.xbound), "ybound": list(self.ybound), "grid_size": list(self.grid_size)},
            "channels": {"cam": self.cam_channels, "lidar": self.lidar_channels, "fused": self.fused_channels},
            "class_names": list(self.class_names),
            "tasks": [list(t) for t in self.tasks],
        }

    def dim_sizes(self, *, n_views: int, aug_dim: int) -> dict[str, int]:
        """Resolve the symbolic dimension names."""
        h, w = self.grid_size
        return {"V": n_views, "C_cam": self.cam_channels, "C_lidar": self.lidar_channels,
                "C_fused": self.fused_channels, "n_cls": len(self.class_names), "n_tasks": len(self.tasks),
                "box": BOX_CODE_SIZE, "H": h, "W": w, "P": aug_dim}


def _floats(bound: Sequence[float]) -> tuple[float, float, float]:
    lo, hi, step = (float(x) for x in bound)
    return lo, hi, step


def _tasks(tasks: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(t) for t in tasks)


def dim_sizes(layout: StoreLayout, *, n_views: int, aug_dim: int) -> dict[str, int]:
    """`layout.dim_sizes(...)`."""
    return layout.dim_sizes(n_views=n_views, aug_dim=aug_dim)


def attrs_dim_sizes(attrs: dict[str, Any], *, n_views: int) -> dict[str, int]:
    """The sizes read back from a store's group attributes (what `verify_store` checks against)."""
    return StoreLayout.from_attrs(attrs).dim_sizes(n_views=n_views, aug_dim=len(attrs["aug_layout"]))


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
