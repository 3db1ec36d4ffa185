"""mmdet3d v1.x info pickles as a data source: our writer, InfoFileSource == NuScenesSource, refusals, dispatch."""

from __future__ import annotations

import math
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.samples import assert_same_boxes, assert_same_sample
from typer.testing import CliRunner

from simdistill.config import CAMERA_NAMES, CLASS_NAMES, DataConfig
from simdistill.errors import DataError
from simdistill.pipeline import (
    InfoFileSource,
    NuScenesSource,
    load_info_file,
    open_data_source,
    write_mmdet3d_infos,
)
from simdistill.pipeline.mmdet3d_infos import MMDET3D_CLASSES

VERSION = "v1.0-mini"
SPLITS = ("mini_train", "mini_val")


@pytest.fixture(scope="module")
def infos(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_mmdet3d_infos(tiny_world, VERSION, tmp_path_factory.mktemp("infos"))


def _rewrite(data: dict, path: Path) -> Path:
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=2)
    return path


    np.testing.assert_array_equal(a.gt_labels, b.gt_labels)


@pytest.mark.parametrize("split", SPLITS)
def test_every_key_frame_matches_the_devkit_source(tiny_world: Path, infos: dict[str, Path], split: str) -> None:
    mine = InfoFileSource(infos[split], tiny_world, split=split, sweeps=2)
    ref = NuScenesSource(tiny_world, VERSION, split, sweeps=2)
    assert (mine.version, mine.split, mine.sweeps, mine.dataroot) == (VERSION, split, 2, ref.dataroot)
    assert sorted(mine.tokens) == sorted(ref.tokens) and len(mine) == len(ref)
    with_history = 0
    for i, token in enumerate(ref.tokens):
        j = mine.tokens.index(token)
        a, b = mine.load(j), ref.load(i)
        assert_same_sample(a, b)
        with_history += len(a.sweeps) == 2
        assert mine.image_hw(j) == ref.image_hw(i)
        meta_a, meta_b = mine.sample_meta(j), ref.sample_meta(i)
        assert (meta_a.token, meta_a.timestamp) == (meta_b.token, meta_b.timestamp)
        np.testing.assert_allclose(meta_a.ego2global, meta_b.ego2global, rtol=1e-6, atol=1e-6)
    assert with_history >= len(ref) // 2  # the comparison covered previous sweeps, not only key frames


def test_drop_empty_boxes_follows_the_devkit_rule(tiny_world: Path, infos: dict[str, Path]) -> None:
    split = "mini_train"
    counts = {}
    for drop in (True, False):
        mine = InfoFileSource(infos[split], tiny_world, split=split, drop_empty_boxes=drop)
        ref = NuScenesSource(tiny_world, VERSION, split, drop_empty_boxes=drop)
        for i, token in enumerate(ref.tokens):
            a, b = mine.load(mine.tokens.index(token)), ref.load(i)
            assert_same_boxes(a, b)
            counts[drop] = counts.get(drop, 0) + len(a.gt_boxes)
    assert counts[False] > counts[True] > 0  # the tiny world has boxes with no LiDAR/radar point


def test_written_file_has_mmdet3d_layout(tiny_world: Path, infos: dict[str, Path]) -> None:
    assert {s: p.name for s, p in infos.items()} == {"mini_train": "nuscenes_infos_train.pkl",
                                                     "mini_val": "nuscenes_infos_val.pkl"}
    raw = infos["mini_val"].read_bytes()
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2, as mmengine.dump writes
    data = pickle.loads(raw)
    assert list(data) == ["metainfo", "data_list"]
    assert data["metainfo"] == {"categories": {c: i for i, c in enumerate(MMDET3D_CLASSES)}, "dataset": "nuscenes",
                                "version": VERSION, "info_version": "1.1"}
    assert [d["sample_idx"] for d in data["data_list"]] == list(range(len(data["data_list"])))
    info = next(d for d in data["data_list"] if "lidar_sweeps" in d)
    assert list(info) == ["sample_idx", "token", "timestamp", "ego2global", "images", "lidar_points", "lidar_sweeps",
                          "instances"]
    assert isinstance(info["timestamp"], float) and info["timestamp"] < 2e9  # seconds
    assert list(info["images"]) == list(CAMERA_NAMES)
    cam = info["images"]["CAM_FRONT"]
    assert list(cam) == ["img_path", "cam2img", "cam2ego", "sample_data_token", "timestamp", "lidar2cam"]
    assert "/" not in cam["img_path"] and (tiny_world / "samples" / "CAM_FRONT" / cam["img_path"]).is_file()
    assert all(np.float32(v) == v for row in cam["lidar2cam"] for v in row)  # float32-rounded python floats
    assert info["lidar_points"]["num_pts_feats"] == 5 and "/" not in info["lidar_points"]["lidar_path"]
    sweep = info["lidar_sweeps"][0]
    assert list(sweep) == ["timestamp", "ego2global", "lidar_points", "sample_data_token"]
    assert list(sweep["lidar_points"]) == ["num_pts_feats", "lidar_path", "lidar2ego", "lidar2sensor"]
    assert sweep["lidar_points"]["num_pts_feats"] is None and sweep["timestamp"] < info["timestamp"]
    inst = info["instances"][0]
    assert list(inst) == ["bbox_label", "bbox_3d", "bbox_3d_isvalid", "bbox_label_3d", "num_lidar_pts",
                          "num_radar_pts", "velocity"]
    assert isinstance(inst["bbox_3d_isvalid"], np.bool_) and isinstance(inst["num_lidar_pts"], np.int64)
    assert len(inst["bbox_3d"]) == 7 and len(inst["velocity"]) == 2 and isinstance(inst["bbox_label"], int)


