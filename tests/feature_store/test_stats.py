"""Channel statistics: numpy's mean/std of what the store holds (foreground cells for lidar_bev), kept in the group
attributes, computed by `simdistill store stats` and shown by `simdistill store info`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers.store import N_VIEWS, P, make_attrs, random_view, store_args, write_store
from typer.testing import CliRunner

from simdistill.cli import app
from simdistill.config import Config
from simdistill.errors import StoreError
from simdistill.feature_store import (
    ChannelStats,
    channel_stats,
    create_store,
    open_store,
    read_channel_stats,
    store_info,
    write_channel_stats,
)
from simdistill.feature_store.lock import export_lock
from simdistill.feature_store.stats import STATS_KEY, sample_views

runner = CliRunner()
CAM_SCALE = np.array([0.5, 1.0, 4.0, 20.0], dtype=np.float32)[:, None, None]  # per-channel std × 3 (random_view)
CAM_OFFSET = np.array([100.0, -3.0, 0.0, 50.0], dtype=np.float32)[:, None, None]


def _scaled_store(path: Path, cfg: Config) -> None:
    """A store whose cam_bev channels differ in scale and offset (axis mix-ups show), lidar_bev masked by fg."""
    rng = np.random.default_rng(3)
    writer = create_store(path, **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    with writer.lock():
        for v in range(N_VIEWS):
            tv = random_view(rng, cfg, v, fg_fraction=0.3)
            tv.cam_bev = tv.cam_bev * CAM_SCALE + CAM_OFFSET
            writer.write_view(v, tv)


def _numpy_stats(url: Path, name: str, views: list[int], *, foreground: bool) -> tuple[np.ndarray, np.ndarray]:
    """numpy's per-channel mean and std of the stored values (float64), over every cell or the fg_mask > 0 cells."""
    got = open_store(url).read_views(views, [name, "fg_mask"])
    x = got[name].astype(np.float64)  # [V, C, H, W]
    cells = np.ones(got["fg_mask"].shape, bool) if not foreground else got["fg_mask"] > 0  # [V, H, W]
    per_channel = [x[:, c][cells] for c in range(x.shape[1])]
    return np.array([p.mean() for p in per_channel]), np.array([p.std() for p in per_channel])


def test_stats_equal_numpy_over_all_cells_and_foreground_cells(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    _scaled_store(url, cfg)
    stats = channel_stats(url)
    assert (stats.views, stats.of_views) == (N_VIEWS, N_VIEWS)
    views = list(range(N_VIEWS))
    for name in ("cam_bev", "fused_bev"):
        mean, std = _numpy_stats(url, name, views, foreground=False)
        a = stats.arrays[name]
        np.testing.assert_allclose(a.mean, mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.std, std, rtol=1e-12)
        assert not a.foreground_only and a.cells == N_VIEWS * 12 * 16
    assert np.ptp(np.log(stats.arrays["cam_bev"].std)) > np.log(20)  # the channels' scales are seen apart
    mean, std = _numpy_stats(url, "lidar_bev", views, foreground=True)
    lidar = stats.arrays["lidar_bev"]
    np.testing.assert_allclose(lidar.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lidar.std, std, rtol=1e-12)
    fg_cells = int((open_store(url).read_views(views, ["fg_mask"])["fg_mask"] > 0).sum())
    assert lidar.foreground_only and lidar.cells == fg_cells < N_VIEWS * 12 * 16
    _, all_cells_std = _numpy_stats(url, "lidar_bev", views, foreground=False)
    assert np.all(all_cells_std < 0.8 * std)  # the masked-away zeros would shrink it


def test_a_sample_of_views_is_evenly_spaced(tmp_path: Path, cfg: Config) -> None:
    assert sample_views(6, 3) == [0, 2, 5] and sample_views(6, 100) == list(range(6)) and sample_views(1, 4) == [0]
    with pytest.raises(StoreError, match="max_views"):
        sample_views(6, 0)
    url = tmp_path / "s.zarr"
    _scaled_store(url, cfg)
    stats = channel_stats(url, arrays=("cam_bev",), max_views=3)
    assert (stats.views, stats.of_views, list(stats.arrays)) == (3, N_VIEWS, ["cam_bev"])
    mean, std = _numpy_stats(url, "cam_bev", [0, 2, 5], foreground=False)
    np.testing.assert_allclose(stats.arrays["cam_bev"].mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.arrays["cam_bev"].std, std, rtol=1e-12)


def test_stats_round_trip_through_the_group_attributes(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg)
    assert read_channel_stats(open_store(url).attrs) is None  # a store made before: no stats
    stats = channel_stats(url)
    write_channel_stats(url, stats)
    attrs = open_store(url).attrs
    assert attrs[STATS_KEY]["views"] == N_VIEWS and len(attrs[STATS_KEY]["arrays"]["lidar_bev"]["std"]) == 6
    assert read_channel_stats(attrs) == stats
    assert attrs["teacher"]["checkpoint_sha256"] == make_attrs(cfg).teacher["checkpoint_sha256"]  # the rest stays
    zarr.open_group(str(url), mode="r+").attrs.update({STATS_KEY: {"views": 3}})
    with pytest.raises(StoreError, match="malformed.*simdistill store stats"):
        read_channel_stats(open_store(url).attrs)
    broken = stats.to_attrs()
    broken["arrays"]["cam_bev"]["std"] = [1.0, -1.0, 1.0, 1.0]
    with pytest.raises(StoreError, match="negative"):
        ChannelStats.from_attrs(broken)


def test_unfinished_store_and_running_export_are_refused(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=4)
    with pytest.raises(StoreError, match="2 of 6 views unfinished.*export-teacher"):
        channel_stats(url)
    result = runner.invoke(app, ["store", "stats", str(url)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "unfinished" in result.output and len(result.output.strip().splitlines()) == 1, result.output
    done = tmp_path / "done.zarr"
    write_store(done, cfg)
    stats = channel_stats(done)
    with export_lock(done), pytest.raises(StoreError):  # an export holds the store: no attribute write meanwhile
        write_channel_stats(done, stats)
    assert read_channel_stats(open_store(done).attrs) is None


def test_store_stats_and_store_info_commands(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    _scaled_store(url, cfg)
    before = runner.invoke(app, ["store", "info", str(url)])
    assert before.exit_code == 0 and "channel stats: none" in before.output and "store stats" in before.output
    result = runner.invoke(app, ["store", "stats", str(url)])
    assert result.exit_code == 0, result.output
    assert f"wrote channel_stats into {url}" in result.output and "over 6 of 6 views" in result.output
    assert read_channel_stats(open_store(url).attrs) == channel_stats(url)
    info = store_info(str(url))
    assert info.channel_stats == channel_stats(url)
    shown = runner.invoke(app, ["store", "info", str(url)])
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line for line in shown.output.splitlines() if line.startswith("  ")}
    cam_std = np.asarray(info.channel_stats.arrays["cam_bev"].std)
    assert lines["cam_bev"].endswith(f"{cam_std.min():.4g} / {np.median(cam_std):.4g} / {cam_std.max():.4g}")
    assert "4 channels" in lines["cam_bev"] and "6 channels (foreground cells)" in lines["lidar_bev"]
    assert "5 channels" in lines["fused_bev"] and "(foreground" not in lines["fused_bev"]
