"""Per-channel statistics of the teacher's BEV maps, kept in the store's group attributes (`channel_stats`).

The teacher's channels differ in scale (their std spans ~5× in cam_bev, ~13× in lidar_bev), so a plain MSE
against them follows a few large channels. A student that divides each channel's squared error by the teacher's
σ_c² (PKD-style standardisation, `distill.channel_standardization`) needs σ_c, and the store is where the teacher's
maps are: the statistics are computed once from it and kept beside them.

    stats = channel_stats("out/teacher.zarr")          # every done view, up to 256 evenly spaced ones
    write_channel_stats("out/teacher.zarr", stats)     # group attrs["channel_stats"]
    read_channel_stats(open_store(url).attrs)          # ChannelStats, or None for a store made before
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simdistill.errors import StoreError
from simdistill.feature_store.lock import export_lock
from simdistill.feature_store.reader import FeatureStoreReader, open_store
from simdistill.feature_store.storage import StoreLike, open_group, server_errors, store_url
from simdistill.feature_store.transforms import FOREGROUND_MASKED

STATS_KEY = "channel_stats"  # the group attribute
STATS_ARRAYS: tuple[str, ...] = ("cam_bev", "lidar_bev", "fused_bev")  # the BEV feature maps the MSE terms compare
MAX_VIEWS = 256  # views sampled (evenly spaced): enough for a per-channel std, a bounded read at paper size
READ_VIEWS = 4  # views per read (bounds memory: 4 paper-size views of every array are ~170 MB as float32)


@dataclass(frozen=True)
class ArrayStats:
    """One array's per-channel figures."""

    mean: tuple[float, ...]  # [C]
    std: tuple[float, ...]  # [C], population std (ddof 0)
    cells: int  # cells per channel the figures are over (sampled views × H × W, or their foreground cells)
    foreground_only: bool  # over the cells with fg_mask > 0 only (all the store keeps of this array)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and std of some BEV arrays over `views` of the store's `of_views` views."""

    arrays: dict[str, ArrayStats]
    views: int
    of_views: int

    def to_attrs(self) -> dict[str, Any]:
        """The JSON value of the `channel_stats` group attribute."""
        return {"views": self.views, "of_views": self.of_views,
                "arrays": {name: {"mean": list(a.mean), "std": list(a.std), "cells": a.cells,
                                  "foreground_only": a.foreground_only} for name, a in self.arrays.items()}}

    @classmethod
    def from_attrs(cls, value: Mapping[str, Any]) -> ChannelStats:
        """Read back `to_attrs`'s value (StoreError naming the fix when it is malformed)."""
        try:
            arrays = {name: ArrayStats(mean=tuple(float(x) for x in a["mean"]), std=tuple(float(x) for x in a["std"]),
                                       cells=int(a["cells"]), foreground_only=bool(a["foreground_only"]))
                      for name, a in value["arrays"].items()}
            stats = cls(arrays=arrays, views=int(value["views"]), of_views=int(value["of_views"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"the store's '{STATS_KEY}' attribute is malformed ({exc!r}); recompute it with "
                             "`simdistill store stats STORE`") from None
        bad = [n for n, a in arrays.items() if len(a.mean) != len(a.std) or any(not s >= 0 for s in a.std)]
        if bad:
            raise StoreError(f"the store's '{STATS_KEY}' for {bad[0]} has mismatched or negative stds; recompute "
                             "them with `simdistill store stats STORE`")
        return stats

    def summary_lines(self) -> list[str]:
        """A header and a compact line per array: channels and the spread of their stds."""
        lines = [f"channel stats over {self.views} of {self.of_views} views:"]
        for name, a in self.arrays.items():
            std = np.asarray(a.std)
            where = " (foreground cells)" if a.foreground_only else ""
            lines.append(f"  {name:<10} {len(std)} channels{where}, std min/median/max "
                         f"{std.min():.4g} / {np.median(std):.4g} / {std.max():.4g}")
        return lines


def sample_views(n_views: int, max_views: int) -> list[int]:
    """Up to `max_views` views evenly spaced over 0..n_views-1 (the first and the last included)."""
    if max_views < 1:
        raise StoreError(f"max_views must be >= 1, got {max_views}")
    return sorted({int(round(x)) for x in np.linspace(0, n_views - 1, min(n_views, max_views))})


def channel_stats(store: FeatureStoreReader | StoreLike, *, arrays: Sequence[str] = STATS_ARRAYS,
                  max_views: int = MAX_VIEWS) -> ChannelStats:
    """Per-channel mean and std of `arrays` over all cells of an evenly spaced sample of the store's views,
    accumulated in float64. An array the store masks to the foreground (`transforms.FOREGROUND_MASKED`: lidar_bev,
    kept only where fg_mask > 0, which is all CMD compares) is summarised over its foreground cells only: its
    zeros elsewhere are the mask, not the teacher. Refuses a store with unfinished views (StoreError)."""
    reader = store if isinstance(store, FeatureStoreReader) else open_store(store)
    reader.require([*arrays, "fg_mask"])
    done = reader.done_views()
    if not done.all():
        raise StoreError(f"store {reader.url} has {int((~done).sum())} of {reader.n_views} views unfinished; finish "
                         "it by re-running the same `simdistill export-teacher` command, then compute its stats")
    views = sample_views(reader.n_views, max_views)
    sums = {name: _Moments() for name in arrays}
    for start in range(0, len(views), READ_VIEWS):
        part = reader.read_views(views[start:start + READ_VIEWS], [*arrays, "fg_mask"])
        fg = part["fg_mask"][:, None] > 0  # [b, 1, H, W]
        for name in arrays:
            sums[name].add(part[name], fg if name in FOREGROUND_MASKED else None)
    return ChannelStats(arrays={name: sums[name].result(foreground_only=name in FOREGROUND_MASKED)
                                for name in arrays}, views=len(views), of_views=reader.n_views)


class _Moments:
    """Running per-channel count, mean and sum of squared deviations, merged batch by batch (Chan et al.), in
    float64: no E[x²] − E[x]² cancellation when a channel's mean is large against its std."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | float = 0.0
        self.m2: np.ndarray | float = 0.0

    def add(self, x: np.ndarray, mask: np.ndarray | None) -> None:
        """x [b, C, H, W]; mask [b, 1, H, W] bool or None (every cell)."""
        x = x.astype(np.float64)
        w = np.ones((x.shape[0], 1, *x.shape[2:]), dtype=bool) if mask is None else mask
        n_b = int(w.sum())
        if n_b == 0:
            return
        mean_b = (x * w).sum(axis=(0, 2, 3)) / n_b  # [C]
        m2_b = (((x - mean_b[None, :, None, None]) * w) ** 2).sum(axis=(0, 2, 3))  # [C]
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def result(self, *, foreground_only: bool) -> ArrayStats:
        if self.n == 0:  # no foreground cell in any sampled view: nothing to standardise by
            raise StoreError("the sampled views have no foreground cells (fg_mask > 0), so the foreground-only "
                             "arrays have no statistics; export views with objects in them")
        std = np.sqrt(np.asarray(self.m2) / self.n)
        return ArrayStats(mean=tuple(float(v) for v in np.asarray(self.mean)), std=tuple(float(v) for v in std),
                          cells=self.n, foreground_only=foreground_only)


def write_channel_stats(url: StoreLike, stats: ChannelStats) -> None:
    """Store `stats` in the group attributes (key `channel_stats`), under the export lock: a running export of the
    store refuses it with one line, and no export can change views meanwhile."""
    location = store_url(url)
    with export_lock(location):
        group = open_group(location, mode="r+")
        with server_errors(location, what="writing the channel stats"):
            group.attrs.update({STATS_KEY: stats.to_attrs()})


def read_channel_stats(attrs: Mapping[str, Any]) -> ChannelStats | None:
    """The stats a store's group attributes hold, or None for a store exported before they were kept."""
    value = attrs.get(STATS_KEY)
    return None if value is None else ChannelStats.from_attrs(value)
