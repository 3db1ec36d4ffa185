"""The store's schema table: shapes from the layout, the arrays each loss reads."""

from __future__ import annotations

import pytest
from helpers.store import P, layout

from simdistill.config import Config
from simdistill.errors import ConfigError
from simdistill.feature_store import arrays_for_losses
from simdistill.feature_store.schema import array_shape, dim_sizes


def test_arrays_for_losses_follows_the_schema_table() -> None:
    assert arrays_for_losses(["imd"]) == ["cam_bev"]
    assert arrays_for_losses(["cmd"]) == ["lidar_bev", "fg_mask"]
    assert arrays_for_losses(["mmd_f"]) == ["fused_bev"]
    assert arrays_for_losses(["mmd_p"]) == ["heatmap", "boxes"]
    assert arrays_for_losses(["mmd_p", "imd"]) == ["cam_bev", "heatmap", "boxes"]  # schema order
    everything = ["cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes", "fg_mask"]
    assert arrays_for_losses(["imd", "cmd", "mmd_f", "mmd_p"]) == everything
    with pytest.raises(ConfigError, match="unknown distillation loss 'kd'"):
        arrays_for_losses(["kd"])


def test_schema_shapes_come_from_config(cfg: Config) -> None:
    sizes = dim_sizes(layout(cfg), n_views=9, aug_dim=P)
    assert array_shape("cam_bev", sizes) == (9, 4, 12, 16)
    assert array_shape("lidar_bev", sizes) == (9, 6, 12, 16)
    assert array_shape("fused_bev", sizes) == (9, 5, 12, 16)
    assert array_shape("heatmap", sizes) == (9, 10, 12, 16)
    assert array_shape("boxes", sizes) == (9, 6, 10, 12, 16)
    assert array_shape("fg_mask", sizes) == (9, 12, 16)
    assert array_shape("aug", sizes) == (9, P)
    assert array_shape("done", sizes) == (9,)
