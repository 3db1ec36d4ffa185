"""store_info: sizes and compression ratios."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr
from helpers.store import N_SAMPLES, N_VIEWS, SHA, write_store

from simdistill.config import Config
from simdistill.feature_store import store_info
from simdistill.feature_store.schema import SCHEMA


def test_info_reports_sizes_and_ratios(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=4, fg_fraction=0.05)  # LiDAR BEV is mostly masked away
    info = store_info(str(url))
    assert (info.n_views, info.n_done, info.mode) == (N_VIEWS, 4, "lossless")
    assert info.teacher["checkpoint_sha256"] == SHA and info.dataset["samples"] == N_SAMPLES
    arrays = {a.name: a for a in info.arrays}
    assert list(arrays) == list(SCHEMA)
    assert all(a.bytes > 0 for a in arrays.values())
    assert info.bytes_total > sum(a.bytes for a in arrays.values())  # plus metadata
    lidar, cam = arrays["lidar_bev"], arrays["cam_bev"]
    assert lidar.ratio_vs_f16 > 3 and lidar.bits_per_value < cam.bits_per_value
    assert lidar.values == 4 * 6 * 12 * 16
    assert lidar.ratio_vs_f32 == pytest.approx(2 * lidar.ratio_vs_f16)
    assert lidar.bits_per_value == pytest.approx(16 / lidar.ratio_vs_f16)
    assert lidar.bytes_per_view == pytest.approx(lidar.bytes / 4)
    assert 0 < info.feature_bits_per_value < 16
    text = info.to_text()
    assert "lidar_bev" in text and "views done 4/6" in text and "lossless" in text
