"""`store_info`: what a store holds and how well it compresses.

Ratios compare the bytes of an array's chunk files with the same values held raw, as float16 and
as float32, over the views written so far (done views; sharded stores write whole shards). The teacher's
per-channel statistics (`stats.py`) are shown when the store holds them.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from simdistill.feature_store.reader import open_store
from simdistill.feature_store.schema import FEATURE_ARRAYS, SCHEMA
from simdistill.feature_store.stats import ChannelStats, read_channel_stats
from simdistill.feature_store.storage import StoreLike, chunk_bytes, store_bytes


@dataclass
class ArrayInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int  # chunk files on disk
    values: int  # values held in those files (done views × values per view)
    bytes_per_view: float
    bits_per_value: float  # stored bits per value
    ratio_vs_f16: float  # raw float16 bytes / stored bytes
    ratio_vs_f32: float


@dataclass
class StoreInfo:
    url: str
    schema_version: int
    teacher: dict[str, Any]  # name, checkpoint_sha256
    dataset: dict[str, Any]  # version, split, samples
    n_views: int
    n_done: int
    mode: str  # lossless | lossy:bitround keepbits=N on [...]
    codecs: dict[str, Any]
    bytes_total: int  # everything in the store, metadata included
    arrays: list[ArrayInfo] = field(default_factory=list)
    channel_stats: ChannelStats | None = None  # the teacher's per-channel mean/std, if computed

    @property
    def feature_bits_per_value(self) -> float:
        """Stored bits per cached teacher value over all float16 arrays (DESIGN.md §9 asks ≤ 4)."""
        feats = [a for a in self.arrays if a.name in FEATURE_ARRAYS]
        values = sum(a.values for a in feats)
        return 8 * sum(a.bytes for a in feats) / values if values else math.nan

    def to_text(self) -> str:
        table = Table(title=f"feature store {self.url}")
        for col in ("array", "shape", "dtype", "bytes", "bytes/view", "bits/value", "x vs f16", "x vs f32"):
            table.add_column(col, justify="left" if col in ("array", "shape", "dtype") else "right")
        for a in self.arrays:
            table.add_row(
                a.name,
                "x".join(map(str, a.shape)),
                a.dtype,
                f"{a.bytes:,}",
                f"{a.bytes_per_view:,.0f}",
                f"{a.bits_per_value:.2f}",
                f"{a.ratio_vs_f16:.2f}",
                f"{a.ratio_vs_f32:.2f}",
            )
        out = io.StringIO()
        out.write(
            f"schema {self.schema_version} | teacher {self.teacher.get('name')} "
            f"(sha256 {str(self.teacher.get('checkpoint_sha256'))[:12]}) | dataset {self.dataset.get('version')} "
            f"{self.dataset.get('split')} ({self.dataset.get('samples')} samples)\n"
            f"views done {self.n_done}/{self.n_views} | mode {self.mode}\n"
            f"{self.codecs.get('compressor')}, shuffle {self.codecs.get('shuffle')}, "
            f"sharding {self.codecs.get('sharding')} | total {self.bytes_total:,} bytes | "
            f"features {self.feature_bits_per_value:.2f} bits/value\n"
        )
        Console(file=out, width=110, color_system=None).print(table)
        if self.channel_stats is None:
            out.write("channel stats: none (`simdistill store stats STORE` computes them)\n")
        else:
            out.write("\n".join(self.channel_stats.summary_lines()) + "\n")
        return out.getvalue()


def store_info(url: StoreLike) -> StoreInfo:
    """Summarise a store: provenance, progress, mode and per-array sizes."""
    reader = open_store(url, any_version=True)
    a = reader.attrs
    n_done = int(reader.done_views().sum())
    info = StoreInfo(
        url=str(url),
        schema_version=a.get("schema_version"),
        teacher={k: a.get("teacher", {}).get(k) for k in ("name", "checkpoint_sha256")},
        dataset={
            "version": a.get("dataset", {}).get("version"),
            "split": a.get("dataset", {}).get("split"),
            "samples": len(a.get("dataset", {}).get("sample_tokens", [])),
        },
        n_views=reader.n_views,
        n_done=n_done,
        mode=a.get("codecs", {}).get("mode", "?"),
        codecs=a.get("codecs", {}),
        bytes_total=store_bytes(reader.group),
        channel_stats=read_channel_stats(a),
    )
    for name in SCHEMA:
        if name not in reader.available:
            continue
        arr = reader.array(name)
        nbytes = chunk_bytes(arr)
        values = n_done * int(np.prod(arr.shape[1:]))
        info.arrays.append(
            ArrayInfo(
                name=name,
                shape=tuple(arr.shape),
                dtype=str(arr.dtype),
                bytes=nbytes,
                values=values,
                bytes_per_view=nbytes / n_done if n_done else 0.0,
                bits_per_value=8 * nbytes / values if values else 0.0,
                ratio_vs_f16=2 * values / nbytes if nbytes else math.nan,
                ratio_vs_f32=4 * values / nbytes if nbytes else math.nan,
            )
        )
    return info
