"""Write one synthetic scene: its key frames (six images, a LiDAR sweep, annotations) and the LiDAR sweeps between.

Everything moves continuously: the ego and every object are posed on their tracks at each sensor's timestamp,
key frame or sweep. `num_lidar_pts` is what the devkit counts (`points_in_box` on the key-frame cloud, the box
moved into the LiDAR frame exactly as `NuScenes.get_sample_data` moves it), so the two agree for every box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from simdistill.config import CLASS_NAMES
from simdistill.errors import DataError
from simdistill.pipeline.synthetic.classes import (
    CLASS_SPECS,
    attribute_name,
    body_lwh,
    instance_color,
    visibility_token,
)
from simdistill.pipeline.synthetic.rig import SensorRig, ego_pose_matrix
from simdistill.pipeline.synthetic.sensors import Boxes, cast_lidar, render_camera
from simdistill.pipeline.synthetic.tables import LIDAR_CHANNEL, Tables, annotation_box
from simdistill.pipeline.synthetic.world import SAMPLE_PERIOD_S, SceneLayout

FIRST_TIMESTAMP = 1_532_402_927_647_951  # [us] first key frame of scene 0; scenes start 1000 s apart
SCENE_GAP_US = 1_000_000_000
JPEG_QUALITY = 90


@dataclass
class SceneMotion:
    """Every object's and the ego's pose at every LiDAR timestamp of a scene (key frames and sweeps)."""

    times: np.ndarray  # [T] seconds since the first key frame, increasing
    key: np.ndarray  # [T] key frame each time belongs to (a sweep: the key frame before it)
    sweep: np.ndarray  # [T] 0 = the key frame itself, j = the j-th sweep after it
    obj_xy: np.ndarray  # [N, T, 2] global
    obj_yaw: np.ndarray  # [N, T]
    ego_xy: np.ndarray  # [T, 2]
    ego_yaw: np.ndarray  # [T]

    @classmethod
    def of(cls, layout: SceneLayout, *, between: int) -> SceneMotion:
        count = len(layout.times)
        steps = np.arange((count - 1) * (between + 1) + 1)
        key, sweep = np.divmod(steps, between + 1)
        times = layout.times[key] + sweep * SAMPLE_PERIOD_S / (between + 1)
        poses = [o.track.pose(layout.road, times) for o in layout.objects]
        n_obj = len(layout.objects)
        ego_xy, ego_yaw = layout.ego.pose(layout.road, times)
        return cls(
            times=times,
            key=key,
            sweep=sweep,
            obj_xy=np.array([xy for xy, _ in poses]).reshape(n_obj, len(times), 2),
            obj_yaw=np.array([yaw for _, yaw in poses]).reshape(n_obj, len(times)),
            ego_xy=ego_xy,
            ego_yaw=ego_yaw,
        )


@dataclass
class SceneObjects:
    """What stays fixed about a scene's objects: annotation boxes, bodies, looks, attributes."""

    box_lwh: np.ndarray  # [N, 3] annotation box (length, width, height)
    body_lwh: np.ndarray  # [N, 3] the body cameras and LiDAR see, `margin` inside the box
    colors: np.ndarray  # [N, 3]
    reflectivity: np.ndarray  # [N]
    labels: np.ndarray  # [N] index into CLASS_NAMES
    attributes: list[str | None]

    @classmethod
    def of(cls, layout: SceneLayout, tokens: list[str]) -> SceneObjects:
        objects = layout.objects
        n_obj = len(objects)
        return cls(
            box_lwh=np.array([o.lwh for o in objects]).reshape(n_obj, 3),
            body_lwh=np.array([body_lwh(o.class_name, o.lwh) for o in objects]).reshape(n_obj, 3),
            colors=np.array([instance_color(o.class_name, t) for o, t in zip(objects, tokens, strict=True)]).reshape(
                n_obj, 3
            ),
            reflectivity=np.array([CLASS_SPECS[o.class_name].reflectivity for o in objects]),
            labels=np.array([CLASS_NAMES.index(o.class_name) for o in objects], dtype=np.int64),
            attributes=[attribute_name(o.class_name, moving=o.moving, on_road=o.on_road) for o in objects],
        )

    def bodies_at(self, motion: SceneMotion, step: int) -> Boxes:
        centers = np.concatenate([motion.obj_xy[:, step], self.body_lwh[:, 2:] / 2], axis=1)  # [N, 3] on z = 0
        return Boxes(
            centers=centers,
            yaws=motion.obj_yaw[:, step],
            lwh=self.body_lwh,
            colors=self.colors,
            reflectivity=self.reflectivity,
            labels=self.labels,
        )

    def annotation_boxes(self, motion: SceneMotion, step: int) -> list[dict[str, list[float]]]:
        centers = np.concatenate([motion.obj_xy[:, step], self.box_lwh[:, 2:] / 2], axis=1)  # bottoms on z = 0
        return [
            annotation_box(centers[k], self.box_lwh[k, [1, 0, 2]], float(motion.obj_yaw[k, step]))
            for k in range(len(centers))
        ]


