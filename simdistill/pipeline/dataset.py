"""nuScenes loading through the devkit: any v1.0 dataroot (real, or the synthetic world) -> `Sample`.

`NuScenesSource(dataroot, version, split)` validates everything it can up front and raises `DataError`
one-liners that name the fix; `load(i)` returns the i-th key frame (scene order, then time) with the
six images, calibration, merged-sweep-ready LiDAR points and GT boxes in the LiDAR frame.

Frames: camera2lidar goes through each sensor's own ego pose (camera and LiDAR fire at slightly
different times on real nuScenes), as BEVFusion's `obtain_sensor2top` does. Previous sweeps are
moved into the key frame's LiDAR frame through the global frame, with their age in seconds as
column 4 (the .pcd.bin's ring index is dropped).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from simdistill.config import CAMERA_NAMES, CLASS_NAMES
from simdistill.errors import DataError
from simdistill.pipeline.geometry import pose_matrix, quaternion_to_matrix, transform_points
from simdistill.pipeline.sample import Sample

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


def split_sample_tokens(nusc: Any, split: str) -> list[str]:
    """Sample tokens of `split` in this dataroot, ordered by scene name then time."""
    from nuscenes.utils.splits import create_splits_scenes

    wanted = set(create_splits_scenes()[split])
    scenes = sorted((s for s in nusc.scene if s["name"] in wanted), key=lambda s: s["name"])
    tokens: list[str] = []
    for scene in scenes:
        token = scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
    return tokens


@dataclass(frozen=True)
class SampleMeta:
    """What evaluation needs to put LiDAR-frame boxes into the global frame."""

    token: str
    lidar2ego: np.ndarray  # [4, 4] float64
    ego2global: np.ndarray  # [4, 4] float64
    timestamp: int  # microseconds


class NuScenesSource:
    """Key frames of one split of a nuScenes v1.0 dataroot, loaded as `Sample`s.

    sweeps: LiDAR sweeps per sample (key frame + up to sweeps-1 previous LIDAR_TOP sample_data, `sweep_chain`).
    drop_empty_boxes: drop GT boxes with no LiDAR or radar point, as the devkit's evaluation does.
    """

    def __init__(
        self,
        dataroot: str | Path,
        version: str,
        split: str,
        *,
        sweeps: int = 1,
        drop_empty_boxes: bool = True,
    ) -> None:
        if sweeps < 1:
            raise DataError(f"sweeps must be >= 1, got {sweeps}; use 1 for the key frame only")
        self.dataroot = Path(dataroot).expanduser().resolve()
        self.version = version
        self.split = split
        self.sweeps = sweeps
        self.drop_empty_boxes = drop_empty_boxes
        check_dataroot(self.dataroot, version)
        check_split(version, split)
        self._nusc: Any = load_nuscenes(self.dataroot, version)
        self.tokens: list[str] = split_sample_tokens(self._nusc, split)
        if not self.tokens:
            names = sorted(s["name"] for s in self._nusc.scene)
            present = ", ".join(names[:6]) + (f", ... ({len(names)} scenes)" if len(names) > 6 else "") or "none"
            raise DataError(
                f"split '{split}' has no scenes in dataroot {self.dataroot} (scenes present: {present}); "
                "choose another split or regenerate the data with scenes of this split"
            )

    # The devkit instance is re-loaded (once per process) after unpickling, e.g. in a Dask worker.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_nusc"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def nusc(self) -> Any:
        if self._nusc is None:
            self._nusc = load_nuscenes(self.dataroot, self.version)
        return self._nusc

    def __len__(self) -> int:
        return len(self.tokens)

    # ----------------------------------------------------------------------------------------------

    def _calib(self, sd: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(sensor2ego, ego2global) of one sample_data record."""
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
        return pose_matrix(cs["translation"], cs["rotation"]), pose_matrix(pose["translation"], pose["rotation"])

    def _sample_data(self, sample: dict[str, Any], channel: str) -> dict[str, Any]:
        if channel not in sample["data"]:
            raise DataError(
                f"sample {sample['token']} has no {channel} data; the dataroot {self.dataroot} is incomplete"
            )
        return self.nusc.get("sample_data", sample["data"][channel])

    def _path(self, sd: dict[str, Any]) -> Path:
        return require_file(self.dataroot / sd["filename"], self.dataroot)

    def _read_points(self, sd: dict[str, Any]) -> np.ndarray:
        """[P, 5] float32 (x, y, z, intensity, 0) in the sweep's own LiDAR frame."""
        return read_points(self._path(sd))

    def _read_image(self, sd: dict[str, Any]) -> np.ndarray:
        return read_image(self._path(sd), self.dataroot)

    def image_hw(self, index: int) -> tuple[int, int]:
        """Raw (height, width) of the sample's CAM_FRONT image, from the tables (no decoding)."""
        sample = self.nusc.get("sample", self.tokens[index])
        sd = self._sample_data(sample, CAMERA_NAMES[0])
        if sd.get("height") and sd.get("width"):
            return int(sd["height"]), int(sd["width"])
        return self._read_image(sd).shape[:2]

    def sample_meta(self, index: int) -> SampleMeta:
        sample = self.nusc.get("sample", self.tokens[index])
        lidar_sd = self._sample_data(sample, LIDAR_NAME)
        lidar2ego, ego2global = self._calib(lidar_sd)
        return SampleMeta(
            token=sample["token"], lidar2ego=lidar2ego, ego2global=ego2global, timestamp=int(lidar_sd["timestamp"])
        )

    def load(self, index: int) -> Sample:
        if not 0 <= index < len(self.tokens):
            raise IndexError(f"sample index {index} out of range for {len(self.tokens)} samples")
        nusc = self.nusc
        sample = nusc.get("sample", self.tokens[index])
        lidar_sd = self._sample_data(sample, LIDAR_NAME)
        lidar2ego, ego2global = self._calib(lidar_sd)
        global2lidar = np.linalg.inv(ego2global @ lidar2ego)

        images, intrinsics, cam2lidar, cam2ego = [], [], [], []
        for channel in CAMERA_NAMES:
            sd = self._sample_data(sample, channel)
            camera2ego, cam_ego2global = self._calib(sd)
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            images.append(self._read_image(sd))
            intrinsics.append(np.asarray(cs["camera_intrinsic"], dtype=np.float64))
            cam2ego.append(camera2ego)
            cam2lidar.append(global2lidar @ cam_ego2global @ camera2ego)
        shapes = {img.shape for img in images}
        if len(shapes) != 1:
            raise DataError(
                f"sample {sample['token']} has cameras of different sizes {sorted(shapes)}; resize them alike"
            )

        boxes, labels = self._gt_boxes(sample, global2lidar)
        return Sample(
            token=sample["token"],
            images=np.stack(images),
            cam_intrinsics=np.stack(intrinsics),
            camera2lidar=np.stack(cam2lidar),
            camera2ego=np.stack(cam2ego),
            lidar2ego=lidar2ego,
            ego2global=ego2global,
            sweeps=self._sweeps(lidar_sd, global2lidar),
            gt_boxes=boxes,
            gt_labels=labels,
            timestamp=int(lidar_sd["timestamp"]),
        )

    def sweep_chain(self, key_sd: dict[str, Any]) -> list[dict[str, Any]]:
        """The LIDAR_TOP sample_data merged for a key frame: `key_sd` first, then up to sweeps-1 earlier sweeps.

        Follows `prev` as nuScenes links it: through the 20 Hz non-key-frame sweeps to the previous key frame and
        beyond, stopping at the first sample_data of the scene.
        """
        chain = [key_sd]
        while len(chain) < self.sweeps and chain[-1]["prev"]:
            chain.append(self.nusc.get("sample_data", chain[-1]["prev"]))
        return chain

    def _sweeps(self, key_sd: dict[str, Any], global2lidar: np.ndarray) -> list[np.ndarray]:
        """Key frame points, then the earlier sweeps of `sweep_chain` in the key frame's LiDAR frame."""
        sweeps = [self._read_points(key_sd)]
        for sd in self.sweep_chain(key_sd)[1:]:
            sensor2ego, ego2global = self._calib(sd)
            age = (key_sd["timestamp"] - sd["timestamp"]) * 1e-6
            sweeps.append(sweep_into_key_frame(self._read_points(sd), global2lidar @ ego2global @ sensor2ego, age))
        return sweeps

    def _gt_boxes(self, sample: dict[str, Any], global2lidar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[M, 9] boxes (x, y, z, l, w, h, yaw, vx, vy) in the LiDAR frame and [M] labels."""
        from nuscenes.eval.detection.utils import category_to_detection_name

        trans, sizes, rots, vels, labels = [], [], [], [], []
        for ann_token in sample["anns"]:
            ann = self.nusc.get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            if name is None or name not in CLASS_NAMES:
                continue
            if self.drop_empty_boxes and ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue
            trans.append(ann["translation"])
            sizes.append(ann["size"])  # (w, l, h)
            rots.append(ann["rotation"])
            vels.append(self.nusc.box_velocity(ann_token))
            labels.append(CLASS_NAMES.index(name))
        if not labels:
            return np.zeros((0, 9), dtype=np.float32), np.zeros((0,), dtype=np.int64)
        boxes = boxes_to_lidar(
            np.asarray(trans), np.asarray(sizes), np.asarray(rots), np.asarray(vels, dtype=np.float64), global2lidar
        )  # [M, 9]
        boxes[:, 7:9] = np.nan_to_num(boxes[:, 7:9], nan=0.0)  # the devkit's velocity is NaN without neighbours
        return boxes.astype(np.float32), np.asarray(labels, dtype=np.int64)
