"""Codec benchmark for the feature store: bytes and encode/decode speed per codec chain.

    python benchmarks/store_codecs.py                       # structured synthetic views, demo sizes
    python benchmarks/store_codecs.py --paper --views 2     # paper sizes (80/256/256 ch, 180x180)
    python benchmarks/store_codecs.py path/to/store.zarr    # the float16 arrays of an existing store

Each chain (zstd level 1/3/5/9, with and without byte shuffle, as one Blosc codec with the store's
block size or as separate numcodecs Shuffle + zarr ZstdCodec; plus Blosc with its automatic block
size at level 3) ends in crc32c, as the store's does. Speeds are MB/s of raw
float16 through a zarr in-memory array (so zarr's own overhead is included). Prints a table per
array and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import numpy as np
import zarr
from numcodecs import BitRound
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec
from zarr.codecs.numcodecs import Shuffle
from zarr.storage import MemoryStore

from simdistill.feature_store import open_store
from simdistill.feature_store.codecs import BLOSC_BLOCKSIZE
from simdistill.feature_store.schema import FEATURE_ARRAYS

LEVELS = (1, 3, 5, 9)


def smooth_field(rng: np.random.Generator, c: int, h: int, w: int, *, cell: int = 4) -> np.ndarray:
    """Spatially correlated noise [c, h, w]: coarse noise upsampled bilinearly plus fine noise."""
    hc, wc = h // cell + 2, w // cell + 2
    coarse = rng.standard_normal((c, hc, wc)).astype(np.float32)
    ys = np.linspace(0, hc - 1.001, h)
    xs = np.linspace(0, wc - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    f = (
        coarse[:, y0][:, :, x0] * (1 - fy) * (1 - fx)
        + coarse[:, y0 + 1][:, :, x0] * fy * (1 - fx)
        + coarse[:, y0][:, :, x0 + 1] * (1 - fy) * fx
        + coarse[:, y0 + 1][:, :, x0 + 1] * fy * fx
    )
    return f + 0.3 * rng.standard_normal((c, h, w)).astype(np.float32)


def synthetic_views(n: int, *, paper: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Teacher-like float16 views: ReLU features, LiDAR BEV masked to the foreground, logit heatmaps."""
    rng = np.random.default_rng(seed)
    c_cam, c_lidar, c_fused, hw = (80, 256, 256, 180) if paper else (32, 64, 64, 64)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes")}
    yy, xx = np.mgrid[0:hw, 0:hw]
    for _ in range(n):
        fg = np.zeros((hw, hw), np.float32)
        centres = rng.integers(0, hw, size=(30, 2))
        for cy, cx in centres:
            fg += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
        out["cam_bev"].append(np.maximum(smooth_field(rng, c_cam, hw, hw), 0))
        out["lidar_bev"].append(np.maximum(smooth_field(rng, c_lidar, hw, hw), 0) * (fg > 0.01))
        out["fused_bev"].append(np.maximum(smooth_field(rng, c_fused, hw, hw), 0))
        out["heatmap"].append(-6.0 + 0.5 * smooth_field(rng, 10, hw, hw) + 6.0 * fg[None])
        boxes = np.zeros((6, 10, hw * hw), np.float32)
        idx = centres[:, 0] * hw + centres[:, 1]
        boxes[:, :, idx] = rng.standard_normal((6, 10, len(idx)))
        out["boxes"].append(boxes.reshape(6, 10, hw, hw))
    return {k: np.stack(v).astype(np.float16) for k, v in out.items()}


def store_views(url: str, n: int) -> dict[str, np.ndarray]:
    """The first `n` finished views of every float16 array of an existing feature store, as stored."""
    reader = open_store(url)
    views = np.flatnonzero(reader.done_views())[:n]
    if views.size == 0:
        raise SystemExit(f"store {url} has no finished views to measure")
    return {name: reader.array(name).oindex[views] for name in FEATURE_ARRAYS if name in reader.available}