def devkit_lidar_counts(
    points: np.ndarray, boxes: list[dict[str, Any]], *, pose: dict[str, Any], calib: dict[str, Any]
) -> np.ndarray:
    """[M] points of `points` [P, >=3] (LiDAR frame, float32 as stored) inside each annotation `boxes` record.

    The devkit's own arithmetic: a `Box` from the record, moved by `get_sample_data`'s four steps, then
    `points_in_box`. Points far from a box are skipped first; that cannot change any point's own test.
    """
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import points_in_box
    from pyquaternion import Quaternion

    xyz = points[:, :3].T  # [3, P] float32, as LidarPointCloud.points[:3]
    xy = xyz[:2].astype(np.float64)  # [2, P]
    counts = np.zeros(len(boxes), dtype=np.int64)
    for k, record in enumerate(boxes):
        box = Box(record["translation"], record["size"], Quaternion(record["rotation"]))
        box.translate(-np.array(pose["translation"]))
        box.rotate(Quaternion(pose["rotation"]).inverse)
        box.translate(-np.array(calib["translation"]))
        box.rotate(Quaternion(calib["rotation"]).inverse)
        reach = 0.5 * float(np.linalg.norm(box.wlh)) + 0.5  # beyond any corner, in any direction
        near = np.nonzero(np.sum((xy - box.center[:2, None]) ** 2, axis=0) <= reach**2)[0]
        counts[k] = int(points_in_box(box, xyz[:, near]).sum())
    return counts


def write_scene(
    root: Path,
    tables: Tables,
    rig: SensorRig,
    layout: SceneLayout,
    *,
    scene: int,
    name: str,
    between: int,
    rng: np.random.Generator,
    on_sample: Callable[[], None],
) -> int:
    """Every key frame and sweep of scene number `scene`; returns the number of key-frame LiDAR points written."""
    count = len(layout.times)
    first_timestamp = FIRST_TIMESTAMP + scene * SCENE_GAP_US
    calibrations = {LIDAR_CHANNEL: (rig.lidar.lidar2ego, None)}
    calibrations.update({cam.name: (cam.camera2ego, cam.intrinsic) for cam in rig.cameras})
    logfile = tables.add_log_and_sensors(scene, first_timestamp=first_timestamp, calibrations=calibrations)
    radius = abs(1.0 / layout.road.curvature)
    description = (
        f"Synthetic drive at {layout.ego.vs:.1f} m/s on a road curving with radius {radius:.0f} m, "
        f"{len(layout.objects)} objects"
    )
    tables.add_scene(scene, name=name, description=description, n_samples=count)
    tokens = [tables.add_instance(scene, k, class_name=o.class_name, count=count) for k, o in enumerate(layout.objects)]
    writer = SceneWriter(
        root=root, tables=tables, rig=rig, layout=layout, scene=scene, rng=rng, logfile=logfile,
        first_timestamp=first_timestamp, objects=SceneObjects.of(layout, tokens),
        motion=SceneMotion.of(layout, between=between), between=between,
    )  # fmt: skip
    n_points = 0
    for step, sweep in enumerate(writer.motion.sweep):
        if sweep == 0:
            n_points += writer.key_frame(step)
            on_sample()
        else:
            writer.lidar(step)
    return n_points


