"""The 13 nuScenes v1.0 JSON tables of a synthetic world.

Tokens are md5 hex digests of (seed, table, key), so every token - and therefore every prev/next
link - is known before the record it points to is written, and two runs with one seed agree byte
for byte. Field names and types follow the nuScenes schema the devkit reads.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from simdistill.config import CAMERA_NAMES, CLASS_NAMES
from simdistill.pipeline.synthetic.classes import (
    ATTRIBUTES,
    CLASS_SPECS,
    VISIBILITY_LEVELS,
)
from simdistill.pipeline.synthetic.raycast import quaternion_wxyz

TABLE_NAMES = (
    "attribute",
    "calibrated_sensor",
    "category",
    "ego_pose",
    "instance",
    "log",
    "map",
    "sample",
    "sample_annotation",
    "sample_data",
    "scene",
    "sensor",
    "visibility",
)
LIDAR_CHANNEL = "LIDAR_TOP"
CHANNELS = (LIDAR_CHANNEL, *CAMERA_NAMES)
VEHICLE_NAME = "n015"
LOCATION = "synthetic-town"


def log_name(timestamp_us: int) -> str:
    """A nuScenes-style log file name ('n015-2018-07-24-11-22-45+0800') for the log's first timestamp."""
    local = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=timestamp_us, hours=8)
    return f"{VEHICLE_NAME}-{local:%Y-%m-%d-%H-%M-%S}+0800"


def annotation_box(translation: np.ndarray, wlh: np.ndarray, yaw: float) -> dict[str, list[float]]:
    """The translation, size (w, l, h) and rotation (w, x, y, z) fields of an upright box, as the table stores them."""
    c, s = np.cos(yaw / 2.0), np.sin(yaw / 2.0)
    rotation = [float(c), 0.0, 0.0, float(s)]
    if rotation[0] < 0:
        rotation = [-v for v in rotation]
    return {
        "translation": [float(v) for v in translation],
        "size": [float(v) for v in wlh],
        "rotation": rotation,
    }


def _chain_neighbour(index: int, sweep: int, step: int, *, count: int, between: int) -> tuple[int, int] | None:
    """(key frame, sweep) one step along a channel's chain of `count` key frames with `between` sweeps after each
    but the last, or None past either end."""
    position = index * (between + 1) + sweep + step
    if not 0 <= position <= (count - 1) * (between + 1):
        return None
    return divmod(position, between + 1)


