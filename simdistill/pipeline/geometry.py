"""Small, vectorised 3D geometry helpers shared by loading, augmentation and evaluation.

Conventions follow `simdistill.pipeline.sample`: boxes are `[M, >=7] = (x, y, z, l, w, h, yaw, ...)`
with (x, y, z) the gravity centre, l along the heading, yaw counter-clockwise from +x; matrices are
4x4 homogeneous `source2target`. Quaternions are (w, x, y, z), the nuScenes table order.
"""

from __future__ import annotations

import numpy as np


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(w, x, y, z) quaternion(s) [..., 4] -> rotation matrices [..., 3, 3] (normalised first)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rot = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return rot.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> (w, x, y, z) with w >= 0 (Shepperd's method, numerically stable)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s])
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s])
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def pose_matrix(translation: np.ndarray | list[float], rotation: np.ndarray | list[float]) -> np.ndarray:
    """A nuScenes (translation, rotation quaternion) record -> 4x4 float64 source2target matrix."""
    mat = np.eye(4)
    mat[:3, :3] = quaternion_to_matrix(np.asarray(rotation))
    mat[:3, 3] = np.asarray(translation, dtype=np.float64)
    return mat


def rot_z(angle: float) -> np.ndarray:
    """3x3 counter-clockwise rotation about +z by `angle` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def transform_points(matrix: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Apply a 4x4 matrix to points [P, 3]; returns [P, 3] in the dtype of `xyz`."""
    m = np.asarray(matrix, dtype=np.float64)
    out = xyz.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    return out.astype(xyz.dtype, copy=False)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap radians into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Move boxes [M, 7 or 9] through a 4x4 similarity (rotation about z, uniform scale, flips, translation).

    Centres go through the full matrix; sizes are multiplied by the scale |det(A)|^(1/3) of the linear
    part A; the heading vector goes through A (so flips mirror the yaw); velocities go through A's
    xy block (mmdet3d scales and rotates velocities with the boxes the same way).
    """
    m = np.asarray(matrix, dtype=np.float64)
    lin = m[:3, :3]  # [3, 3]
    b = boxes.astype(np.float64).copy()
    scale = abs(np.linalg.det(lin)) ** (1.0 / 3.0)
    b[:, :3] = b[:, :3] @ lin.T + m[:3, 3]
    b[:, 3:6] *= scale
    heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), np.zeros(len(b))], axis=1) @ lin.T  # [M, 3]
    b[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    if b.shape[1] >= 9:
        b[:, 7:9] = b[:, 7:9] @ lin[:2, :2].T
    return b.astype(boxes.dtype, copy=False)


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Boxes [M, >=7] -> corners [M, 8, 3] (bottom face first, counter-clockwise from front-left)."""
    b = np.asarray(boxes, dtype=np.float64)
    unit = np.array(
        [[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]],
        dtype=np.float64,
    ) * 0.5  # [8, 3] in (along l, along w, along h)
    local = unit[None] * b[:, None, 3:6]  # [M, 8, 3]
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    x = local[..., 0] * c[:, None] - local[..., 1] * s[:, None]
    y = local[..., 0] * s[:, None] + local[..., 1] * c[:, None]
    return np.stack([x, y, local[..., 2]], axis=-1) + b[:, None, :3]


def points_in_boxes(xyz: np.ndarray, boxes: np.ndarray, *, margin: float = 0.0) -> np.ndarray:
    """Which points lie inside which boxes: bool [P, M]. `margin` grows every box by that many metres."""
    p = np.asarray(xyz, dtype=np.float64)[:, None, :3] - np.asarray(boxes, dtype=np.float64)[None, :, :3]  # [P, M, 3]
    yaw = np.asarray(boxes, dtype=np.float64)[:, 6]
    c, s = np.cos(yaw), np.sin(yaw)
    along = p[..., 0] * c + p[..., 1] * s  # [P, M] coordinate along the heading
    across = -p[..., 0] * s + p[..., 1] * c
    half = np.asarray(boxes, dtype=np.float64)[:, 3:6] / 2 + margin  # [M, 3]
    return (np.abs(along) <= half[:, 0]) & (np.abs(across) <= half[:, 1]) & (np.abs(p[..., 2]) <= half[:, 2])
