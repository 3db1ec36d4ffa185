"""A plausible `Batch` without any dataset, for model and loss tests.

Six cameras at nuScenes-like poses around the ego (camera frame: x right, y down, z forward),
intrinsics for the raw image size (`cfg.world`), an `img_aug_matrix` that resizes then crops
(bottom kept) to `cfg.augment.final_*`, a small seeded `lidar_aug_matrix` (rotation + scale; identity
with `lidar_aug=False`), a few GT boxes standing on the ground, and LiDAR points on those boxes' faces
and on the ground, all in the augmented LiDAR frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from simdistill.config import CLASS_NAMES, Config
from simdistill.pipeline.sample import Batch

CAMERA_YAWS_DEG = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)  # CAMERA_NAMES order, from the LiDAR x axis
GROUND_Z = -1.8  # ground height in the LiDAR frame [m]
CLASS_SIZES = {  # typical (l, w, h) [m]
    "car": (4.6, 1.9, 1.7),
    "truck": (6.5, 2.5, 2.8),
    "construction_vehicle": (6.0, 2.8, 3.0),
    "bus": (11.0, 2.9, 3.5),
    "trailer": (12.0, 2.9, 3.8),
    "barrier": (0.5, 2.5, 1.0),
    "motorcycle": (2.1, 0.8, 1.5),
    "bicycle": (1.7, 0.6, 1.3),
    "pedestrian": (0.7, 0.7, 1.8),
    "traffic_cone": (0.4, 0.4, 1.0),
}


def camera2lidar_matrix(yaw: float, *, radius: float = 1.0, z: float = -0.3) -> np.ndarray:
    """Pose of a camera looking horizontally along `yaw` (rad), mounted `radius` m out from the LiDAR."""
    c, s = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[:3, 0] = (s, -c, 0.0)  # camera x (right)
    m[:3, 1] = (0.0, 0.0, -1.0)  # camera y (down)
    m[:3, 2] = (c, s, 0.0)  # camera z (forward)
    m[:3, 3] = (radius * c, radius * s, z)
    return m


def intrinsics(raw_w: int, raw_h: int) -> np.ndarray:
    k = np.eye(4)
    k[0, 0] = k[1, 1] = 0.8 * raw_w
    k[0, 2], k[1, 2] = raw_w / 2.0, raw_h / 2.0
    return k


def resize_crop_matrix(raw_hw: tuple[int, int], final_hw: tuple[int, int]) -> np.ndarray:
    """Raw pixel -> augmented pixel: resize to cover the final size, crop the bottom-centre window."""
    (raw_h, raw_w), (fh, fw) = raw_hw, final_hw
    r = max(fw / raw_w, fh / raw_h)
    crop_w = (raw_w * r - fw) / 2.0
    crop_h = raw_h * r - fh
    m = np.eye(4)
    m[0, 0] = m[1, 1] = r
    m[0, 3], m[1, 3] = -crop_w, -crop_h
    return m


def lidar_aug_matrix(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.95, 1.05)
    c, s = math.cos(angle), math.sin(angle)
    m = np.eye(4)
    m[:3, :3] = scale * np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    m[:3, 3] = (rng.normal(0, 0.2), rng.normal(0, 0.2), 0.0)
    return m


def transform_boxes(boxes: np.ndarray, aug: np.ndarray) -> np.ndarray:
    """Apply a rotation(z) + uniform scale + translation matrix to [M, 9] boxes."""
    out = boxes.copy()
    scale = float(np.linalg.norm(aug[:3, 0]))
    angle = math.atan2(aug[1, 0], aug[0, 0])
    out[:, :3] = boxes[:, :3] @ aug[:3, :3].T + aug[:3, 3]
    out[:, 3:6] = boxes[:, 3:6] * scale
    out[:, 6] = boxes[:, 6] + angle
    out[:, 7:9] = boxes[:, 7:9] @ aug[:2, :2].T
    return out


def sample_boxes(rng: np.random.Generator, n: int, max_range: float) -> tuple[np.ndarray, np.ndarray]:
    """n boxes [n, 9] on the ground, centres >= 6 m apart, and labels [n]."""
    boxes: list[list[float]] = []
    labels: list[int] = []
    for _ in range(50 * n):
        if len(boxes) == n:
            break
        r, phi = rng.uniform(6.0, max_range), rng.uniform(-math.pi, math.pi)
        x, y = r * math.cos(phi), r * math.sin(phi)
        if any(math.hypot(x - b[0], y - b[1]) < 6.0 for b in boxes):
            continue
        label = int(rng.integers(len(CLASS_NAMES)))
        length, width, height = CLASS_SIZES[CLASS_NAMES[label]]
        moving = CLASS_NAMES[label] not in ("barrier", "traffic_cone")
        v = rng.uniform(-3.0, 3.0, size=2) if moving else np.zeros(2)
        yaw = rng.uniform(-math.pi, math.pi)
        boxes.append([x, y, GROUND_Z + height / 2, length, width, height, yaw, v[0], v[1]])
        labels.append(label)
    return np.array(boxes, dtype=np.float64).reshape(-1, 9), np.array(labels, dtype=np.int64)


def surface_points(rng: np.random.Generator, box: np.ndarray, n: int) -> np.ndarray:
    """n points on the 4 side faces and the top of `box` [9] -> [n, 3]."""
    half = box[3:6] / 2  # half length, width, height
    u = rng.uniform(-1.0, 1.0, size=(n, 3)) * half  # box-local coordinates
    face = rng.integers(5, size=n)
    u[face == 0, 0], u[face == 1, 0] = half[0], -half[0]
    u[face == 2, 1], u[face == 3, 1] = half[1], -half[1]
    u[face == 4, 2] = half[2]
    c, s = math.cos(box[6]), math.sin(box[6])
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return u @ rot.T + box[:3]


def make_fake_batch(
    cfg: Config, batch_size: int, *, seed: int, lidar_aug: bool = True, num_boxes: int = 4,
    ground_points: int = 400, points_per_box: int = 60,
) -> Batch:
    """A deterministic (by seed) Batch shaped by cfg.world (raw images), cfg.augment (final size), cfg.model.bev."""
    rng = np.random.default_rng(seed)
    raw_hw = (cfg.world.image_height, cfg.world.image_width)
    final_hw = (cfg.augment.final_height, cfg.augment.final_width)
    bev = cfg.model.bev
    half = min(bev.xbound[1], -bev.xbound[0], bev.ybound[1], -bev.ybound[0])
    n_cam = len(CAMERA_YAWS_DEG)
    cam2lidar = np.stack([camera2lidar_matrix(math.radians(y)) for y in CAMERA_YAWS_DEG])
    intr = np.repeat(intrinsics(raw_hw[1], raw_hw[0])[None], n_cam, axis=0)
    img_aug = np.repeat(resize_crop_matrix(raw_hw, final_hw)[None], n_cam, axis=0)

    lidar_augs, points, gt_boxes, gt_labels = [], [], [], []
    for _ in range(batch_size):
        aug = lidar_aug_matrix(rng) if lidar_aug else np.eye(4)
        boxes, labels = sample_boxes(rng, num_boxes, 0.75 * half)
        pts = [surface_points(rng, box, points_per_box) for box in boxes]
        ground = rng.uniform(-0.9 * half, 0.9 * half, size=(ground_points, 3))
        ground[:, 2] = GROUND_Z + rng.normal(0, 0.02, size=ground_points)
        xyz = np.concatenate([*pts, ground]) @ aug[:3, :3].T + aug[:3, 3]
        feats = np.stack([rng.uniform(0, 1, size=len(xyz)), np.zeros(len(xyz))], 1)  # intensity, time_lag
        lidar_augs.append(aug)
        points.append(torch.from_numpy(np.concatenate([xyz, feats], 1)).float())
        gt_boxes.append(torch.from_numpy(transform_boxes(boxes, aug)).float())
        gt_labels.append(torch.from_numpy(labels))

    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, n_cam, 3, *final_hw, generator=gen)

    def rep(m: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.repeat(m[None], batch_size, axis=0)).float()

    return Batch(
        tokens=[f"fake-{seed}-{b}" for b in range(batch_size)],
        images=images,
        cam_intrinsics=rep(intr),
        camera2lidar=rep(cam2lidar),
        img_aug_matrix=rep(img_aug),
        lidar_aug_matrix=torch.from_numpy(np.stack(lidar_augs)).float(),
        points=points,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
    )
