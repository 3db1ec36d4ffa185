"""A picture of one stored view, and box footprints on the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from helpers.store import write_store

from simdistill.config import Config
from simdistill.teacher_export.view_png import box_corners_grid, render_view_png


def test_render_view_png_writes_a_png(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=1)
    boxes = np.array([[0.5, -1.5, 0.0, 4.0, 2.0, 1.5, 0.3, 0.0, 0.0]], np.float32)
    out = render_view_png(str(url), 0, tmp_path / "png" / "view0.png", gt_boxes=boxes)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_box_corners_land_on_the_grid_cells() -> None:
    xbound, ybound = (-8.0, 8.0, 1.0), (-6.0, 6.0, 1.0)
    # centre of cell (row 2, col 5) is x = -8 + 5.5, y = -6 + 2.5; an axis-aligned 2 m x 1 m box around it
    box = np.array([[-2.5, -3.5, 0, 2.0, 1.0, 1.0, 0.0, 0, 0]])
    corners = box_corners_grid(box, xbound, ybound)[0]
    np.testing.assert_allclose(corners.mean(axis=0), [5.0, 2.0])
    np.testing.assert_allclose(np.ptp(corners, axis=0), [2.0, 1.0])
    rotated = box_corners_grid(box * [1, 1, 1, 1, 1, 1, 0, 1, 1] + [0, 0, 0, 0, 0, 0, np.pi / 2, 0, 0], xbound, ybound)
    np.testing.assert_allclose(np.ptp(rotated[0], axis=0), [1.0, 2.0], atol=1e-9)
