"""What the writer does to a teacher view before storing it (DESIGN.md §5).

1. `lidar_bev × (fg_mask > 0)`: CMD only compares LiDAR features under the foreground mask, so
   the rest is dropped and compresses to nothing.
2. `compact_boxes`: MMD-P's box term reads teacher box regressions only at the GT centre cells of
   real objects, so every other cell is zeroed (optional, `store_format.compact_boxes`).
3. Cast to float16, refusing values that float16 (or, in lossy mode, bit-rounding) cannot hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numcodecs import BitRound

from simdistill.config import StoreFormatConfig
from simdistill.errors import StoreError
from simdistill.feature_store.codecs import (
    FLOAT16_MAX,
    lossy_arrays,
    lossy_max_abs,
    quantize_roundtrip,
    quantized_arrays,
)
from simdistill.feature_store.schema import FEATURE_ARRAYS, view_shape

FOREGROUND_MASKED: tuple[str, ...] = ("lidar_bev",)
"""Arrays stored × (fg_mask > 0): CMD compares only foreground cells, so the rest is dropped (transform 1)."""


@dataclass
class TeacherView:
    """The teacher's outputs for ONE augmented view, as the exporter hands them to the writer."""

    cam_bev: np.ndarray  # [C_cam, H, W] float32
    lidar_bev: np.ndarray  # [C_lidar, H, W] float32
    fused_bev: np.ndarray  # [C_fused, H, W] float32
    heatmap: np.ndarray  # [n_cls, H, W] float32 logits
    boxes: np.ndarray  # [T, 10, H, W] float32
    fg_mask: np.ndarray  # [H, W] float32
    aug: np.ndarray  # [P] float32 replay params
    sample_index: int
    view: int
    centre_indices: np.ndarray  # [T, K] int64, row * W + col of each GT centre
    centre_mask: np.ndarray  # [T, K] bool, which of the K slots are real objects


def compact_boxes(boxes: np.ndarray, centre_indices: np.ndarray, centre_mask: np.ndarray) -> np.ndarray:
    """Zero the box regressions everywhere except at the GT centre cells of real objects.

    boxes          [T, 10, H, W]
    centre_indices [T, K] flat cell index row * W + col (the head's target indices)
    centre_mask    [T, K] True for real objects, False for padding slots
    Returns a new [T, 10, H, W] array equal to `boxes` at every (t, :, cell) that MMD-P gathers
    (`boxes.reshape(T, 10, H*W)[t, :, centre_indices[t, k]]` with `centre_mask[t, k]`), zero elsewhere.
    """
    t, code, h, w = boxes.shape
    if centre_indices.shape != centre_mask.shape or centre_indices.shape[0] != t:
        raise StoreError(
            f"centre_indices {centre_indices.shape} and centre_mask {centre_mask.shape} must both be [T={t}, K]; "
            "pass the head targets' indices and mask"
        )
    flat = boxes.reshape(t, code, h * w)
    out = np.zeros_like(flat)
    for task in range(t):
        cells = centre_indices[task][centre_mask[task]]
        if cells.size and (cells.min() < 0 or cells.max() >= h * w):
            raise StoreError(
                f"centre index {int(cells.max() if cells.max() >= h * w else cells.min())} of task {task} is outside "
                f"the {h}x{w} BEV grid; centre indices must be row * W + col of cells inside the grid"
            )
        out[task][:, cells] = flat[task][:, cells]
    return out.reshape(t, code, h, w)


def to_float16(x: np.ndarray, *, name: str, v: int, lossy_limit: float | None = None) -> np.ndarray:
    """Cast to float16, refusing (StoreError naming view and array) NaN/inf and values float16 cannot hold.

    `lossy_limit`: for bit-rounded arrays, |float16 value| must stay below it (`codecs.lossy_max_abs`).
    """
    if not np.all(np.isfinite(x)):
        raise StoreError(f"view {v} array '{name}' has NaN or infinite values; fix the teacher output before export")
    with np.errstate(over="ignore"):
        y = x.astype(np.float16)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if math.isinf(peak) or (lossy_limit is not None and peak >= lossy_limit):
        limit = FLOAT16_MAX if lossy_limit is None else lossy_limit
        fix = "scale the teacher output down"
        if lossy_limit is not None:
            fix += " or turn off lossy mode for this array"
        raise StoreError(
            f"view {v} array '{name}' has |value| {float(np.max(np.abs(x))):.6g}, beyond what the store keeps "
            f"in float16 (< {limit:g}); {fix}"
        )
    return y


def prepare_view(
    view: TeacherView,
    v: int,
    *,
    sizes: dict[str, int],
    compact: bool,
    lossy: dict[str, int],
) -> dict[str, np.ndarray]:
    """Check shapes, apply the storage transforms and cast: array name → one view's on-disk values.

    `lossy` maps bit-rounded array names to their keepbits (their range bound is tighter).
    """
    for name in (*FEATURE_ARRAYS, "aug"):
        got, want = np.shape(getattr(view, name)), view_shape(name, sizes)
        if got != want:
            raise StoreError(f"view {v} array '{name}' has shape {got}, the store expects {want}; check the config")
    fg = np.asarray(view.fg_mask, dtype=np.float32)
    values = {
        "cam_bev": view.cam_bev,
        "lidar_bev": view.lidar_bev,
        "fused_bev": view.fused_bev,
        "heatmap": view.heatmap,
        "boxes": compact_boxes(view.boxes, view.centre_indices, view.centre_mask) if compact else view.boxes,
        "fg_mask": fg,
    }
    for name in FOREGROUND_MASKED:
        values[name] = np.asarray(values[name], dtype=np.float32) * (fg > 0)[None]
    out = {
        name: to_float16(
            np.asarray(x, dtype=np.float32),
            name=name,
            v=v,
            lossy_limit=lossy_max_abs(lossy[name]) if name in lossy else None,
        )
        for name, x in values.items()
    }
    out["aug"] = np.asarray(view.aug, dtype=np.float32)
    out["sample_index"] = np.asarray(view.sample_index, dtype=np.int32)
    out["view"] = np.asarray(view.view, dtype=np.int16)
    return out


def stored_values(view: TeacherView, *, sizes: dict[str, int], store_format: StoreFormatConfig) -> dict[str, np.ndarray]:
    """What a store of `store_format` would give back for this view: the storage transforms, float16 and (in lossy
    mode) bit-rounding or per-plane quantisation applied, as float32 arrays like `FeatureStoreReader.read_views`
    returns. An online teacher whose targets pass through this is bit for bit the cached teacher."""
    lossy = {name: store_format.lossy_keepbits for name in lossy_arrays(store_format)}
    quantized = quantized_arrays(store_format)
    values = prepare_view(view, 0, sizes=sizes, compact=store_format.compact_boxes, lossy=lossy)
    out = {}
    for name in FEATURE_ARRAYS:
        x = values[name]
        if name in lossy:
            x = BitRound(keepbits=lossy[name]).decode(BitRound(keepbits=lossy[name]).encode(x)).reshape(x.shape)
        if name in quantized:
            x = quantize_roundtrip(x, store_format.quantize_bits, store_format.quantize_step)  # the planes of one view's chunk
        out[name] = np.asarray(x, dtype=np.float16).astype(np.float32)
    return out
