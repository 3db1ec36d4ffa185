"""Reading: unfinished views, incompatible stores, corrupted chunks and missing stores are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers.store import N_VIEWS, expected_stored, layout, make_attrs, random_view, tiny_cfg, write_store
from zarr.storage import LocalStore

from simdistill.config import Config
from simdistill.errors import StoreError
from simdistill.feature_store import open_for_resume, open_store, verify_store
from simdistill.feature_store.schema import SCHEMA_VERSION


def test_done_semantics_refuse_unfinished_views(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=2)
    writer = open_for_resume(str(url), attrs=make_attrs(cfg))
    assert np.flatnonzero(~writer.done_views()).tolist() == [2, 3, 4, 5]
    reader = open_store(url)
    assert reader.done_views().tolist() == [True, True, False, False, False, False]
    reader.read_view(1)
    with pytest.raises(StoreError, match="view 4 of store .* is not exported yet \\(4 of 6 views are missing\\)"):
        reader.read_view(4)
    with pytest.raises(StoreError, match="view 3 .*4 of 6 views are missing"):
        reader.read_views([0, 3, 1])
    # a view finished after the reader opened becomes readable without reopening
    rng = np.random.default_rng(5)
    writer.write_view(4, random_view(rng, cfg, 4))
    assert reader.read_view(4, ["fg_mask"])["fg_mask"].shape == (12, 16)
    writer.reset_done([4])
    with pytest.raises(StoreError, match="4 of 6 views are missing"):
        open_store(url).read_view(4)


@pytest.mark.parametrize(
    ("override", "stored", "expected"),
    [
        ("model.bev.xbound=[-8.0, 8.0, 0.5]", "[-8.0, 8.0, 1.0]", "[-8.0, 8.0, 0.5]"),
        ("model.bev.ybound=[-7.0, 7.0, 1.0]", "[-6.0, 6.0, 1.0]", "[-7.0, 7.0, 1.0]"),
        ("model.channels.cam=8", "'cam': 4", "'cam': 8"),
        ("model.channels.fused=7", "'fused': 5", "'fused': 7"),
        (
            "model.head.tasks=[[car, truck, construction_vehicle, bus, trailer, barrier, motorcycle, bicycle, "
            "pedestrian, traffic_cone]]",
            "[['car'], ['truck', 'construction_vehicle']",
            "[['car', 'truck'",
        ),
    ],
)
def test_reader_refuses_incompatible_config_naming_both_values(
    tmp_path: Path, cfg: Config, override: str, stored: str, expected: str
) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=1)
    other = tiny_cfg(override, "model.head.nms_radius=[1.0]") if "tasks" in override else tiny_cfg(override)
    with pytest.raises(StoreError) as info:
        open_store(url, expect=layout(other))
    msg = str(info.value)
    assert stored in msg and expected in msg and "\n" not in msg


@pytest.mark.parametrize(("key", "value"), [("schema_version", 99), ("class_names", ["car", "bus"])])
def test_reader_refuses_other_schema_or_classes(tmp_path: Path, cfg: Config, key: str, value: object) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=1)
    zarr.open_group(LocalStore(url), mode="r+").attrs[key] = value
    with pytest.raises(StoreError) as info:
        open_store(url, expect=layout(cfg))
    msg = str(info.value)
    assert str(value) in msg
    assert (f"expects {SCHEMA_VERSION}" in msg) if key == "schema_version" else ("'traffic_cone'" in msg)


@pytest.mark.parametrize(("version", "fix"), [(SCHEMA_VERSION + 1, "upgrade simdistill to read it"),
                                             (SCHEMA_VERSION - 1, "re-export it with this simdistill"),
                                             (None, "no usable schema_version")])
def test_reader_opens_only_its_own_schema_version(tmp_path: Path, cfg: Config, version: object, fix: str) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=1)
    zarr.open_group(LocalStore(url), mode="r+").attrs["schema_version"] = version
    with pytest.raises(StoreError) as info:
        open_store(url)  # no layout to compare: the version alone is checked
    assert fix in str(info.value) and f"expects {SCHEMA_VERSION}" in str(info.value) and "\n" not in str(info.value)
    assert open_store(url, any_version=True).n_views == N_VIEWS  # what `store info` and `store verify` use


def test_corrupted_chunk_is_reported_by_read_and_verify(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    tvs = write_store(url, cfg)
    chunk = url / "cam_bev" / "c" / "2" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 4):
        data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (url / "lidar_bev" / "c" / "4" / "0" / "0" / "0").unlink()  # a lost file reads as the NaN fill value

    reader = open_store(url)
    for call in (lambda: reader.read_view(2), lambda: reader.read_views([1, 2], ["fg_mask", "cam_bev"])):
        with pytest.raises(StoreError) as info:
            call()
        msg = str(info.value)
        assert "view 2 array 'cam_bev' is corrupted" in msg and "simdistill store verify" in msg
    np.testing.assert_array_equal(reader.read_view(1)["cam_bev"], expected_stored(tvs[1], cfg)["cam_bev"])

    report = verify_store(str(url), progress=False)
    assert not report.ok and report.n_done == N_VIEWS
    assert [(v, name) for v, name, _ in report.bad] == [(2, "cam_bev"), (4, "lidar_bev")]
    assert "checksum" in report.bad[0][2] and "non-finite" in report.bad[1][2]
    assert report.bad_views == [2, 4] and "view 2 cam_bev" in report.to_text()

    clean = tmp_path / "clean.zarr"
    write_store(clean, cfg, views=3)
    report = verify_store(str(clean), progress=False)
    assert report.ok and report.n_done == 3 and "all done views verified" in report.to_text()
    group = zarr.open_group(LocalStore(clean), mode="r+")
    group.attrs["channels"] = {"cam": 9, "lidar": 6, "fused": 5}  # attributes that no longer match the arrays
    group["sample_index"][1] = 7  # and a sample index beyond the dataset's 3 samples
    report = verify_store(str(clean), progress=False)
    assert report.bad == [
        (-1, "cam_bev", "shape (6, 4, 12, 16), expected (6, 9, 12, 16)"),
        (1, "sample_index", "sample_index 7 is outside 0..2 (a missing chunk?)"),
    ]


def test_missing_store_and_missing_arrays_are_clear(tmp_path: Path, cfg: Config) -> None:
    with pytest.raises(StoreError, match="no feature store at"):
        open_store(tmp_path / "nothing.zarr")
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=1)
    reader = open_store(url)
    with pytest.raises(StoreError, match="lacks array\\(s\\) teacher_depth"):
        reader.require(["cam_bev", "teacher_depth"])
