"""`render_view_png`: a picture of one stored view, for eyeballing what the teacher cached.

Panels: the channel L2 norm of cam / LiDAR / fused BEV and the max-over-classes sigmoid heatmap,
each with the fg_mask outline and, optionally, GT boxes as rotated rectangles. Grid convention
(as everywhere in the BEV code): row ↔ y over `ybound`, column ↔ x over `xbound`, drawn with y up.
Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from simdistill.feature_store import StoreLike, open_store
from simdistill.pipeline.geometry import box_corners

PANELS = (
    ("cam_bev", "cam BEV |x|₂"),
    ("lidar_bev", "LiDAR BEV |x|₂ (× fg)"),
    ("fused_bev", "fused BEV |x|₂"),
    ("heatmap", "max class σ(heatmap)"),
)


def box_corners_grid(boxes: np.ndarray, xbound: tuple[float, ...], ybound: tuple[float, ...]) -> np.ndarray:
    """[M, 9] LiDAR-frame boxes → [M, 4, 2] BEV footprint corners as (col, row) in image coordinates."""
    footprint = box_corners(boxes)[:, :4, :2]  # [M, 4, 2] bottom face (x, y) [m]
    col = (footprint[..., 0] - xbound[0]) / xbound[2] - 0.5  # pixel i spans [i - 0.5, i + 0.5] in imshow coordinates
    row = (footprint[..., 1] - ybound[0]) / ybound[2] - 0.5
    return np.stack([col, row], axis=-1)


def render_view_png(url: StoreLike, v: int, out_png: str | Path, *, gt_boxes: np.ndarray | None = None) -> Path:
    """Render view `v` of the store at `url` to `out_png`; `gt_boxes` [M, 9] in the view's LiDAR frame."""
    reader = open_store(url, arrays=[name for name, _ in PANELS] + ["fg_mask"])
    data = reader.read_view(v, [name for name, _ in PANELS] + ["fg_mask"])
    bev = reader.attrs["bev"]
    images = {name: np.sqrt((data[name] ** 2).sum(axis=0)) for name, _ in PANELS[:3]}
    images["heatmap"] = 1.0 / (1.0 + np.exp(-data["heatmap"].max(axis=0)))
    fg = data["fg_mask"]

    fig = Figure(figsize=(4 * len(PANELS), 4.4))
    FigureCanvasAgg(fig)
    corners = None
    if gt_boxes is not None:
        corners = box_corners_grid(np.asarray(gt_boxes, np.float64), bev["xbound"], bev["ybound"])  # [M, 4, 2]
    for i, (name, title) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), i + 1)
        im = ax.imshow(images[name], origin="lower", cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if fg.max() > 0.1:
            ax.contour(fg, levels=[0.1], colors="cyan", linewidths=0.6, origin="lower")
        if corners is not None:
            for quad in corners:
                ax.add_patch(Polygon(quad, closed=True, fill=False, edgecolor="lime", linewidth=0.8))
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-0.5, fg.shape[1] - 0.5)
        ax.set_ylim(-0.5, fg.shape[0] - 0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{url} — view {v}", fontsize=10)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