def test_labels_map_through_metainfo_and_ignored_classes_drop(tiny_world: Path, infos: dict[str, Path],
                                                              tmp_path: Path) -> None:
    split = "mini_val"
    data = load_info_file(infos[split])
    ref = InfoFileSource(infos[split], tiny_world, split=split).load(0)
    # the same file with another label order, one instance of an ignored class and a NaN velocity
    order = list(reversed(MMDET3D_CLASSES))
    data["metainfo"]["categories"] = {**{c: i for i, c in enumerate(order)}, "animal": -1}
    first = data["data_list"][0]
    for inst in first["instances"]:
        inst["bbox_label"] = inst["bbox_label_3d"] = order.index(MMDET3D_CLASSES[inst["bbox_label_3d"]])
    valid = [k for k, inst in enumerate(first["instances"]) if inst["bbox_3d_isvalid"]]
    first["instances"][valid[0]]["bbox_label_3d"] = -1
    first["instances"][valid[1]]["velocity"] = [float("nan"), float("nan")]
    got = InfoFileSource(_rewrite(data, tmp_path / "relabelled.pkl"), tiny_world, split=split).load(0)
    assert len(ref.gt_boxes) >= 3 and len(got.gt_boxes) == len(ref.gt_boxes) - 1
    assert [CLASS_NAMES[k] for k in got.gt_labels] == [CLASS_NAMES[k] for k in ref.gt_labels[1:]]
    np.testing.assert_array_equal(got.gt_boxes[0, :7], ref.gt_boxes[1, :7])
    np.testing.assert_array_equal(got.gt_boxes[0, 7:], [0.0, 0.0])  # NaN velocity -> 0, as mmdet3d does
    np.testing.assert_array_equal(got.gt_boxes[1:], ref.gt_boxes[2:])


def test_restricted_unpickler_refuses_foreign_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class Eval:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    for evil, name in ((Shell(), os.system.__module__ + ".system"), (Eval(), "builtins.eval")):
        path = _rewrite({"metainfo": {"version": VERSION}, "data_list": [evil]}, tmp_path / "evil.pkl")
        with pytest.raises(DataError, match=rf"evil.pkl references '{re.escape(name)}'.*refusing to load it"):
            load_info_file(path)
    assert not marker.exists()


def test_bad_files_give_data_errors(tiny_world: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"info file .*nowhere.pkl does not exist; write it with"):
        load_info_file(tmp_path / "nowhere.pkl")
    old = _rewrite({"infos": [{"token": "t"}], "metadata": {"version": VERSION}}, tmp_path / "old.pkl")
    with pytest.raises(DataError, match=r"mmdet3d 0.x format .*update_infos_to_v2.py"):
        InfoFileSource(old, tiny_world, split="mini_val")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"junk.pkl is not a readable pickle"):
        load_info_file(tmp_path / "junk.pkl")
    bare = _rewrite({"metainfo": {"categories": {}}, "data_list": [{"token": "t"}]}, tmp_path / "bare.pkl")
    with pytest.raises(DataError, match=r"bare.pkl has no metainfo.version"):
        InfoFileSource(bare, tiny_world, split="mini_val")
    with pytest.raises(DataError, match=r"unknown split 'val' for v1.0-mini"):
        InfoFileSource(_rewrite({"metainfo": {"version": VERSION}, "data_list": [{"token": "t"}]},
                                tmp_path / "ok.pkl"), tiny_world, split="val")


