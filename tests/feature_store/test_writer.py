"""Writing views: what comes back equals the float16 of the masked, compacted input; done only after the data; failures
while writing are clear and leave finished views valid; whole shards."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers.store import (
    N_VIEWS,
    P,
    SHA,
    VPS,
    expected_stored,
    layout,
    make_attrs,
    random_view,
    store_args,
    tiny_cfg,
    write_store,
)
from zarr.storage import LocalStore

from simdistill.config import Config
from simdistill.errors import StoreError
from simdistill.feature_store import compact_boxes, create_store, open_for_resume, open_store, verify_store
from simdistill.feature_store.schema import SCHEMA, SCHEMA_VERSION


def test_round_trip_equals_float16_of_masked_compacted_input(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    tvs = write_store(url, cfg)
    reader = open_store(url, expect=layout(cfg))
    assert reader.n_views == N_VIEWS and reader.done_views().all()
    for v, tv in enumerate(tvs):
        got = reader.read_view(v)
        want = expected_stored(tv, cfg)
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
            if SCHEMA[name].dtype == "float16":
                assert got[name].dtype == np.float32
    # batched reads keep the requested order, duplicates included
    order = [4, 1, 4, 0]
    batch = reader.read_views(order, ["cam_bev", "boxes", "sample_index"])
    assert batch["cam_bev"].shape == (4, 4, 12, 16) and batch["boxes"].shape == (4, 6, 10, 12, 16)
    for i, v in enumerate(order):
        np.testing.assert_array_equal(batch["cam_bev"][i], expected_stored(tvs[v], cfg)["cam_bev"])
    assert batch["sample_index"].tolist() == [2, 0, 2, 0]
    a = reader.attrs
    assert a["schema_version"] == SCHEMA_VERSION and a["teacher"]["checkpoint_sha256"] == SHA
    assert a["bev"] == {"xbound": [-8.0, 8.0, 1.0], "ybound": [-6.0, 6.0, 1.0], "grid_size": [12, 16]}
    assert a["channels"] == {"cam": 4, "lidar": 6, "fused": 5}
    assert a["codecs"]["mode"] == "lossless" and a["class_names"][0] == "car" and len(a["tasks"]) == 6
    assert a["aug_layout"] == [f"p{i}" for i in range(P)] and a["views_per_sample"] == VPS
    assert a["teacher"]["config"] == {"channels": [4, 6, 5]} and a["dataset"]["split"] == "mini_train"
    assert a["config"]["model"]["channels"]["cam"] == 4 and a["package_version"]
    metadata = json.loads((url / "cam_bev" / "zarr.json").read_text())
    names = [c["name"] for c in metadata["codecs"]]
    assert names == ["bytes", "blosc", "crc32c"] and metadata["data_type"] == "float16"
    assert metadata["chunk_grid"]["configuration"]["chunk_shape"] == [1, 4, 12, 16]


def test_without_compaction_boxes_are_kept_whole(tmp_path: Path) -> None:
    cfg = tiny_cfg("store_format.compact_boxes=false")
    tvs = write_store(tmp_path / "s.zarr", cfg, views=1)
    got = open_store(tmp_path / "s.zarr").read_view(0, ["boxes"])["boxes"]
    np.testing.assert_array_equal(got, tvs[0].boxes.astype(np.float16).astype(np.float32))


def test_bad_view_values_are_clear_errors(tmp_path: Path, cfg: Config) -> None:
    rng = np.random.default_rng(2)
    writer = create_store(str(tmp_path / "s.zarr"), **store_args(cfg), n_views=N_VIEWS, aug_dim=P,
                          attrs=make_attrs(cfg))
    tv = random_view(rng, cfg, 3)
    tv.fused_bev = tv.fused_bev[:, :, :-1]
    with pytest.raises(StoreError, match=r"view 3 array 'fused_bev' has shape \(5, 12, 15\).*\(5, 12, 16\)"):
        writer.write_view(3, tv)
    tv = random_view(rng, cfg, 3)
    tv.heatmap[0, 0, 0] = 1e6
    with pytest.raises(StoreError, match="view 3 array 'heatmap' has .value. 1e\\+06, beyond .*float16"):
        writer.write_view(3, tv)
    tv = random_view(rng, cfg, 3)
    tv.cam_bev[1, 2, 3] = np.nan
    with pytest.raises(StoreError, match="view 3 array 'cam_bev' has NaN"):
        writer.write_view(3, tv)
    with pytest.raises(StoreError, match="outside the store's 0..5"):
        writer.write_view(6, random_view(rng, cfg, 0))
    assert not writer.done_views().any()
    with pytest.raises(StoreError, match="n_views=5 but the dataset has 3 samples"):
        create_store(str(tmp_path / "t.zarr"), **store_args(cfg), n_views=5, aug_dim=P, attrs=make_attrs(cfg))


def test_disk_full_is_a_store_error_and_finished_views_stay_valid(
    tmp_path: Path, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = tmp_path / "s.zarr"
    tvs = write_store(url, cfg, views=2)
    writer = open_for_resume(str(url), attrs=make_attrs(cfg))

    async def full(self: LocalStore, key: str, value: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalStore, "set", full)
    with pytest.raises(StoreError, match="disk full while writing views 2..2 .*views already marked done stay valid"):
        writer.write_view(2, tvs[2])
    monkeypatch.undo()
    reader = open_store(url)
    assert reader.done_views().tolist() == [True, True, False, False, False, False]
    np.testing.assert_array_equal(reader.read_view(1)["cam_bev"], expected_stored(tvs[1], cfg)["cam_bev"])


def test_done_is_not_set_when_a_chunk_write_fails(tmp_path: Path, cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    url = tmp_path / "s.zarr"
    tvs = write_store(url, cfg, views=0)
    writer = open_for_resume(str(url), attrs=make_attrs(cfg))
    real_set = LocalStore.set

    async def flaky(self: LocalStore, key: str, value: object) -> None:
        if key.startswith("boxes/"):
            raise OSError(errno.EIO, "I/O error")
        await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", flaky)
    with pytest.raises(OSError, match="I/O error"):
        writer.write_view(0, tvs[0])
    monkeypatch.undo()
    assert not open_store(url).done_views()[0]


def test_unwritable_output_is_a_store_error(tmp_path: Path, cfg: Config) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot write the feature store at .*a_file/s.zarr .*writable output path"):
        create_store(str(blocker / "s.zarr"), **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    # overwrite never deletes a directory (or file) that is not a feature store
    for victim in (blocker, tmp_path):
        with pytest.raises(StoreError, match="exists and is not a feature store; choose another output path"):
            create_store(str(victim), **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg),
                         overwrite=True)
    assert blocker.read_text() == "not a directory"


def test_sharded_store_round_trips_per_whole_shard(tmp_path: Path) -> None:
    cfg = tiny_cfg("store_format.sharding=true", "store_format.views_per_shard=4")
    url = tmp_path / "sharded.zarr"
    n_samples = 5  # 10 views: shards of 4, 4, 2
    attrs = make_attrs(cfg, n_samples=n_samples)
    rng = np.random.default_rng(6)
    tvs = [random_view(rng, cfg, v) for v in range(2 * n_samples)]
    writer = create_store(str(url), **store_args(cfg), n_views=2 * n_samples, aug_dim=P, attrs=attrs)
    ranges = writer.task_ranges(3)
    assert ranges == [range(0, 4), range(4, 8), range(8, 10)]
    assert writer.task_ranges(5) == [range(0, 8), range(8, 10)]
    with pytest.raises(StoreError, match="do not cover whole shards of 4 views"):
        writer.write_view(0, tvs[0])
    with pytest.raises(StoreError, match="do not cover whole shards"):
        writer.write_views(2, tvs[2:6])
    for r in ranges[::-1]:
        writer.write_views(r.start, tvs[r.start : r.stop])
    reader = open_store(url, expect=layout(cfg))
    assert reader.done_views().all()
    batch = reader.read_views([9, 0, 5])
    for i, v in enumerate([9, 0, 5]):
        want = expected_stored(tvs[v], cfg)
        for name in want:
            np.testing.assert_array_equal(batch[name][i], want[name], err_msg=f"{name} view {v}")
    shard_files = sorted(p.relative_to(url / "cam_bev").as_posix() for p in (url / "cam_bev").rglob("c/*/0/0/0"))
    assert shard_files == ["c/0/0/0/0", "c/1/0/0/0", "c/2/0/0/0"]
    assert len(list((url / "done" / "c").iterdir())) == 10  # one done file per view
    assert verify_store(str(url), progress=False).ok
