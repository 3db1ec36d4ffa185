"""Store URLs: file:// and fsspec URLs work, a missing backend is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers.store import expected_stored, layout, write_store

from simdistill.config import Config
from simdistill.errors import StoreError
from simdistill.feature_store import open_store, store_info, verify_store


def test_file_url_works(tmp_path: Path, cfg: Config) -> None:
    url = (tmp_path / "u.zarr").as_uri()
    assert url.startswith("file://")
    tvs = write_store(url, cfg, views=2)
    for where in (url, str(tmp_path / "u.zarr")):
        got = open_store(where, expect=layout(cfg)).read_view(1, ["fused_bev"])["fused_bev"]
        np.testing.assert_array_equal(got, expected_stored(tvs[1], cfg)["fused_bev"])
    assert (tmp_path / "u.zarr" / "fused_bev" / "c" / "1" / "0" / "0" / "0").is_file()


def test_fsspec_urls_work_and_missing_backends_are_clear(tmp_path: Path, cfg: Config) -> None:
    url = f"memory://{tmp_path.name}/s.zarr"  # fsspec's in-memory file system stands in for s3://
    tvs = write_store(url, cfg, views=3)
    reader = open_store(url, expect=layout(cfg))
    assert reader.done_views().sum() == 3
    np.testing.assert_array_equal(reader.read_view(2)["boxes"], expected_stored(tvs[2], cfg)["boxes"])
    assert verify_store(url, progress=False).ok and store_info(url).n_done == 3
    with pytest.raises(StoreError, match="cannot open store URL 'gs://bucket/s.zarr' .*gcsfs"):  # not installed
        open_store("gs://bucket/s.zarr")
