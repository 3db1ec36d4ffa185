"""Write mmdetection3d v1.x nuScenes info pickles from the devkit tables (our own writer, for the synthetic world).

Real users run mmdet3d's `tools/create_data.py nuscenes`; this writes the same thing without mmdet3d, so the
info-file path can be tested and demonstrated on `make-demo-data` worlds. It follows mmdet3d 1.4's
`nuscenes_converter.create_nuscenes_infos` followed by `update_infos_to_v2.update_nuscenes_infos`:
same keys, key order, value types (python floats/lists, numpy int64/bool scalars, float32-rounded
4x4 matrices as nested lists, timestamps in seconds), file names and pickle protocol (2, as mmengine dumps).

Left out / different on purpose:
- `cam_instances` (per-camera 2D/mono-3D boxes for FCOS3D-style detectors; frame-based LiDAR/BEV
  pipelines never read them) is not written.
- sweep `lidar_path` is the absolute path of the file (mmdet3d writes the path as it joined it with the
  `root_path` it was given); readers use only its file name and whether it lies under samples/ or sweeps/.
- samples go to a split only if their scene is in that devkit split (mmdet3d puts every non-train
  scene into val; real nuScenes versions have no such scenes).
- `metainfo.categories` lists ignored category names (-1) sorted (mmdet3d iterates a set).
Kept as mmdet3d has it, though it differs from `NuScenesSource`: `bbox_3d` yaw is pyquaternion's
`yaw_pitch_roll[0]` (see `_instances`), which differs from the devkit heading by ~1e-4 rad on tilted boxes.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from simdistill.config import CAMERA_NAMES
from simdistill.pipeline.geometry import quaternion_to_matrix
from simdistill.pipeline.mmdet3d_infos import MMDET3D_CLASSES
from simdistill.pipeline.nuscenes_files import (
    LIDAR_NAME,
    VERSION_SPLITS,
    boxes_to_lidar,
    check_split,
    load_nuscenes,
    require_file,
    sensor_calib,
)

MAX_SWEEPS = 10  # create_nuscenes_infos(max_sweeps=10), what tools/create_data.py passes
INFO_VERSION = "1.1"
# mmdet3d names the files of a version's split pair 'train' and 'val' (mini_train -> ..._train.pkl).
SPLIT_FILE_NAMES: dict[str, str] = {"mini_train": "train", "mini_val": "val", "train": "train", "val": "val",
                                    "test": "test"}


def info_file_name(split: str) -> str:
    return f"nuscenes_infos_{SPLIT_FILE_NAMES.get(split, split)}.pkl"


def write_mmdet3d_infos(
    dataroot: str | Path, version: str, out_dir: str | Path, *, splits: list[str] | tuple[str, ...] | None = None
) -> dict[str, Path]:
    """Write `nuscenes_infos_<split>.pkl` for each split (default: the version's train/val pair, or test).

    Returns {devkit split name: written path}. Each file is written to a temporary name, then renamed.
    """
    root = Path(dataroot).expanduser().resolve()
    nusc = load_nuscenes(root, version)
    if splits is None:
        splits = VERSION_SPLITS.get(version, ())[:2]
    for split in splits:
        check_split(version, split)
    from nuscenes.utils.splits import create_splits_scenes

    scene_names = create_splits_scenes()
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with_gt = "test" not in version  # the converter's test mode: no annotations
    written: dict[str, Path] = {}
    for split in splits:
        wanted = set(scene_names[split])
        scenes = {s["token"] for s in nusc.scene if s["name"] in wanted}
        ignored: set[str] = set()
        data_list: list[dict[str, Any]] = []
        for sample in nusc.sample:  # the converter's order: the sample table's
            if sample["scene_token"] in scenes:
                data_list.append(_data_info(nusc, root, sample, len(data_list), with_gt=with_gt, ignored=ignored))
        categories: dict[str, int] = {name: i for i, name in enumerate(MMDET3D_CLASSES)}
        categories.update({name: -1 for name in sorted(ignored)})
        metainfo = {"categories": categories, "dataset": "nuscenes", "version": version, "info_version": INFO_VERSION}
        path = out / info_file_name(split)
        _atomic_dump({"metainfo": metainfo, "data_list": data_list}, path)
        written[split] = path
    return written


def _atomic_dump(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            pickle.dump(obj, f, protocol=2)  # mmengine's PickleHandler default
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _f32(mat: np.ndarray) -> list[list[float]]:
    """A matrix as mmdet3d stores it: rounded to float32, then nested python floats."""
    return np.asarray(mat).astype(np.float32).tolist()


def _rigid_inverse(mat: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform, computed as update_infos_to_v2 computes lidar2sensor."""
    inv = np.eye(4)
    inv[:3, :3] = mat[:3, :3].T
    inv[:3, 3:4] = -1 * np.matmul(mat[:3, :3].T, mat[:3, 3].reshape(3, 1))
    return inv


def _data_info(
    nusc: Any, root: Path, sample: dict[str, Any], index: int, *, with_gt: bool, ignored: set[str]
) -> dict[str, Any]:
    """One `data_list` entry, keys in update_nuscenes_infos' order (None-valued keys dropped as it drops them)."""
    lidar_sd = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    lidar2ego, ego2global = sensor_calib(nusc, lidar_sd)
    global2lidar = np.linalg.inv(ego2global @ lidar2ego)
    lidar_path = require_file(root / lidar_sd["filename"], root)  # the converter's check_file_exist

    info: dict[str, Any] = {
        "sample_idx": index,
        "token": sample["token"],
        "timestamp": sample["timestamp"] / 1e6,
        "ego2global": _f32(ego2global),
        "images": {cam: _image_info(nusc, sample, cam, global2lidar) for cam in CAMERA_NAMES},
        "lidar_points": {"num_pts_feats": 5, "lidar_path": lidar_path.name, "lidar2ego": _f32(lidar2ego)},
    }
    sweeps = _lidar_sweeps(nusc, root, lidar_sd, global2lidar)
    if sweeps:  # clear_data_info_unused_keys drops an empty list
        info["lidar_sweeps"] = sweeps
    info["instances"] = _instances(nusc, sample, global2lidar, ignored) if with_gt else []
    if "lidarseg" in nusc.table_names:
        info["pts_semantic_mask_path"] = Path(nusc.get("lidarseg", lidar_sd["token"])["filename"]).name
    return info


def _image_info(nusc: Any, sample: dict[str, Any], cam: str, global2lidar: np.ndarray) -> dict[str, Any]:
    sd = nusc.get("sample_data", sample["data"][cam])
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    cam2ego, cam_ego2global = sensor_calib(nusc, sd)
    cam2lidar = global2lidar @ cam_ego2global @ cam2ego  # through the camera's own ego pose (obtain_sensor2top)
    return {
        "img_path": Path(sd["filename"]).name,
        "cam2img": np.asarray(cs["camera_intrinsic"], dtype=np.float64).tolist(),
        "cam2ego": _f32(cam2ego),
        "sample_data_token": sd["token"],
        "timestamp": sd["timestamp"] / 1e6,
        "lidar2cam": _f32(_rigid_inverse(cam2lidar)),
    }


def _lidar_sweeps(nusc: Any, root: Path, key_sd: dict[str, Any], global2lidar: np.ndarray) -> list[dict[str, Any]]:
    """Up to MAX_SWEEPS previous LIDAR_TOP sample_data, newest first, following `prev` as the converter does."""
    sweeps: list[dict[str, Any]] = []
    sd = key_sd
    while len(sweeps) < MAX_SWEEPS and sd["prev"]:
        sd = nusc.get("sample_data", sd["prev"])
        sensor2ego, ego2global = sensor_calib(nusc, sd)
        sensor2lidar = global2lidar @ ego2global @ sensor2ego
        sweeps.append({
            "timestamp": sd["timestamp"] / 1e6,
            "ego2global": _f32(ego2global),
            "lidar_points": {
                "num_pts_feats": None,  # update_infos_to_v2 leaves it None in sweeps (lists are not cleaned)
                "lidar_path": os.fspath(root / sd["filename"]),
                "lidar2ego": _f32(sensor2ego),
                "lidar2sensor": _f32(_rigid_inverse(sensor2lidar)),
            },
            "sample_data_token": sd["token"],
        })  # fmt: skip
    return sweeps


def _instances(nusc: Any, sample: dict[str, Any], global2lidar: np.ndarray, ignored: set[str]) -> list[dict[str, Any]]:
    """Every annotation of the sample, in `anns` order (classes we do not detect get label -1)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    anns = [nusc.get("sample_annotation", token) for token in sample["anns"]]
    if not anns:
        return []
    boxes = boxes_to_lidar(
        np.asarray([a["translation"] for a in anns]),
        np.asarray([a["size"] for a in anns]),
        np.asarray([a["rotation"] for a in anns]),
        np.asarray([nusc.box_velocity(a["token"]) for a in anns], dtype=np.float64),
        global2lidar,
    )  # [M, 9], velocity NaN where the devkit has none (kept NaN, as the converter keeps it)
    # The converter's yaw is pyquaternion's yaw_pitch_roll[0] of the box in the LiDAR frame, atan2(-R01, R00),
    # not the devkit's heading atan2(R10, R00) that boxes_to_lidar gives: they differ by ~pitch x roll.
    box_rot = global2lidar[:3, :3] @ quaternion_to_matrix(np.asarray([a["rotation"] for a in anns]))  # [M, 3, 3]
    boxes[:, 6] = np.arctan2(-box_rot[:, 0, 1], box_rot[:, 0, 0])
    num_lidar = np.array([a["num_lidar_pts"] for a in anns])  # numpy int64 scalars in the file
    num_radar = np.array([a["num_radar_pts"] for a in anns])
    valid = np.array([(a["num_lidar_pts"] + a["num_radar_pts"]) > 0 for a in anns], dtype=bool)
    instances = []
    for k, ann in enumerate(anns):
        name = category_to_detection_name(ann["category_name"]) or ann["category_name"]
        label = MMDET3D_CLASSES.index(name) if name in MMDET3D_CLASSES else -1
        if label < 0:
            ignored.add(name)
        instances.append({
            "bbox_label": label,
            "bbox_3d": boxes[k, :7].tolist(),
            "bbox_3d_isvalid": valid[k],
            "bbox_label_3d": label,
            "num_lidar_pts": num_lidar[k],
            "num_radar_pts": num_radar[k],
            "velocity": boxes[k, 7:9].tolist(),
        })  # fmt: skip
    return instances
