"""Reading a nuScenes v1.0 dataroot through the devkit: its tables (loaded once per process), its files
(points, images), its splits, and the frames its records describe. `NuScenesSource` (dataset.py) and the
mmdet3d info-file source build on these.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from simdistill.errors import DataError
from simdistill.pipeline.geometry import (
    pose_matrix,
    quaternion_to_matrix,
    transform_points,
)

LIDAR_NAME = "LIDAR_TOP"
SWEEP_CLOSE_RADIUS = 1.0  # [m] BEVFusion drops previous-sweep points this close to their sensor (ego body hits)

# The devkit's own version/split compatibility rule (nuscenes.eval.common.loaders.load_gt).
VERSION_SPLITS: dict[str, tuple[str, ...]] = {
    "v1.0-mini": ("mini_train", "mini_val"),
    "v1.0-trainval": ("train", "val", "train_detect", "train_track"),
    "v1.0-test": ("test",),
}

_NUSC_CACHE: dict[tuple[str, str], Any] = {}
_NUSC_LOCK = threading.Lock()


def load_nuscenes(dataroot: str | Path, version: str) -> Any:
    """The devkit's `NuScenes` for (dataroot, version), loaded quietly once per process."""
    root = Path(dataroot).expanduser().resolve()
    key = (str(root), version)
    with _NUSC_LOCK:
        if key in _NUSC_CACHE:
            return _NUSC_CACHE[key]
        check_dataroot(root, version)
        from nuscenes.nuscenes import NuScenes

        try:
            nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
        except (AssertionError, OSError, KeyError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise DataError(
                f"could not load the nuScenes {version} tables from {root} ({detail}); "
                "the dataroot is incomplete or corrupt: re-extract or regenerate it"
            ) from None
        _NUSC_CACHE[key] = nusc
        return nusc


def check_dataroot(root: Path, version: str) -> None:
    """DataError unless `root` exists and holds the `version` table folder."""
    if not root.is_dir():
        raise DataError(
            f"dataroot {root} does not exist; run `simdistill make-demo-data {root}` or set data.dataroot "
            "to a nuScenes download"
        )
    if not (root / version).is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
        listed = ", ".join(present) if present else "none"
        raise DataError(
            f"version folder '{version}' not found in dataroot {root} (versions present: {listed}); "
            "set data.version to one of them"
        )


def check_split(version: str, split: str) -> None:
    """DataError unless `split` is a devkit split valid for `version`."""
    from nuscenes.utils.splits import create_splits_scenes

    known = create_splits_scenes()
    valid = [s for s in VERSION_SPLITS.get(version, ()) if s in known]
    if split not in valid:
        hint = f"valid splits for {version}: {', '.join(valid)}" if valid else f"version {version} has no known splits"
        raise DataError(f"unknown split '{split}' for {version}; {hint}")


def require_file(path: Path, dataroot: Path) -> Path:
    """`path`, or DataError naming it when it is not a file."""
    if not path.is_file():
        raise DataError(
            f"file {path} is missing; the dataroot {dataroot} is incomplete: re-extract or regenerate it"
        )
    return path


def read_points(path: Path) -> np.ndarray:
    """[P, 5] float32 (x, y, z, intensity, 0) of a nuScenes .pcd.bin in its own LiDAR frame."""
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 5:
        raise DataError(f"{path} holds {raw.size} floats, not a multiple of 5 (x, y, z, intensity, ring)")
    points = raw.reshape(-1, 5).copy()
    points[:, 4] = 0.0  # column 4 is the ring index on disk; it becomes the time lag
    return points


def read_image(path: Path, dataroot: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB of an existing image file."""
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"image {path} cannot be decoded; the dataroot {dataroot} is corrupt")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def sweep_into_key_frame(points: np.ndarray, sweep2lidar: np.ndarray, age_s: float) -> np.ndarray:
    """A previous sweep's [P, 5] points (own frame) -> key LiDAR frame, close points dropped, column 4 = age."""
    close = (np.abs(points[:, 0]) < SWEEP_CLOSE_RADIUS) & (np.abs(points[:, 1]) < SWEEP_CLOSE_RADIUS)
    points = points[~close]
    points[:, :3] = transform_points(sweep2lidar, points[:, :3])
    points[:, 4] = age_s
    return points


def boxes_to_lidar(
    translation: np.ndarray, size_wlh: np.ndarray, rotation: np.ndarray, velocity: np.ndarray, global2lidar: np.ndarray
) -> np.ndarray:
    """Global-frame annotations -> [M, 9] float64 (x, y, z, l, w, h, yaw, vx, vy) in the LiDAR frame.

    translation [M, 3], size_wlh [M, 3] (nuScenes w, l, h), rotation [M, 4] (w, x, y, z), velocity [M, 3]
    global (z ignored; NaN stays NaN).
    """
    rot_g2l = global2lidar[:3, :3]
    centres = transform_points(global2lidar, np.asarray(translation, dtype=np.float64))  # [M, 3]
    box_rot = rot_g2l @ quaternion_to_matrix(np.asarray(rotation))  # [M, 3, 3] box axes in the LiDAR frame
    yaw = np.arctan2(box_rot[:, 1, 0], box_rot[:, 0, 0])
    vel = np.array(velocity, dtype=np.float64)
    vel[:, 2] = 0.0
    vel_lidar = vel @ rot_g2l.T  # [M, 3]
    wlh = np.asarray(size_wlh, dtype=np.float64)
    return np.concatenate([centres, wlh[:, [1, 0, 2]], yaw[:, None], vel_lidar[:, :2]], axis=1)  # [M, 9]


DEV_PARTS = ("dev", "rest")
"""How a split with a dev carve-out is read: its dev scenes alone, or the rest of it."""


def split_scene_names(nusc: Any, split: str, *, dev_scenes: int = 0, part: str | None = None) -> list[str]:
    """Names of the scenes of devkit `split` that this dataroot holds, sorted; with `part`, the split's last
    `dev_scenes` of them ("dev") or all but those ("rest")."""
    from nuscenes.utils.splits import create_splits_scenes

    wanted = set(create_splits_scenes()[split])
    names = sorted(s["name"] for s in nusc.scene if s["name"] in wanted)
    if part is None:
        return names
    if part not in DEV_PARTS or not 0 < dev_scenes < len(names):
        raise DataError(
            f"a dev split of {dev_scenes} scene(s) needs 0 < dev_scenes < the {len(names)} scenes of '{split}' in "
            f"this dataroot (part '{part}' of {', '.join(DEV_PARTS)}); set data.dev_scenes accordingly"
        )
    return names[-dev_scenes:] if part == "dev" else names[:-dev_scenes]


def split_sample_tokens(nusc: Any, split: str, *, dev_scenes: int = 0, part: str | None = None) -> list[str]:
    """Sample tokens of `split` (or of its dev part / the rest, see `split_scene_names`) in this dataroot,
    ordered by scene name then time."""
    names = set(split_scene_names(nusc, split, dev_scenes=dev_scenes, part=part))
    scenes = sorted((s for s in nusc.scene if s["name"] in names), key=lambda s: s["name"])
    tokens: list[str] = []
    for scene in scenes:
        token = scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
    return tokens


def sensor_calib(nusc: Any, sd: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(sensor2ego, ego2global) of one sample_data record, each 4x4 float64."""
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return pose_matrix(cs["translation"], cs["rotation"]), pose_matrix(pose["translation"], pose["rotation"])