def chains() -> dict[str, list[Any]]:
    """Compressor chains to compare (each followed by crc32c)."""
    out: dict[str, list[Any]] = {
        "blosc-auto-zstd3-shuf": [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=2)],
    }
    for level in LEVELS:
        for shuffle in (True, False):
            tag = "shuf" if shuffle else "noshuf"
            out[f"blosc-zstd{level}-{tag}"] = [
                BloscCodec(
                    cname="zstd",
                    clevel=level,
                    shuffle="shuffle" if shuffle else "noshuffle",
                    typesize=2,
                    blocksize=BLOSC_BLOCKSIZE,
                )
            ]
            out[f"sep-zstd{level}-{tag}"] = ([Shuffle(elementsize=2)] if shuffle else []) + [ZstdCodec(level=level)]
    return out


def measure(data: np.ndarray, compressors: list[Any], *, repeats: int) -> dict[str, float]:
    """Write and read `data` [V, ...] through an in-memory zarr array, one view per chunk."""
    best_enc = best_dec = float("inf")
    nbytes = 0
    for _ in range(repeats):
        store = MemoryStore()
        arr = zarr.create_array(
            store,
            shape=data.shape,
            dtype="float16",
            chunks=(1, *data.shape[1:]),
            serializer=BytesCodec(),
            compressors=[*compressors, Crc32cCodec()],
            fill_value=0,
        )
        t0 = time.perf_counter()
        arr[:] = data
        t1 = time.perf_counter()
        back = arr[:]
        t2 = time.perf_counter()
        if not np.array_equal(back, data):
            raise RuntimeError("codec chain is not lossless")
        best_enc, best_dec = min(best_enc, t1 - t0), min(best_dec, t2 - t1)
        nbytes = sum(len(v) for k, v in store._store_dict.items() if "/c/" in k or k.startswith("c/"))
    mb = data.nbytes / 1e6
    return {
        "bytes": nbytes,
        "ratio_f16": data.nbytes / nbytes,
        "bits_per_value": 8 * nbytes / data.size,
        "encode_mb_s": mb / best_enc,
        "decode_mb_s": mb / best_dec,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", nargs="?", help="an existing feature store (default: synthetic views)")
    ap.add_argument("--views", type=int, default=8, help="views to compress per array")
    ap.add_argument("--paper", action="store_true", help="synthetic views at paper sizes")
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings")
    ap.add_argument("--keepbits", type=int, default=None, help="bit-round cam/lidar/fused to N mantissa bits first")
    ap.add_argument("--smoke", action="store_true", help="one small synthetic view, one timing: checks the script "
                    "runs (the test suite runs it); its figures mean nothing")
    args = ap.parse_args()
    if args.smoke:
        args.views, args.repeats, args.paper = 1, 1, False
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")

    data = store_views(args.store, args.views) if args.store else synthetic_views(args.views, paper=args.paper)
    if args.keepbits is not None:  # what lossy mode stores for these arrays (BitRound before compression)
        rounder = BitRound(keepbits=args.keepbits)
        for name in ("cam_bev", "lidar_bev", "fused_bev"):
            if name in data:
                data[name] = rounder.decode(rounder.encode(data[name])).reshape(data[name].shape)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, arr in data.items():
        results[name] = {}
        print(f"\n{name}  {arr.shape}  raw float16 {arr.nbytes / 1e6:.2f} MB")
        print(f"{'chain':<22}{'bytes':>12}{'x f16':>8}{'bits/val':>10}{'enc MB/s':>10}{'dec MB/s':>10}")
        for chain, compressors in chains().items():
            r = measure(arr, compressors, repeats=args.repeats)
            results[name][chain] = r
            print(
                f"{chain:<22}{r['bytes']:>12}{r['ratio_f16']:>8.2f}{r['bits_per_value']:>10.2f}"
                f"{r['encode_mb_s']:>10.0f}{r['decode_mb_s']:>10.0f}"
            )
    totals = {
        chain: sum(results[n][chain]["bytes"] for n in results) for chain in next(iter(results.values()))
    }
    raw = sum(a.nbytes for a in data.values())
    print("\nall arrays: ratio vs raw float16 per chain")
    for chain, b in totals.items():
        print(f"  {chain:<22}{raw / b:>8.2f}")
    source = args.store or ("synthetic-paper" if args.paper else "synthetic-demo")
    print(json.dumps({"source": source, "views": args.views, "keepbits": args.keepbits,
                      "raw_f16_bytes": raw, "total_bytes": totals, "arrays": results}))


if __name__ == "__main__":
    main()
