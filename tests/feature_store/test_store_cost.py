"""What makes cached targets cheaper: per-plane quantised arrays (exact decode within the stated
bound, recorded mode, online encoding equal to the store's), the memory loader (the same targets as the Dask
loader) and read-ahead threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.store import N_VIEWS, P, expected_stored, layout, make_attrs, store_args, tiny_cfg, write_store

from simdistill.config import load_config
from simdistill.errors import ConfigError, StoreError
from simdistill.feature_store import TargetPrefetcher, create_store, open_store, read_batch, store_info, stored_values
from simdistill.feature_store.codecs import (
    QUANTIZE_CODEC,
    dequantize_planes,
    quantize_error_bound,
    quantize_planes,
    quantize_roundtrip,
)
from simdistill.feature_store.schema import dim_sizes
from simdistill.student_train.target_sources import StoreTargets

QUANTIZED = ["cam_bev", "lidar_bev", "fused_bev", "heatmap"]
BATCHES = [[3, 0], [5, 1], [4, 2], [2, 2]]


@pytest.mark.parametrize(("bits", "rel_step"), [(1, 0.0), (4, 0.0), (8, 0.0), (12, 0.0), (16, 0.0), (4, 0.05),
                                              (8, 0.01), (16, 0.001)])
def test_quantize_planes_stays_within_its_bound(bits: int, rel_step: float) -> None:
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((3, 5, 7, 9)) * rng.uniform(0.01, 100, size=(3, 5, 1, 1))).astype(np.float16)
    x[0, 0] = np.maximum(x[0, 0], 0)  # a ReLU plane: its zeros must stay exact
    codes, scale, zero = quantize_planes(x, bits, rel_step)
    assert codes.dtype == (np.uint8 if bits <= 8 else np.uint16) and codes.shape == x.shape
    assert int(codes.max()) <= (1 << bits) - 1 and scale.shape == zero.shape == (15,)
    got = dequantize_planes(codes, scale, zero, np.float16).astype(np.float64)
    err = np.abs(got - x.astype(np.float64)).reshape(15, -1).max(axis=1)
    assert np.all(err <= quantize_error_bound(x, bits, rel_step))
    assert np.all(got[0, 0][x[0, 0] == 0] == 0)
    if rel_step:  # one step for every plane whose range fits the codes at that step
        std = x.astype(np.float64).std()
        assert np.all(scale >= np.float32(rel_step * std) * (1 - 1e-6))
        assert np.sum(np.isclose(scale, rel_step * std, rtol=1e-6)) >= 1


def test_quantize_planes_constant_and_signed_planes_decode_exactly() -> None:
    x = np.zeros((4, 3, 5), np.float16)
    x[1], x[2] = 3.25, -7.5  # constant planes; x[0] all zero
    x[3] = np.linspace(-2, 6, 15, dtype=np.float16).reshape(3, 5)
    x[3, 0, 0] = 0
    got = quantize_roundtrip(x, 3)
    np.testing.assert_array_equal(got[:3], x[:3])
    assert got[3, 0, 0] == 0  # 0 lies on the grid whenever a plane spans it
    with pytest.raises(ValueError, match="finite"):
        quantize_planes(np.array([[np.nan, 1.0]], np.float32), 8)


@pytest.mark.parametrize(("bits", "step"), [(6, 0.0), (12, 0.05)])
def test_quantized_store_decodes_within_bound_and_records_mode(tmp_path: Path, bits: int, step: float) -> None:
    cfg = tiny_cfg(f"store_format.quantize_bits={bits}", f"store_format.quantize_step={step}",
                   f"store_format.quantize_arrays=[{', '.join(QUANTIZED)}]")
    url = tmp_path / "q.zarr"
    tvs = write_store(url, cfg)
    reader = open_store(url, expect=layout(cfg))
    sizes = dim_sizes(layout(cfg), n_views=1, aug_dim=P)
    for v, tv in enumerate(tvs):
        got, want = reader.read_view(v), expected_stored(tv, cfg)
        for name in QUANTIZED:
            n_planes = int(np.prod(want[name].shape[:-2]))
            err = np.abs(got[name] - want[name]).reshape(n_planes, -1).max(axis=1)
            assert np.all(err <= quantize_error_bound(want[name], bits, step)), name
            assert np.any(err > 0), name  # it really is lossy
            assert np.all(got[name][want[name] == 0] == 0) or name != "lidar_bev"  # masked cells stay zero
        for name in ("boxes", "fg_mask", "aug"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        online = stored_values(tv, sizes=sizes, store_format=cfg.store_format)  # the online "store" encoding
        for name in online:
            np.testing.assert_array_equal(online[name], got[name], err_msg=name)
    mode = f"lossy:quantize bits={bits}{f' step={step:g}*std' if step else ''} per plane on [{', '.join(QUANTIZED)}]"
    assert reader.attrs["codecs"]["mode"] == mode and reader.attrs["codecs"]["quantize"]["bits"] == bits
    meta = json.loads((url / "cam_bev" / "zarr.json").read_text())
    assert meta["codecs"][0] == {"name": QUANTIZE_CODEC, "configuration": {"bits": bits, "rel_step": step}}
    assert meta["data_type"] == "float16"
    lossless = tmp_path / "lossless.zarr"
    write_store(lossless, tiny_cfg())
    by_name = lambda i: {a.name: a for a in i.arrays}  # noqa: E731
    info = store_info(str(url))
    assert info.mode == mode
    assert by_name(info)["fused_bev"].bytes < by_name(store_info(str(lossless)))["fused_bev"].bytes


@pytest.mark.parametrize(("overrides", "message"), [
    (["store_format.quantize_bits=17"], "quantize_bits must be 0 .off. or 1..16, got 17"),
    (["store_format.quantize_bits=8", "store_format.quantize_step=-0.1"], "quantize_step must be >= 0"),
    (["store_format.quantize_bits=8", "store_format.quantize_arrays=[cam_bev, aug]"], "names 'aug'"),
    (["store_format.quantize_bits=8", "store_format.lossy=true"], "'cam_bev' is in both lossy_arrays and quantize"),
])
def test_quantize_settings_are_validated(tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = tiny_cfg(*overrides)
    with pytest.raises(ConfigError, match=message):
        create_store(str(tmp_path / "s.zarr"), **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    assert not (tmp_path / "s.zarr").exists()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = tmp_path_factory.mktemp("cost") / "s.zarr"
    write_store(url, tiny_cfg())
    return str(url)


def test_memory_loader_yields_what_the_dask_loader_yields(store: str) -> None:
    arrays = ["cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes", "fg_mask"]
    got = {}
    for loader in ("dask", "memory", "direct"):
        source = StoreTargets(store, tiny_cfg(f"student_train.loader={loader}"), arrays)
        got[loader] = list(source.iterate(BATCHES, torch.device("cpu")))
    held = StoreTargets(store, tiny_cfg("student_train.loader=memory"), arrays).in_memory()
    assert held["cam_bev"].dtype == np.float16 and held["cam_bev"].shape[0] == N_VIEWS  # read once, as stored
    for loader in ("memory", "direct"):
        assert len(got[loader]) == len(BATCHES)
        for a, b in zip(got[loader], got["dask"]):
            for name in arrays:
                x, y = getattr(a, name), getattr(b, name)
                assert x.dtype == y.dtype == torch.float32
                assert torch.equal(x, y), (loader, name)


def test_prefetcher_threads_yield_the_same_batches(store: str) -> None:
    arrays = ["cam_bev", "boxes"]
    reader = open_store(store)
    want = [read_batch(reader, b, arrays) for b in BATCHES]
    with TargetPrefetcher(store, arrays=arrays, batches=BATCHES, prefetch=4, threads=4) as pf:
        got = list(pf)
    for g, w in zip(got, want):
        for name in arrays:
            np.testing.assert_array_equal(g[name], w[name])
    with TargetPrefetcher(store, arrays=arrays, batches=BATCHES, float32=False) as pf:  # a GPU student's loader
        halves = list(pf)
    for g, w in zip(halves, want):
        for name in arrays:
            assert g[name].dtype == np.float16
            np.testing.assert_array_equal(g[name].astype(np.float32), w[name])
    with pytest.raises(StoreError, match="threads must be >= 1, got 0; set student_train.loader_threads"):
        TargetPrefetcher(store, arrays=arrays, batches=BATCHES, threads=0)


def test_loader_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="loader 'mmap' is unknown; use dask, direct or memory"):
        load_config("tiny", ["student_train.loader=mmap"])
    with pytest.raises(ConfigError, match="loader_threads must be >= 1, got 0"):
        load_config("tiny", ["student_train.loader_threads=0"])
