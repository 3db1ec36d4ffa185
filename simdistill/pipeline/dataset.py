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

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simdistill.config import CAMERA_NAMES, CLASS_NAMES
from simdistill.errors import DataError
from simdistill.pipeline.nuscenes_files import (
    LIDAR_NAME,
    boxes_to_lidar,
    check_dataroot,
    check_split,
    load_nuscenes,
    read_image,
    read_points,
    require_file,
    sensor_calib,
    split_sample_tokens,
    split_scene_names,
    sweep_into_key_frame,
)
from simdistill.pipeline.sample import ReopenedAfterPickling, Sample


@dataclass(frozen=True)
class SampleMeta:
    """What evaluation needs to put LiDAR-frame boxes into the global frame."""

    token: str
    lidar2ego: np.ndarray  # [4, 4] float64
    ego2global: np.ndarray  # [4, 4] float64
    timestamp: int  # microseconds


class NuScenesSource(ReopenedAfterPickling):
    """Key frames of one split of a nuScenes v1.0 dataroot, loaded as `Sample`s.

    sweeps: LiDAR sweeps per sample (key frame + up to sweeps-1 previous LIDAR_TOP sample_data, `sweep_chain`).
    drop_empty_boxes: drop GT boxes with no LiDAR or radar point, as the devkit's evaluation does.
    """

    _transient = ("_nusc",)  # the devkit tables are re-loaded (once per process) after unpickling

    def __init__(
        self,
        dataroot: str | Path,
        version: str,
        split: str,
        *,
        sweeps: int = 1,
        drop_empty_boxes: bool = True,
        dev_scenes: int = 0,
        part: str | None = None,
    ) -> None:
        if sweeps < 1:
            raise DataError(f"sweeps must be >= 1, got {sweeps}; use 1 for the key frame only")
        self.dataroot = Path(dataroot).expanduser().resolve()
        self.version = version
        self.split = split  # the devkit split the scenes come from
        self.dev_scenes, self.part = dev_scenes, part  # a dev carve-out of it (nuscenes_files.split_scene_names)
        self.sweeps = sweeps
        self.drop_empty_boxes = drop_empty_boxes
        check_dataroot(self.dataroot, version)
        check_split(version, split)
        self._nusc: Any = load_nuscenes(self.dataroot, version)
        self.tokens: list[str] = split_sample_tokens(self._nusc, split, dev_scenes=dev_scenes, part=part)
        if not self.tokens:
            names = sorted(s["name"] for s in self._nusc.scene)
            present = ", ".join(names[:6]) + (f", ... ({len(names)} scenes)" if len(names) > 6 else "") or "none"
            raise DataError(
                f"split '{split}' has no scenes in dataroot {self.dataroot} (scenes present: {present}); "
                "choose another split or regenerate the data with scenes of this split"
            )

    @property
    def nusc(self) -> Any:
        if self._nusc is None:
            self._nusc = load_nuscenes(self.dataroot, self.version)
        return self._nusc

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def scene_names(self) -> list[str]:
        """The scenes this source reads (what the devkit scores a dev carve-out on)."""
        return split_scene_names(self.nusc, self.split, dev_scenes=self.dev_scenes, part=self.part)

    # ----------------------------------------------------------------------------------------------

    def _calib(self, sd: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return sensor_calib(self.nusc, sd)

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

    def required_files(self, index: int) -> list[Path]:
        """Every file `load(index)` reads: the six camera images, then the LiDAR sweep chain (key frame first)."""
        sample = self.nusc.get("sample", self.tokens[index])
        cameras = [self._sample_data(sample, channel)["filename"] for channel in CAMERA_NAMES]
        lidar = [sd["filename"] for sd in self.sweep_chain(self._sample_data(sample, LIDAR_NAME))]
        return [self.dataroot / name for name in cameras + lidar]

    def missing_files(self, indices: Iterable[int]) -> list[Path]:
        """The files `load` would read for `indices` that do not exist (each once, in reading order)."""
        wanted = dict.fromkeys(path for i in indices for path in self.required_files(int(i)))
        return [path for path in wanted if not path.is_file()]

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