@dataclass
class SceneWriter:
    """Writes the files and table records of one scene, one LiDAR timestamp (`step`) at a time."""

    root: Path
    tables: Tables
    rig: SensorRig
    layout: SceneLayout
    scene: int
    rng: np.random.Generator
    logfile: str
    first_timestamp: int  # [us]
    objects: SceneObjects
    motion: SceneMotion
    between: int  # non-key-frame LiDAR sweeps between two key frames

    def _timestamp(self, step: int) -> int:
        return self.first_timestamp + int(round(self.motion.times[step] * 1e6))

    def _ego2global(self, step: int) -> np.ndarray:
        return ego_pose_matrix(self.motion.ego_xy[step], float(self.motion.ego_yaw[step]))

    def key_frame(self, step: int) -> int:
        """Cameras, LiDAR and annotations of one key frame; returns its LiDAR point count."""
        index, count = int(self.motion.key[step]), len(self.layout.times)
        timestamp, ego2global = self._timestamp(step), self._ego2global(step)
        self.tables.add_sample(self.scene, index, count=count, timestamp=timestamp)
        bodies = self.objects.bodies_at(self.motion, step)
        visible = np.zeros(len(bodies), dtype=np.int64)
        projected = np.zeros(len(bodies), dtype=np.int64)
        for cam in self.rig.cameras:
            rendered = render_camera(cam, ego2global=ego2global, road=self.layout.road, boxes=bodies, rng=self.rng)
            visible += rendered.visible
            projected += rendered.projected
            filename = f"samples/{cam.name}/{self.logfile}__{cam.name}__{timestamp}.jpg"
            write_jpeg(self.root / filename, rendered.image)
            self.tables.add_sample_data(
                self.scene, index, count=count, channel=cam.name, timestamp=timestamp, ego2global=ego2global,
                filename=filename, size=(cam.width, cam.height),
            )  # fmt: skip
        points, pose = self.lidar(step)
        boxes = self.objects.annotation_boxes(self.motion, step)
        calib = self.tables.calibration(self.scene, LIDAR_CHANNEL)
        num_lidar_pts = devkit_lidar_counts(points, boxes, pose=pose, calib=calib)
        for k, box in enumerate(boxes):
            fraction = visible[k] / projected[k] if projected[k] > 0 else 0.0
            self.tables.add_annotation(
                self.scene, index, k, count=count, box=box, attribute=self.objects.attributes[k],
                visibility=visibility_token(fraction), num_lidar_pts=int(num_lidar_pts[k]),
            )  # fmt: skip
        return len(points)

    def lidar(self, step: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Cast and record the LiDAR sweep at `step` (key frame or not); returns (points [P, 5], its ego_pose)."""
        index, sweep = int(self.motion.key[step]), int(self.motion.sweep[step])
        timestamp, ego2global = self._timestamp(step), self._ego2global(step)
        bodies = self.objects.bodies_at(self.motion, step)
        cast = cast_lidar(self.rig.lidar, ego2global=ego2global, road=self.layout.road, boxes=bodies, rng=self.rng)
        folder = "samples" if sweep == 0 else "sweeps"
        filename = f"{folder}/{LIDAR_CHANNEL}/{self.logfile}__{LIDAR_CHANNEL}__{timestamp}.pcd.bin"
        cast.points.tofile(self.root / filename)
        pose = self.tables.add_sample_data(
            self.scene, index, count=len(self.layout.times), channel=LIDAR_CHANNEL, timestamp=timestamp,
            ego2global=ego2global, filename=filename, sweep=sweep, between=self.between,
        )  # fmt: skip
        return cast.points, pose


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image as a JPEG (cv2 wants BGR)."""
    ok, jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError(f"could not encode {path.name} as JPEG; check the opencv-python-headless install")
    path.write_bytes(jpeg.tobytes())
