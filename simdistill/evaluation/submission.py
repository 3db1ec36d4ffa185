"""Per-sample LiDAR-frame detections -> the nuScenes detection submission JSON (global frame).

Boxes come in the un-augmented LiDAR frame as `[K, 9] = (x, y, z, l, w, h, yaw, vx, vy)` (gravity
centre, see `simdistill.pipeline.sample`). They go to the global frame through lidar2ego then
ego2global, as mmdet3d's `lidar_nusc_box_to_global` does; attributes follow mmdet3d's
`NuScenesDataset` rule (speed > 0.2 m/s means moving).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from simdistill.config import CLASS_NAMES
from simdistill.errors import DataError
from simdistill.models.head import Detections
from simdistill.pipeline.geometry import matrix_to_quaternion, rot_z, transform_points

MAX_BOXES_PER_SAMPLE = 500  # the devkit refuses more
MOVING_SPEED = 0.2  # [m/s]

# mmdet3d NuScenesDataset.DefaultAttribute
DEFAULT_ATTRIBUTE: dict[str, str] = {
    "car": "vehicle.parked",
    "pedestrian": "pedestrian.moving",
    "trailer": "vehicle.parked",
    "truck": "vehicle.parked",
    "bus": "vehicle.moving",
    "motorcycle": "cycle.without_rider",
    "construction_vehicle": "vehicle.parked",
    "bicycle": "cycle.without_rider",
    "barrier": "",
    "traffic_cone": "",
}
_VEHICLES = ("car", "construction_vehicle", "bus", "truck", "trailer")


def attribute_for(name: str, speed: float) -> str:
    """mmdet3d's attribute rule for a detection of class `name` moving at `speed` m/s."""
    if speed > MOVING_SPEED:
        if name in _VEHICLES:
            return "vehicle.moving"
        if name in ("bicycle", "motorcycle"):
            return "cycle.with_rider"
        return DEFAULT_ATTRIBUTE[name]
    if name == "pedestrian":
        return "pedestrian.standing"
    if name == "bus":
        return "vehicle.stopped"
    return DEFAULT_ATTRIBUTE[name]


class HasPose(Protocol):
    token: str
    lidar2ego: np.ndarray
    ego2global: np.ndarray


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _unpack(result: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, labels = result.boxes, result.scores, result.labels
    box_arr = _as_numpy(boxes).astype(np.float64)
    if box_arr.size == 0:
        box_arr = np.zeros((0, 9))
    return box_arr, _as_numpy(scores).astype(np.float64).reshape(-1), _as_numpy(labels).astype(np.int64).reshape(-1)


def sample_boxes_to_global(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, *, meta: HasPose, class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """One sample's boxes as nuScenes submission records (highest score first, at most 500)."""
    if boxes.ndim != 2 or boxes.shape[1] < 9:
        raise DataError(f"sample {meta.token}: boxes must be [K, 9] (x, y, z, l, w, h, yaw, vx, vy), got {boxes.shape}")
    if not (len(boxes) == len(scores) == len(labels)):
        raise DataError(
            f"sample {meta.token}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels; "
            "pass one score and one label per box"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"sample {meta.token}: label out of range 0..{len(class_names) - 1}; labels index class_names")
    order = np.argsort(-scores, kind="stable")[:MAX_BOXES_PER_SAMPLE]
    lidar2global = np.asarray(meta.ego2global, dtype=np.float64) @ np.asarray(meta.lidar2ego, dtype=np.float64)
    rot = lidar2global[:3, :3]
    records = []
    for k in order:
        box = boxes[k]
        centre = transform_points(lidar2global, box[None, :3])[0]
        quat = matrix_to_quaternion(rot @ rot_z(float(box[6])))
        vel = rot @ np.array([box[7], box[8], 0.0])
        name = class_names[int(labels[k])]
        records.append(
            {
                "sample_token": meta.token,
                "translation": [float(v) for v in centre],
                "size": [float(box[4]), float(box[3]), float(box[5])],  # (w, l, h)
                "rotation": [float(v) for v in quat],
                "velocity": [float(vel[0]), float(vel[1])],
                "detection_name": name,
                "detection_score": float(scores[k]),
                "attribute_name": attribute_for(name, float(np.hypot(box[7], box[8]))),
            }
        )
    return records


def detections_to_submission(
    results: Sequence[Detections],
    metas: Sequence[HasPose],
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    use_camera: bool = True,
    use_lidar: bool = False,
) -> dict[str, Any]:
    """The nuScenes submission dict: {"meta": {...}, "results": {sample_token: [box records]}}.

    `results[i]` belongs to `metas[i]` (e.g. `NuScenesSource.sample_meta(i)`); a sample with no
    detections still gets its (empty) entry.
    """
    if len(results) != len(metas):
        raise DataError(f"{len(results)} detection results for {len(metas)} samples; pass one result per sample meta")
    out: dict[str, list[dict[str, Any]]] = {}
    for result, meta in zip(results, metas):
        boxes, scores, labels = _unpack(result)
        out.setdefault(meta.token, []).extend(
            sample_boxes_to_global(boxes, scores, labels, meta=meta, class_names=class_names)
        )
    return {
        "meta": {
            "use_camera": bool(use_camera),
            "use_lidar": bool(use_lidar),
            "use_radar": False,
            "use_map": False,
            "use_external": False,
        },
        "results": out,
    }
