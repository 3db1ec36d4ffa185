"""The Zarr v3 feature store: schema, writer transforms, done/lock/resume semantics, integrity, info."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from numcodecs import BitRound
from zarr.storage import LocalStore

from simdistill.config import Config, load_config
from simdistill.errors import ConfigError, StoreError
from simdistill.feature_store import (
    StoreAttrs,
    TeacherView,
    arrays_for_losses,
    compact_boxes,
    create_or_resume_store,
    create_store,
    open_for_resume,
    open_for_write,
    open_store,
    render_view_png,
    store_info,
    verify_store,
)
from simdistill.feature_store.codecs import lossy_max_abs, lossy_rel_error
from simdistill.feature_store.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    array_shape,
    dim_sizes,
)
from simdistill.feature_store.show import box_corners_grid
from simdistill.feature_store.storage import StoreLike

N_SAMPLES, VPS, P, K = 3, 2, 7, 5
N_VIEWS = N_SAMPLES * VPS
SHA = "a" * 64


# ---------------------------------------------------------------------------------------------------
# helpers (also used by test_store_prefetch.py)


def tiny_cfg(*overrides: str) -> Config:
    """A 12 x 16 BEV grid (H != W catches transposes) with 4 / 6 / 5 channels."""
    return load_config(
        "configs/demo.yaml",
        [
            "model.bev.xbound=[-8.0, 8.0, 1.0]",
            "model.bev.ybound=[-6.0, 6.0, 1.0]",
            "model.channels.cam=4",
            "model.channels.lidar=6",
            "model.channels.fused=5",
            *overrides,
        ],
    )


def make_attrs(
    cfg: Config, *, sha: str = SHA, n_samples: int = N_SAMPLES, tokens: list[str] | None = None
) -> StoreAttrs:
    return StoreAttrs(
        teacher={"name": "tiny-teacher", "checkpoint": "/ckpt/teacher.pt", "checkpoint_sha256": sha,
                 "config": {"channels": (4, 6, 5)}},
        dataset={"dataroot": "/data/demo", "version": "v1.0-mini", "split": "mini_train",
                 "sample_tokens": tokens or [f"token{i}" for i in range(n_samples)]},
        augmentation={"rand_flip": cfg.augment.rand_flip},
        views_per_sample=VPS,
        aug_layout=[f"p{i}" for i in range(P)],
    )


def random_view(rng: np.random.Generator, cfg: Config, v: int, *, fg_fraction: float = 0.5) -> TeacherView:
    h, w = cfg.model.bev.grid_size
    t = len(cfg.model.head.tasks)
    ch = cfg.model.channels

    def f(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32) * 3

    fg = rng.random((h, w)).astype(np.float32) * 1.5
    fg[rng.random((h, w)) > fg_fraction] = 0
    return TeacherView(
        cam_bev=f(ch.cam, h, w),
        lidar_bev=f(ch.lidar, h, w),
        fused_bev=f(ch.fused, h, w),
        heatmap=f(10, h, w),
        boxes=f(t, 10, h, w),
        fg_mask=fg,
        aug=f(P),
        sample_index=v // VPS,
        view=v % VPS,
        centre_indices=rng.integers(0, h * w, size=(t, K)),
        centre_mask=rng.random((t, K)) < 0.6,
    )


def write_store(path: StoreLike, cfg: Config, *, seed: int = 0, views: int | None = None, **kw) -> list[TeacherView]:
    """Create a store and write its first `views` views (all by default); returns every view's input."""
    rng = np.random.default_rng(seed)
    tvs = [random_view(rng, cfg, v, **kw) for v in range(N_VIEWS)]
    writer = create_store(path, cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    with writer.lock():
        for v in range(N_VIEWS if views is None else views):
            writer.write_view(v, tvs[v])
    return tvs


def expected_stored(tv: TeacherView, cfg: Config) -> dict[str, np.ndarray]:
    """What the store must return for a view, computed by hand: masking, compaction, float16 rounding."""
    h, w = cfg.model.bev.grid_size
    boxes = np.zeros_like(tv.boxes)
    for t in range(tv.boxes.shape[0]):
        for k in range(K):
            if tv.centre_mask[t, k]:
                r, c = divmod(int(tv.centre_indices[t, k]), w)
                boxes[t, :, r, c] = tv.boxes[t, :, r, c]
    lidar = tv.lidar_bev.copy()
    lidar[:, tv.fg_mask <= 0] = 0
    f16 = lambda x: x.astype(np.float16).astype(np.float32)  # noqa: E731
    return {
        "cam_bev": f16(tv.cam_bev),
        "lidar_bev": f16(lidar),
        "fused_bev": f16(tv.fused_bev),
        "heatmap": f16(tv.heatmap),
        "boxes": f16(boxes),
        "fg_mask": f16(tv.fg_mask),
        "aug": tv.aug,
        "sample_index": np.int32(tv.sample_index),
        "view": np.int16(tv.view),
    }


@pytest.fixture()
def cfg() -> Config:
    return tiny_cfg()


# ---------------------------------------------------------------------------------------------------
# schema


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
    sizes = dim_sizes(cfg, n_views=9, aug_dim=P)
    assert array_shape("cam_bev", sizes) == (9, 4, 12, 16)
    assert array_shape("lidar_bev", sizes) == (9, 6, 12, 16)
    assert array_shape("fused_bev", sizes) == (9, 5, 12, 16)
    assert array_shape("heatmap", sizes) == (9, 10, 12, 16)
    assert array_shape("boxes", sizes) == (9, 6, 10, 12, 16)
    assert array_shape("fg_mask", sizes) == (9, 12, 16)
    assert array_shape("aug", sizes) == (9, P)
    assert array_shape("done", sizes) == (9,)


# ---------------------------------------------------------------------------------------------------
# write → read


def test_round_trip_equals_float16_of_masked_compacted_input(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    tvs = write_store(url, cfg)
    reader = open_store(url, expect=cfg)
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


def test_compact_boxes_keeps_exactly_what_mmd_p_gathers(cfg: Config) -> None:
    rng = np.random.default_rng(1)
    tv = random_view(rng, cfg, 0)
    h, w = cfg.model.bev.grid_size
    compacted = compact_boxes(tv.boxes, tv.centre_indices, tv.centre_mask)
    student = rng.standard_normal(tv.boxes.shape).astype(np.float32)

    def mmd_p_box_term(teacher: np.ndarray) -> float:
        """SmoothL1(beta=1/9) between student and teacher boxes gathered at real GT centres, by hand."""
        total, beta = 0.0, 1.0 / 9.0
        for t in range(teacher.shape[0]):
            for k in range(K):
                if not tv.centre_mask[t, k]:
                    continue
                r, c = divmod(int(tv.centre_indices[t, k]), w)
                d = np.abs(student[t, :, r, c] - teacher[t, :, r, c])
                total += float(np.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta).sum())
        return total

    assert mmd_p_box_term(compacted) == mmd_p_box_term(tv.boxes)
    kept_cells = {(t, int(i)) for t in range(6) for i, m in zip(tv.centre_indices[t], tv.centre_mask[t]) if m}
    nonzero_cells = {(t, r * w + c) for t, r, c in zip(*np.nonzero(np.abs(compacted).sum(axis=1)))}
    assert nonzero_cells == kept_cells
    bad = tv.centre_indices.copy()
    bad[0, 0], tv.centre_mask[0, 0] = h * w, True
    with pytest.raises(StoreError, match="outside the 12x16 BEV grid"):
        compact_boxes(tv.boxes, bad, tv.centre_mask)


def test_bad_view_values_are_clear_errors(tmp_path: Path, cfg: Config) -> None:
    rng = np.random.default_rng(2)
    writer = create_store(str(tmp_path / "s.zarr"), cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
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
        create_store(str(tmp_path / "t.zarr"), cfg=cfg, n_views=5, aug_dim=P, attrs=make_attrs(cfg))


# ---------------------------------------------------------------------------------------------------
# done, compatibility, resume, lock


def test_done_semantics_refuse_unfinished_views(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=2)
    writer = open_for_resume(str(url), cfg=cfg, attrs=make_attrs(cfg))
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
        open_store(url, expect=other)
    msg = str(info.value)
    assert stored in msg and expected in msg and "\n" not in msg


@pytest.mark.parametrize(("key", "value"), [("schema_version", 99), ("class_names", ["car", "bus"])])
def test_reader_refuses_other_schema_or_classes(tmp_path: Path, cfg: Config, key: str, value: object) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=1)
    zarr.open_group(LocalStore(url), mode="r+").attrs[key] = value
    with pytest.raises(StoreError) as info:
        open_store(url, expect=cfg)
    msg = str(info.value)
    assert str(value) in msg
    assert (f"expects {SCHEMA_VERSION}" in msg) if key == "schema_version" else ("'traffic_cone'" in msg)


def test_resume_refuses_other_teacher_config_or_dataset(tmp_path: Path, cfg: Config) -> None:
    url = str(tmp_path / "s.zarr")
    write_store(url, cfg, views=2)
    with pytest.raises(StoreError, match=f"teacher.checkpoint_sha256 was '{SHA}', now '{'b' * 64}'"):
        open_for_resume(url, cfg=cfg, attrs=make_attrs(cfg, sha="b" * 64))
    flipped = tiny_cfg("augment.rand_flip=false")
    with pytest.raises(StoreError, match="augment.rand_flip was True, now False"):
        open_for_resume(url, cfg=flipped, attrs=make_attrs(cfg))
    with pytest.raises(StoreError, match="dataset.sample_tokens"):
        open_for_resume(url, cfg=cfg, attrs=make_attrs(cfg, tokens=["x", "y", "z"]))
    # settings and provenance that do not change the contents may differ
    moved = make_attrs(cfg)
    moved.teacher["checkpoint"], moved.dataset["dataroot"] = "/elsewhere/teacher.pt", "/elsewhere/data"
    writer = open_for_resume(url, cfg=tiny_cfg("export.workers=7", "student_train.lr=0.1"), attrs=moved)
    assert np.flatnonzero(~writer.done_views()).tolist() == [2, 3, 4, 5]
    with pytest.raises(StoreError, match="already exists .* pass --overwrite"):
        create_store(url, cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    # what export-teacher calls: resume when compatible, refuse otherwise, replace with overwrite
    writer = create_or_resume_store(url, cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=moved)
    assert np.flatnonzero(~writer.done_views()).tolist() == [2, 3, 4, 5]
    with pytest.raises(StoreError, match="augment.rand_flip was True, now False.*--overwrite"):
        create_or_resume_store(url, cfg=flipped, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(flipped))
    writer = create_or_resume_store(
        url, cfg=flipped, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(flipped), overwrite=True
    )
    assert not writer.done_views().any()
    fresh = create_or_resume_store(str(tmp_path / "new.zarr"), cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=moved)
    assert np.flatnonzero(~fresh.done_views()).tolist() == list(range(N_VIEWS))


def test_open_for_write_uses_the_stores_own_config_and_reports_bytes(tmp_path: Path) -> None:
    cfg = tiny_cfg("store_format.compact_boxes=false")
    url = str(tmp_path / "s.zarr")
    tvs = write_store(url, cfg, views=0)
    writer = open_for_write(url)  # what an export task in a worker process does: no config at hand
    assert writer.cfg.store_format.compact_boxes is False and writer.n_views == N_VIEWS
    nbytes = writer.write_view(3, tvs[3])
    view3_files = [
        f for f in Path(url).rglob("*") if f.is_file() and f.relative_to(url).parts[1:3] == ("c", "3")
    ]
    assert {f.relative_to(url).parts[0] for f in view3_files} == set(SCHEMA)
    assert nbytes == sum(f.stat().st_size for f in view3_files if f.relative_to(url).parts[0] != "done") > 0
    got = open_store(url).read_view(3, ["boxes"])["boxes"]
    np.testing.assert_array_equal(got, tvs[3].boxes.astype(np.float16).astype(np.float32))
    with pytest.raises(StoreError, match="no feature store at"):
        open_for_write(str(tmp_path / "missing.zarr"))


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_one(tmp_path: Path, cfg: Config) -> None:
    url = str(tmp_path / "s.zarr")
    first = create_store(url, cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    second = open_for_resume(url, cfg=cfg, attrs=make_attrs(cfg))
    lock_file = Path(url) / ".export.lock"
    with first.lock():
        held = json.loads(lock_file.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(StoreError) as info:
            with second.lock():
                pass
        msg = str(info.value)
        assert f"is being written by pid {os.getpid()} on host {socket.gethostname()} since" in msg
        assert f"remove {lock_file} if that process is gone" in msg
    assert not lock_file.exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": time.time() - 60}))
    with second.lock():
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert not lock_file.exists()

    lock_file.write_text(json.dumps({"pid": dead.pid, "host": "another-host", "time": time.time()}))
    with pytest.raises(StoreError, match="pid .* on host another-host"):
        with second.lock():
            pass


# ---------------------------------------------------------------------------------------------------
# failures while writing, corruption


def test_disk_full_is_a_store_error_and_finished_views_stay_valid(
    tmp_path: Path, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = tmp_path / "s.zarr"
    tvs = write_store(url, cfg, views=2)
    writer = open_for_resume(str(url), cfg=cfg, attrs=make_attrs(cfg))

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
    writer = open_for_resume(str(url), cfg=cfg, attrs=make_attrs(cfg))
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
        create_store(str(blocker / "s.zarr"), cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    # overwrite never deletes a directory (or file) that is not a feature store
    for victim in (blocker, tmp_path):
        with pytest.raises(StoreError, match="exists and is not a feature store; choose another output path"):
            create_store(str(victim), cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg), overwrite=True)
    assert blocker.read_text() == "not a directory"


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


def test_file_url_works(tmp_path: Path, cfg: Config) -> None:
    url = (tmp_path / "u.zarr").as_uri()
    assert url.startswith("file://")
    tvs = write_store(url, cfg, views=2)
    for where in (url, str(tmp_path / "u.zarr")):
        got = open_store(where, expect=cfg).read_view(1, ["fused_bev"])["fused_bev"]
        np.testing.assert_array_equal(got, expected_stored(tvs[1], cfg)["fused_bev"])
    assert (tmp_path / "u.zarr" / "fused_bev" / "c" / "1" / "0" / "0" / "0").is_file()


def test_fsspec_urls_work_and_missing_backends_are_clear(tmp_path: Path, cfg: Config) -> None:
    url = f"memory://{tmp_path.name}/s.zarr"  # fsspec's in-memory file system stands in for s3://
    tvs = write_store(url, cfg, views=3)
    reader = open_store(url, expect=cfg)
    assert reader.done_views().sum() == 3
    np.testing.assert_array_equal(reader.read_view(2)["boxes"], expected_stored(tvs[2], cfg)["boxes"])
    assert verify_store(url, progress=False).ok and store_info(url).n_done == 3
    with pytest.raises(StoreError, match="cannot open store URL 'gs://bucket/s.zarr' .*gcsfs"):  # not installed
        open_store("gs://bucket/s.zarr")


def test_missing_store_and_missing_arrays_are_clear(tmp_path: Path, cfg: Config) -> None:
    with pytest.raises(StoreError, match="no feature store at"):
        open_store(tmp_path / "nothing.zarr")
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=1)
    reader = open_store(url)
    with pytest.raises(StoreError, match="lacks array\\(s\\) teacher_depth"):
        reader.require(["cam_bev", "teacher_depth"])


# ---------------------------------------------------------------------------------------------------
# lossy and sharded modes


@pytest.mark.parametrize("keepbits", range(0, 10))
def test_lossy_range_bound_is_exact(keepbits: int) -> None:
    bound = lossy_max_abs(keepbits)
    below = np.nextafter(np.float16(bound), np.float16(0)) if bound <= 65504 else np.float16(65504)
    codec = BitRound(keepbits=keepbits)
    assert np.isfinite(codec.decode(codec.encode(np.array([below, -below], np.float16)))).all()
    if bound <= 65504:
        assert np.isinf(codec.decode(codec.encode(np.array([bound], np.float16)))).all() or keepbits == 0


def test_lossy_mode_error_bound_and_info(tmp_path: Path) -> None:
    keepbits = 4
    cfg = tiny_cfg("store_format.lossy=true", f"store_format.lossy_keepbits={keepbits}",
                   "store_format.lossy_arrays=[cam_bev, lidar_bev, fused_bev]")
    url = tmp_path / "lossy.zarr"
    tvs = write_store(url, cfg)
    reader = open_store(url, expect=cfg)
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
    writer = open_for_resume(str(url), cfg=cfg, attrs=make_attrs(cfg))
    with pytest.raises(StoreError, match="view 0 array 'cam_bev' has .value. 65000.*turn off lossy mode"):
        writer.write_view(0, tv)


def test_lossy_settings_are_validated(tmp_path: Path) -> None:
    cfg = tiny_cfg("store_format.lossy=true", "store_format.lossy_arrays=[cam_bev, aug]")
    with pytest.raises(ConfigError, match="store_format.lossy_arrays names 'aug'"):
        create_store(str(tmp_path / "s.zarr"), cfg=cfg, n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))


def test_sharded_store_round_trips_per_whole_shard(tmp_path: Path) -> None:
    cfg = tiny_cfg("store_format.sharding=true", "store_format.views_per_shard=4")
    url = tmp_path / "sharded.zarr"
    n_samples = 5  # 10 views: shards of 4, 4, 2
    attrs = make_attrs(cfg, n_samples=n_samples)
    rng = np.random.default_rng(6)
    tvs = [random_view(rng, cfg, v) for v in range(2 * n_samples)]
    writer = create_store(str(url), cfg=cfg, n_views=2 * n_samples, aug_dim=P, attrs=attrs)
    ranges = writer.task_ranges(3)
    assert ranges == [range(0, 4), range(4, 8), range(8, 10)]
    assert writer.task_ranges(5) == [range(0, 8), range(8, 10)]
    with pytest.raises(StoreError, match="do not cover whole shards of 4 views"):
        writer.write_view(0, tvs[0])
    with pytest.raises(StoreError, match="do not cover whole shards"):
        writer.write_views(2, tvs[2:6])
    for r in ranges[::-1]:
        writer.write_views(r.start, tvs[r.start : r.stop])
    reader = open_store(url, expect=cfg)
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


# ---------------------------------------------------------------------------------------------------
# info and rendering


def test_info_reports_sizes_and_ratios(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=4, fg_fraction=0.05)  # LiDAR BEV is mostly masked away
    info = store_info(str(url))
    assert (info.n_views, info.n_done, info.mode) == (N_VIEWS, 4, "lossless")
    assert info.teacher["checkpoint_sha256"] == SHA and info.dataset["samples"] == N_SAMPLES
    arrays = {a.name: a for a in info.arrays}
    assert list(arrays) == list(SCHEMA)
    assert all(a.bytes > 0 for a in arrays.values())
    assert info.bytes_total > sum(a.bytes for a in arrays.values())  # plus metadata
    lidar, cam = arrays["lidar_bev"], arrays["cam_bev"]
    assert lidar.ratio_vs_f16 > 3 and lidar.bits_per_value < cam.bits_per_value
    assert lidar.values == 4 * 6 * 12 * 16
    assert lidar.ratio_vs_f32 == pytest.approx(2 * lidar.ratio_vs_f16)
    assert lidar.bits_per_value == pytest.approx(16 / lidar.ratio_vs_f16)
    assert lidar.bytes_per_view == pytest.approx(lidar.bytes / 4)
    assert 0 < info.feature_bits_per_value < 16
    text = info.to_text()
    assert "lidar_bev" in text and "views done 4/6" in text and "lossless" in text


def test_render_view_png_writes_a_png(tmp_path: Path, cfg: Config) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, cfg, views=1)
    boxes = np.array([[0.5, -1.5, 0.0, 4.0, 2.0, 1.5, 0.3, 0.0, 0.0]], np.float32)
    out = render_view_png(str(url), 0, tmp_path / "png" / "view0.png", gt_boxes=boxes)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_box_corners_land_on_the_grid_cells() -> None:
    xbound, ybound = (-8.0, 8.0, 1.0), (-6.0, 6.0, 1.0)
    # centre of cell (row 2, col 5) is x = -8 + 5.5, y = -6 + 2.5; an axis-aligned 2 m x 1 m box around it
    box = np.array([[-2.5, -3.5, 0, 2.0, 1.0, 1.0, 0.0, 0, 0]])
    corners = box_corners_grid(box, xbound, ybound)[0]
    np.testing.assert_allclose(corners.mean(axis=0), [5.0, 2.0])
    np.testing.assert_allclose(np.ptp(corners, axis=0), [2.0, 1.0])
    rotated = box_corners_grid(box * [1, 1, 1, 1, 1, 1, 0, 1, 1] + [0, 0, 0, 0, 0, 0, np.pi / 2, 0, 0], xbound, ybound)
    np.testing.assert_allclose(np.ptp(rotated[0], axis=0), [1.0, 2.0], atol=1e-9)