class Tables:
    """Accumulates records for every table; `write` dumps them as `<version>/<table>.json`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.records: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_NAMES}
        self._static()

    def token(self, table: str, *key: object) -> str:
        text = "|".join([str(self.seed), table, *(str(k) for k in key)])
        return hashlib.md5(text.encode()).hexdigest()

    # ---------------------------------------------------------------------------------------- static

    def _static(self) -> None:
        for name in CLASS_NAMES:
            category = CLASS_SPECS[name].category
            self.records["category"].append(
                {"token": self.token("category", category), "name": category, "description": f"Synthetic {name}."}
            )
        for name, description in ATTRIBUTES:
            self.records["attribute"].append(
                {"token": self.token("attribute", name), "name": name, "description": description}
            )
        for token, level, description in VISIBILITY_LEVELS:
            self.records["visibility"].append({"token": token, "level": level, "description": description})
        for channel in CHANNELS:
            modality = "lidar" if channel == LIDAR_CHANNEL else "camera"
            self.records["sensor"].append(
                {"token": self.token("sensor", channel), "channel": channel, "modality": modality}
            )

    def category_token(self, class_name: str) -> str:
        return self.token("category", CLASS_SPECS[class_name].category)

    def attribute_token(self, name: str) -> str:
        return self.token("attribute", name)

    # ------------------------------------------------------------------------------------ per scene

    def add_log_and_sensors(
        self, scene: int, *, first_timestamp: int, calibrations: dict[str, tuple[np.ndarray, np.ndarray | None]]
    ) -> str:
        """One log and one calibrated_sensor per channel for `scene`; calibrations: channel -> (sensor2ego, K)."""
        logfile = log_name(first_timestamp)
        self.records["log"].append(
            {
                "token": self.token("log", scene),
                "logfile": logfile,
                "vehicle": VEHICLE_NAME,
                "date_captured": logfile[5:15],
                "location": LOCATION,
            }
        )
        for channel in CHANNELS:
            sensor2ego, intrinsic = calibrations[channel]
            self.records["calibrated_sensor"].append(
                {
                    "token": self.token("calibrated_sensor", scene, channel),
                    "sensor_token": self.token("sensor", channel),
                    "translation": [float(v) for v in sensor2ego[:3, 3]],
                    "rotation": quaternion_wxyz(sensor2ego[:3, :3]),
                    "camera_intrinsic": [] if intrinsic is None else [[float(v) for v in row] for row in intrinsic],
                }
            )
        return logfile

    def add_scene(self, scene: int, *, name: str, description: str, n_samples: int) -> None:
        self.records["scene"].append(
            {
                "token": self.token("scene", scene),
                "log_token": self.token("log", scene),
                "nbr_samples": n_samples,
                "first_sample_token": self.token("sample", scene, 0),
                "last_sample_token": self.token("sample", scene, n_samples - 1),
                "name": name,
                "description": description,
            }
        )

    def add_map(self, *, filename: str) -> None:
        self.records["map"].append(
            {
                "category": "semantic_prior",
                "token": self.token("map", filename),
                "filename": filename,
                "log_tokens": [log["token"] for log in self.records["log"]],
            }
        )

    # ----------------------------------------------------------------------------------- per sample

    def _link(self, table: str, scene: int, index: int, count: int, *key: object) -> tuple[str, str]:
        prev = self.token(table, scene, index - 1, *key) if index > 0 else ""
        nxt = self.token(table, scene, index + 1, *key) if index < count - 1 else ""
        return prev, nxt

    def add_sample(self, scene: int, index: int, *, count: int, timestamp: int) -> str:
        token = self.token("sample", scene, index)
        prev, nxt = self._link("sample", scene, index, count)
        self.records["sample"].append(
            {
                "token": token,
                "timestamp": timestamp,
                "prev": prev,
                "next": nxt,
                "scene_token": self.token("scene", scene),
            }
        )
        return token

    def sample_data_token(self, scene: int, index: int, channel: str, sweep: int = 0) -> str:
        """Key frame `index` (sweep 0), or the sweep-th non-key-frame sweep after it."""
        key = (scene, index, channel) if sweep == 0 else (scene, index, channel, sweep)
        return self.token("sample_data", *key)

    def add_sample_data(
        self,
        scene: int,
        index: int,
        *,
        count: int,
        channel: str,
        timestamp: int,
        ego2global: np.ndarray,
        filename: str,
        size: tuple[int, int] = (0, 0),
        sweep: int = 0,
        between: int = 0,
    ) -> dict[str, Any]:
        """A sample_data record plus its own ego_pose (as in nuScenes: one pose per sample_data); returns the pose.

        Each channel has one prev/next chain per scene: key frame i, its `between` non-key-frame sweeps, key
        frame i + 1, ... A sweep belongs (sample_token) to the key frame that follows it, as on nuScenes, where the
        devkit's `get_boxes` interpolates a sweep's boxes between that sample and its `prev`.
        """
        key = (scene, index, channel) if sweep == 0 else (scene, index, channel, sweep)
        pose = {
            "token": self.token("ego_pose", *key),
            "timestamp": timestamp,
            "rotation": quaternion_wxyz(ego2global[:3, :3]),
            "translation": [float(v) for v in ego2global[:3, 3]],
        }
        self.records["ego_pose"].append(pose)
        links = [_chain_neighbour(index, sweep, step, count=count, between=between) for step in (-1, 1)]
        prev, nxt = (self.sample_data_token(scene, pos[0], channel, pos[1]) if pos else "" for pos in links)
        self.records["sample_data"].append(
            {
                "token": self.sample_data_token(scene, index, channel, sweep),
                "sample_token": self.token("sample", scene, index if sweep == 0 else index + 1),
                "ego_pose_token": pose["token"],
                "calibrated_sensor_token": self.token("calibrated_sensor", scene, channel),
                "timestamp": timestamp,
                "fileformat": "pcd" if channel == LIDAR_CHANNEL else "jpg",
                "is_key_frame": sweep == 0,
                "height": size[1],
                "width": size[0],
                "filename": filename,
                "prev": prev,
                "next": nxt,
            }
        )
        return pose

    def calibration(self, scene: int, channel: str) -> dict[str, Any]:
        token = self.token("calibrated_sensor", scene, channel)
        return next(r for r in reversed(self.records["calibrated_sensor"]) if r["token"] == token)

    def add_annotation(
        self,
        scene: int,
        index: int,
        obj: int,
        *,
        count: int,
        box: dict[str, list[float]],
        attribute: str | None,
        visibility: str,
        num_lidar_pts: int,
    ) -> None:
        """One sample_annotation; `box` is `annotation_box(...)`, the translation/size/rotation stored."""
        prev, nxt = self._link("sample_annotation", scene, index, count, obj)
        self.records["sample_annotation"].append(
            {
                "token": self.token("sample_annotation", scene, index, obj),
                "sample_token": self.token("sample", scene, index),
                "instance_token": self.token("instance", scene, obj),
                "visibility_token": visibility,
                "attribute_tokens": [] if attribute is None else [self.attribute_token(attribute)],
                **box,
                "prev": prev,
                "next": nxt,
                "num_lidar_pts": int(num_lidar_pts),
                "num_radar_pts": 0,
            }
        )

    def add_instance(self, scene: int, obj: int, *, class_name: str, count: int) -> str:
        token = self.token("instance", scene, obj)
        self.records["instance"].append(
            {
                "token": token,
                "category_token": self.category_token(class_name),
                "nbr_annotations": count,
                "first_annotation_token": self.token("sample_annotation", scene, 0, obj),
                "last_annotation_token": self.token("sample_annotation", scene, count - 1, obj),
            }
        )
        return token

    # ------------------------------------------------------------------------------------------ I/O

    def write(self, table_dir: Path) -> None:
        table_dir.mkdir(parents=True, exist_ok=True)
        for name in TABLE_NAMES:
            text = json.dumps(self.records[name], indent=0)
            (table_dir / f"{name}.json").write_text(text + "\n")
