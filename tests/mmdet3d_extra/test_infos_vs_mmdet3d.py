"""Our mmdet3d info writer and reader against mmdet3d 1.4's own converter (run: .venv-mm/bin/python -m pytest).

mmdet3d's `tools/create_data.py nuscenes` = nuscenes_converter.create_nuscenes_infos, then
update_infos_to_v2.update_nuscenes_infos; both are run here from the installed package on the tiny world.
Deliberate differences (see simdistill/pipeline/mmdet3d_infos_write.py): we write no `cam_instances`, and a
sweep's `lidar_path` is absolute where mmdet3d keeps the path as it joined it (both resolve to the same file).
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Skipped where the mmdet3d extra is not installed (mmdet3d.structures also needs mmcv's compiled ops).
pytest.importorskip("mmdet3d.datasets")

import mmdet3d
from helpers.samples import assert_same_sample

from simdistill.pipeline import (
    InfoFileSource,
    NuScenesSource,
    load_info_file,
    write_mmdet3d_infos,
)

VERSION = "v1.0-mini"
FILES = {"mini_train": "nuscenes_infos_train.pkl", "mini_val": "nuscenes_infos_val.pkl"}
SKIPPED = {"cam_instances"}  # mmdet3d's per-camera mono-3D boxes; we do not write them


def _converter(name: str) -> Any:
    path = Path(mmdet3d.__file__).parent / ".mim" / "tools" / "dataset_converters" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"mmdet3d_tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mm_infos(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """mmdet3d's own v1.x infos of the tiny world, made as tools/create_data.py makes them."""
    work = tmp_path_factory.mktemp("mmdet3d")
    shadow = work / "data" / "nuscenes"  # update_infos_to_v2 opens './data/nuscenes' itself
    shadow.mkdir(parents=True)
    for entry in tiny_world.iterdir():
        (shadow / entry.name).symlink_to(entry)
    converter, updater = _converter("nuscenes_converter"), _converter("update_infos_to_v2")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        converter.create_nuscenes_infos("./data/nuscenes", "nuscenes", version=VERSION, max_sweeps=10)
        (work / "v2").mkdir()
        for name in FILES.values():
            updater.update_pkl_infos("nuscenes", out_dir=str(work / "v2"), pkl_path=f"./data/nuscenes/{name}")
    finally:
        os.chdir(cwd)
    return {split: work / "v2" / name for split, name in FILES.items()}


@pytest.fixture(scope="module")
def our_infos(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_mmdet3d_infos(tiny_world, VERSION, tmp_path_factory.mktemp("ours"))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def assert_same_value(ours: Any, theirs: Any, where: str) -> None:
    """Same structure, key order, types and values; floats to float32 precision (matrices are float32-rounded)."""
    if where.endswith("lidar_sweeps[].lidar_points.lidar_path"):
        a, b = Path(ours), Path(theirs)
        assert (a.name, a.parent.parent.name) == (b.name, b.parent.parent.name), where
        return
    assert type(ours) is type(theirs), f"{where}: {type(ours).__name__} != {type(theirs).__name__}"
    if isinstance(theirs, dict):
        assert list(ours) == [k for k in theirs if k not in SKIPPED], where
        for key in ours:
            assert_same_value(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        for a, b in zip(ours, theirs):
            assert_same_value(a, b, f"{where}[]")
    elif isinstance(theirs, float):
        assert (math.isnan(ours) and math.isnan(theirs)) or math.isclose(ours, theirs, rel_tol=1e-6, abs_tol=1e-6), (
            f"{where}: {ours} != {theirs}")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


@pytest.mark.parametrize("split", list(FILES))
def test_our_infos_equal_mmdet3d_field_by_field(mm_infos: dict[str, Path], our_infos: dict[str, Path],
                                                split: str) -> None:
    assert our_infos[split].name == mm_infos[split].name
    assert our_infos[split].read_bytes()[:2] == mm_infos[split].read_bytes()[:2]  # same pickle protocol
    with mm_infos[split].open("rb") as f:
        theirs = pickle.load(f)
    ours = load_info_file(our_infos[split])
    assert load_info_file(mm_infos[split]) is not None  # the restricted unpickler accepts mmdet3d's own file
    assert len(theirs["data_list"]) > 0 and any("lidar_sweeps" in d for d in theirs["data_list"])
    if split == "mini_train":  # the tiny world's empty boxes all lie in train scenes
        assert any(not i["bbox_3d_isvalid"] for d in theirs["data_list"] for i in d["instances"])
    assert_same_value(ours, theirs, split)


@pytest.mark.parametrize("split", list(FILES))
def test_info_source_reads_mmdet3d_files_like_the_tables(tiny_world: Path, mm_infos: dict[str, Path],
                                                         split: str) -> None:
    mine = InfoFileSource(mm_infos[split], tiny_world, split=split, sweeps=2)
    ref = NuScenesSource(tiny_world, VERSION, split, sweeps=2)
    assert sorted(mine.tokens) == sorted(ref.tokens)
    for i, token in enumerate(ref.tokens):
        # mmdet3d computes boxes with pyquaternion: equal to ~1e-12 before the float32 cast
        assert_same_sample(mine.load(mine.tokens.index(token)), ref.load(i), box_atol=1e-5)


def test_mmdet3d_dataset_reads_our_file_as_its_own(tiny_world: Path, mm_infos: dict[str, Path],
                                                   our_infos: dict[str, Path]) -> None:
    from mmdet3d.datasets import NuScenesDataset
    from mmdet3d.utils import register_all_modules

    from simdistill.pipeline.mmdet3d_infos import DATA_PREFIX

    register_all_modules()
    pipeline = [{"type": "LoadPointsFromFile", "coord_type": "LIDAR", "load_dim": 5, "use_dim": 5},
                {"type": "LoadPointsFromMultiSweeps", "sweeps_num": 1, "load_dim": 5, "use_dim": 5, "test_mode": True}]
    ours, theirs = (
        NuScenesDataset(data_root=str(tiny_world), ann_file=str(path), data_prefix=DATA_PREFIX, pipeline=pipeline,
                        modality={"use_lidar": True, "use_camera": True}, use_valid_flag=True, filter_empty_gt=False)
        for path in (our_infos["mini_train"], mm_infos["mini_train"])
    )
    assert len(ours) == len(theirs) > 0
    for i in range(len(ours)):
        a, b = ours.get_data_info(i), theirs.get_data_info(i)
        assert a["token"] == b["token"]
        boxes_a, boxes_b = (x["ann_info"]["gt_bboxes_3d"].tensor.numpy() for x in (a, b))
        np.testing.assert_allclose(boxes_a, boxes_b, atol=1e-5)
        np.testing.assert_array_equal(a["ann_info"]["gt_labels_3d"], b["ann_info"]["gt_labels_3d"])
        assert [Path(p["img_path"]).resolve() for p in a["images"].values()] == [
            Path(p["img_path"]).resolve() for p in b["images"].values()]
        points_a, points_b = (ds[i]["points"].tensor.numpy() for ds in (ours, theirs))  # key frame + 1 sweep
        assert points_a.shape == points_b.shape
        np.testing.assert_allclose(points_a, points_b, atol=1e-4)
