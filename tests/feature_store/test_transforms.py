"""Storage transforms: box compaction keeps exactly what MMD-P gathers."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.store import K, random_view

from simdistill.config import Config
from simdistill.errors import StoreError
from simdistill.feature_store import compact_boxes


def test_compact_boxes_keeps_exactly_what_mmd_p_gathers(cfg: Config) -> None:
    rng = np.random.default_rng(1)
    tv = random_view(rng, cfg, 0)
    h, w = cfg.model.bev.grid_size
    compacted = compact_boxes(tv.boxes, tv.centre_indices, tv.centre_mask)
    student = rng.standard_normal(tv.boxes.shape).astype(np.float32)

    def mmd_p_box_term(teacher: np.ndarray) -> float:
        """SmoothL1(beta=1/9) between student and teacher boxes gathered at real GT centres, by hand."""
        total, beta = 0.0, 1.0 / 9.0
        for t in range(teacher.shape[0]):
            for k in range(K):
                if not tv.centre_mask[t, k]:
                    continue
                r, c = divmod(int(tv.centre_indices[t, k]), w)
                d = np.abs(student[t, :, r, c] - teacher[t, :, r, c])
                total += float(np.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta).sum())
        return total

    assert mmd_p_box_term(compacted) == mmd_p_box_term(tv.boxes)
    kept_cells = {(t, int(i)) for t in range(6) for i, m in zip(tv.centre_indices[t], tv.centre_mask[t]) if m}
    nonzero_cells = {(t, r * w + c) for t, r, c in zip(*np.nonzero(np.abs(compacted).sum(axis=1)))}
    assert nonzero_cells == kept_cells
    bad = tv.centre_indices.copy()
    bad[0, 0], tv.centre_mask[0, 0] = h * w, True
    with pytest.raises(StoreError, match="outside the 12x16 BEV grid"):
        compact_boxes(tv.boxes, bad, tv.centre_mask)
