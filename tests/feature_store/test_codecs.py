"""Lossy codecs: the bit-rounding error bound holds, is reported, and bad settings are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers.store import (
    N_VIEWS,
    P,
    expected_stored,
    layout,
    make_attrs,
    random_view,
    store_args,
    tiny_cfg,
    write_store,
)
from numcodecs import BitRound

from simdistill.errors import ConfigError, StoreError
from simdistill.feature_store import create_store, open_for_resume, open_store, store_info
from simdistill.feature_store.codecs import lossy_max_abs, lossy_rel_error


@pytest.mark.parametrize("keepbits", range(0, 10))
def test_lossy_range_bound_is_exact(keepbits: int) -> None:
    bound = lossy_max_abs(keepbits)
    codec = BitRound(keepbits=keepbits)

    def rounded(x: np.float16) -> np.ndarray:
        return codec.decode(codec.encode(np.array([x, -x], np.float16)))

    if bound > 65504:  # every finite float16 keeps finite
        assert np.isfinite(rounded(np.float16(65504))).all()
        return
    assert np.isfinite(rounded(np.nextafter(np.float16(bound), np.float16(0)))).all()
    assert np.isinf(rounded(np.nextafter(np.float16(bound), np.float16(np.inf)))).all()
    at = rounded(np.float16(bound))
    if keepbits == 0:  # the bound is a tie between 2**15 and 2**16 and rounds to even: refusing it is conservative
        assert at.tolist() == [32768.0, -32768.0]
    else:
        assert np.isinf(at).all()


def test_lossy_mode_error_bound_and_info(tmp_path: Path) -> None:
    keepbits = 4
    cfg = tiny_cfg("store_format.lossy=true", f"store_format.lossy_keepbits={keepbits}",
                   "store_format.lossy_arrays=[cam_bev, lidar_bev, fused_bev]")
    url = tmp_path / "lossy.zarr"
    tvs = write_store(url, cfg)
    reader = open_store(url, expect=layout(cfg))
    rel = lossy_rel_error(keepbits)
    for v, tv in enumerate(tvs):
        got, want = reader.read_view(v), expected_stored(tv, cfg)
        for name in ("cam_bev", "lidar_bev", "fused_bev"):
            err = np.abs(got[name] - want[name])
            # normal float16 values: relative bound; subnormals (< 2**-14): half a quantum of their spacing
            assert np.all(err <= rel * np.abs(want[name]) + 2.0**-24 * 2 ** (10 - keepbits)), name
            assert np.any(err > 0), name  # it really is lossy
        for name in ("heatmap", "boxes", "fg_mask", "aug"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    mode = "lossy:bitround keepbits=4 on [cam_bev, lidar_bev, fused_bev]"
    assert reader.attrs["codecs"]["mode"] == mode
    info = store_info(str(url))
    assert info.mode == mode and mode in info.to_text()
    lossless = tmp_path / "lossless.zarr"
    write_store(lossless, tiny_cfg())
    by_name = lambda i: {a.name: a for a in i.arrays}  # noqa: E731
    assert by_name(info)["cam_bev"].bytes < by_name(store_info(str(lossless)))["cam_bev"].bytes

    rng = np.random.default_rng(4)
    tv = random_view(rng, cfg, 0)
    tv.cam_bev[0, 0, 0] = 65000.0  # fine for float16, but rounds to infinity at 4 mantissa bits (>= 64512)
    writer = open_for_resume(str(url), attrs=make_attrs(cfg))
    with pytest.raises(StoreError, match="view 0 array 'cam_bev' has .value. 65000.*turn off lossy mode"):
        writer.write_view(0, tv)


def test_lossy_settings_are_validated(tmp_path: Path) -> None:
    cfg = tiny_cfg("store_format.lossy=true", "store_format.lossy_arrays=[cam_bev, aug]")
    with pytest.raises(ConfigError, match="store_format.lossy_arrays names 'aug'"):
        create_store(str(tmp_path / "s.zarr"), **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