def test_missing_data_file_is_named(tiny_world: Path, infos: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tiny_world, root, ignore=shutil.ignore_patterns("v1.0-*"))  # the info file needs no tables
    source = InfoFileSource(infos["mini_val"], root, split="mini_val", sweeps=2)
    image = root / "samples" / "CAM_BACK" / load_info_file(infos["mini_val"])["data_list"][0]["images"]["CAM_BACK"][
        "img_path"]
    image.unlink()
    with pytest.raises(DataError, match=rf"file {re.escape(str(image))} is missing"):
        source.load(0)
    assert len(source.load(1).sweeps) == 2  # the rest of the dataroot still loads without the devkit tables


def test_source_pickles_without_its_data_list(tiny_world: Path, infos: dict[str, Path]) -> None:
    source = InfoFileSource(infos["mini_train"], tiny_world, split="mini_train")
    blob = pickle.dumps(source)
    assert len(blob) < infos["mini_train"].stat().st_size / 4  # Dask ships the path, not the samples
    clone = pickle.loads(blob)
    assert clone.tokens == source.tokens and clone.version == VERSION
    assert_same_sample(clone.load(2), source.load(2))


def test_open_data_source_dispatch(tiny_world: Path, infos: dict[str, Path]) -> None:
    tables = DataConfig(dataroot=str(tiny_world), version=VERSION, sweeps=2)
    assert all(isinstance(open_data_source(tables, s), NuScenesSource) for s in ("train", "val", "mini_val"))
    data = DataConfig(dataroot=str(tiny_world), version=VERSION, infos_train=str(infos["mini_train"]))
    train = open_data_source(data, "train", drop_empty_boxes=False)
    assert isinstance(train, InfoFileSource) and train.split == "mini_train" and not train.drop_empty_boxes
    assert isinstance(open_data_source(data, "mini_train"), InfoFileSource)
    assert isinstance(open_data_source(data, "val"), NuScenesSource)
    data.infos_val = str(infos["mini_val"])
    val = open_data_source(data, "val")
    assert isinstance(val, InfoFileSource) and val.split == "mini_val" and val.info_path == infos["mini_val"]
    data.version = "v1.0-trainval"
    with pytest.raises(DataError, match=r"is for v1.0-mini but data.version is v1.0-trainval"):
        open_data_source(data, "train")


def test_train_and_export_teacher_from_info_files(tiny_world: Path, infos: dict[str, Path], tmp_path: Path) -> None:
    from conftest import make_tiny_config

    from simdistill.feature_store import open_store
    from simdistill.pipeline.sources import open_data_source
    from simdistill.teacher_export.export import export_teacher
    from simdistill.teacher_export.stored_view import stored_view_gt_boxes
    from simdistill.teacher.trainer import train_teacher

    cfg = make_tiny_config(tiny_world, [f"data.infos_train={infos['mini_train']}",
                                        f"data.infos_val={infos['mini_val']}", "export.split=val"])
    assert isinstance(open_data_source(cfg.data, "train"), InfoFileSource)
    result = train_teacher(cfg, out_dir=tmp_path / "run", progress=False, stop_after=2)
    assert result.steps == 2 and math.isfinite(result.last_terms["loss"]) and result.checkpoint.is_file()

    store = str(tmp_path / "val.zarr")
    export_teacher(cfg, checkpoint=result.checkpoint, out=store, progress=False)
    dataset = open_store(store).attrs["dataset"]
    assert dataset["infos"] == str(infos["mini_val"]) and dataset["split"] == "mini_val"
    source = InfoFileSource(infos["mini_val"], tiny_world, split="mini_val")
    assert dataset["sample_tokens"] == source.tokens
    boxes = stored_view_gt_boxes(store, 0)  # rebuilt through the info file the store names
    assert boxes.shape == source.load(0).gt_boxes.shape


def test_make_demo_data_writes_infos(tmp_path: Path) -> None:
    from simdistill.cli import app

    out = tmp_path / "world"
    args = ["make-demo-data", str(out), "--scenes", "2", "--samples-per-scene", "2", "--mmdet3d-infos",
            "--set", "world.image_width=64", "--set", "world.image_height=36", "--set", "world.lidar_beams=8",
            "--set", "world.lidar_azimuth_steps=64", "--set", "world.objects_per_scene=3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("nuscenes_infos_train.pkl", "nuscenes_infos_val.pkl"):
        assert f"{out / name}" in result.output
        assert load_info_file(out / name)["metainfo"]["version"] == VERSION
    total = sum(len(load_info_file(out / n)["data_list"]) for n in ("nuscenes_infos_train.pkl",
                                                                  "nuscenes_infos_val.pkl"))
    assert total == 4
