"""StoreTargets: the teacher's channel statistics come from the store's attributes, or a one-line error naming
`simdistill store stats`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.store import write_store

from simdistill.config import Config
from simdistill.errors import ConfigError
from simdistill.feature_store import channel_stats, write_channel_stats
from simdistill.student_train.target_sources import StoreTargets

CPU = torch.device("cpu")


def test_channel_scales_come_from_the_store_or_name_the_fix(tmp_path: Path, cfg: Config) -> None:
    url = str(tmp_path / "s.zarr")
    write_store(url, cfg)
    before = StoreTargets(url, cfg, ["cam_bev"])
    assert before.channel_stats is None
    with pytest.raises(ConfigError, match=f"cam_bev, fused_bev, which store {url} lacks; run `simdistill store "
                                          f"stats {url}`"):
        before.channel_scales(["cam_bev", "fused_bev"], CPU)
    write_channel_stats(url, channel_stats(url, arrays=("cam_bev",)))
    partial = StoreTargets(url, cfg, ["cam_bev"])
    with pytest.raises(ConfigError, match="of fused_bev, which"):  # stats computed for some arrays only
        partial.channel_scales(["cam_bev", "fused_bev"], CPU)
    stats = channel_stats(url)
    write_channel_stats(url, stats)
    scales = StoreTargets(url, cfg, ["cam_bev"]).channel_scales(["cam_bev", "lidar_bev"], CPU)
    assert set(scales.std) == {"cam_bev", "lidar_bev"}
    for name in ("cam_bev", "lidar_bev"):
        assert torch.equal(scales.std[name], torch.tensor(stats.arrays[name].std, dtype=torch.float32)), name
