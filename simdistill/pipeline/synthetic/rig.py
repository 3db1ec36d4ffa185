"""The sensor rig: six nuScenes-like cameras and a 32-beam top LiDAR, with their ray bundles.

Extrinsics are sensor2ego (what nuScenes' calibrated_sensor stores). Cameras use the standard
optical convention (z forward, x right, y down); the LiDAR is yawed about -90 degrees so its x axis
points to the ego's right and y forward, as on the nuScenes vehicle (so LiDAR frame != ego frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simdistill.config import CAMERA_NAMES
from simdistill.pipeline.geometry import rot_z
from simdistill.pipeline.synthetic.raycast import make_transform, rotation_from_wxyz

NUSCENES_IMAGE_SIZE = (1600, 900)  # (width, height) the intrinsics below are given for

# Per camera: position in the ego frame [m], yaw of the optical axis from the ego x axis [deg],
# focal length and principal point [px] at 1600x900 (values close to a nuScenes calibration).
_CAMERAS: dict[str, tuple[tuple[float, float, float], float, float, tuple[float, float]]] = {
    "CAM_FRONT": ((1.70, 0.016, 1.51), 0.0, 1266.4, (816.3, 491.5)),
    "CAM_FRONT_RIGHT": ((1.55, -0.49, 1.50), -55.0, 1260.8, (807.9, 495.3)),
    "CAM_FRONT_LEFT": ((1.52, 0.49, 1.51), 55.0, 1272.6, (826.6, 479.8)),
    "CAM_BACK": ((0.03, 0.0, 1.57), 180.0, 809.2, (829.2, 481.8)),
    "CAM_BACK_LEFT": ((1.04, 0.48, 1.59), 110.0, 1256.7, (817.8, 451.9)),
    "CAM_BACK_RIGHT": ((1.04, -0.48, 1.59), -110.0, 1259.5, (807.3, 501.2)),
}

# LIDAR_TOP calibration of a nuScenes log: about 0.94 m ahead of the rear axle, 1.84 m up, yaw ~ -90 deg.
LIDAR_TRANSLATION = (0.943713, 0.0, 1.84023)
LIDAR_ROTATION_WXYZ = (0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817)
LIDAR_ELEVATION_DEG = (-30.0, 10.0)  # lowest and highest beam (HDL-32E-like)
LIDAR_MAX_RANGE = 70.0  # [m]


@dataclass
class Camera:
    name: str
    intrinsic: np.ndarray  # [3, 3] at the rendered resolution
    camera2ego: np.ndarray  # [4, 4]
    width: int
    height: int
    rays: np.ndarray  # [H, W, 3] unit ray directions in the camera frame, one per pixel centre


@dataclass
class Lidar:
    lidar2ego: np.ndarray  # [4, 4]
    elevations: np.ndarray  # [B] beam elevation angles [rad], ring index = position in this array
    azimuths: np.ndarray  # [A] firing azimuths [rad] in the LiDAR frame
    rays: np.ndarray  # [B, A, 3] unit ray directions in the LiDAR frame
    max_range: float = LIDAR_MAX_RANGE


@dataclass
class SensorRig:
    cameras: list[Camera]
    lidar: Lidar


def camera_rotation(yaw_deg: float) -> np.ndarray:
    """camera2ego rotation of a level camera whose optical axis points at `yaw_deg` in the ego frame."""
    yaw = np.deg2rad(yaw_deg)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])  # camera z
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])  # camera x
    down = np.array([0.0, 0.0, -1.0])  # camera y
    return np.stack([right, down, forward], axis=1)


def pixel_rays(intrinsic: np.ndarray, width: int, height: int) -> np.ndarray:
    """Unit rays [H, W, 3] through the pixel centres (pixel (u, v) is centred at integer coordinates)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # [H, W, 3]
    rays = pix @ np.linalg.inv(intrinsic).T
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def build_rig(*, image_width: int, image_height: int, lidar_beams: int, lidar_azimuth_steps: int) -> SensorRig:
    sx = image_width / NUSCENES_IMAGE_SIZE[0]
    sy = image_height / NUSCENES_IMAGE_SIZE[1]
    cameras = []
    for name in CAMERA_NAMES:
        xyz, yaw_deg, focal, (cx, cy) = _CAMERAS[name]
        intrinsic = np.array([[focal * sx, 0.0, cx * sx], [0.0, focal * sy, cy * sy], [0.0, 0.0, 1.0]])
        cameras.append(
            Camera(
                name=name,
                intrinsic=intrinsic,
                camera2ego=make_transform(camera_rotation(yaw_deg), xyz),
                width=image_width,
                height=image_height,
                rays=pixel_rays(intrinsic, image_width, image_height),
            )
        )
    elevations = np.deg2rad(np.linspace(LIDAR_ELEVATION_DEG[0], LIDAR_ELEVATION_DEG[1], lidar_beams))
    azimuths = np.linspace(-np.pi, np.pi, lidar_azimuth_steps, endpoint=False)
    ce, se = np.cos(elevations)[:, None], np.sin(elevations)[:, None]
    rays = np.stack(
        [
            ce * np.cos(azimuths)[None],
            ce * np.sin(azimuths)[None],
            np.broadcast_to(se, (lidar_beams, lidar_azimuth_steps)),
        ],
        axis=-1,
    )  # [B, A, 3]
    lidar = Lidar(
        lidar2ego=make_transform(rotation_from_wxyz(LIDAR_ROTATION_WXYZ), LIDAR_TRANSLATION),
        elevations=elevations,
        azimuths=azimuths,
        rays=rays,
    )
    return SensorRig(cameras=cameras, lidar=lidar)


def ego_pose_matrix(xy: np.ndarray, yaw: float) -> np.ndarray:
    """ego2global for an ego origin on the ground plane (z = 0) heading `yaw`."""
    return make_transform(rot_z(yaw), (float(xy[0]), float(xy[1]), 0.0))
