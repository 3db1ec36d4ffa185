"""Ray-casting kernels for the synthetic world: rigid transforms, ray/box and ray/ground hits, rectangle overlap.

Box corners, yaw rotations and angle wrapping come from `simdistill.pipeline.geometry` (one owner per fact).

Everything is vectorised numpy over rays (or over time steps) so that a 400x225 camera or a
32x1084 LiDAR sweep is a handful of array operations per object.
"""

from __future__ import annotations

import numpy as np
from pyquaternion import Quaternion

from simdistill.pipeline.geometry import rot_z


def make_transform(rotation: np.ndarray, translation: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """4x4 homogeneous matrix from a 3x3 rotation and a translation (source2target)."""
    mat = np.eye(4)
    mat[:3, :3] = rotation
    mat[:3, 3] = translation
    return mat


def quaternion_wxyz(rotation: np.ndarray) -> list[float]:
    """A 3x3 rotation as the [w, x, y, z] list nuScenes tables store (w >= 0 for a unique sign)."""
    q = Quaternion(matrix=rotation, atol=1e-6, rtol=1e-6).normalised
    values = [float(q.w), float(q.x), float(q.y), float(q.z)]
    if values[0] < 0:
        values = [-v for v in values]
    return values


def rotation_from_wxyz(wxyz: list[float] | tuple[float, ...]) -> np.ndarray:
    return Quaternion(wxyz).rotation_matrix


def ray_box_distance(
    origin: np.ndarray,
    dirs: np.ndarray,
    *,
    center: np.ndarray,
    yaw: float,
    half: np.ndarray,
) -> np.ndarray:
    """Exact ray / oriented-box intersection (slab method in the box's own frame).

    origin: [3] ray origin (outside the box), dirs: [N, 3] ray directions (any length, t is in their units).
    Returns t [N]: the entry distance, inf where the ray misses. (Which face was hit follows from the hit
    point, see `looks.body_frame`.)
    """
    rot = rot_z(yaw)
    o_local = rot.T @ (origin - center)  # [3]
    d_local = dirs @ rot  # [N, 3] (= rot.T @ d per row)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d_local
        t1 = (-half - o_local) * inv  # [N, 3]
        t2 = (half - o_local) * inv
    t_near = np.minimum(t1, t2).max(axis=1)  # [N]
    t_far = np.maximum(t1, t2).min(axis=1)
    hit = (t_near <= t_far) & (t_near > 0.0)  # NaN (ray in a face plane) compares False: a miss
    return np.where(hit, t_near, np.inf)


def ground_intersect(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance t [N] along each ray to the plane z = 0 (inf for rays that do not go down)."""
    dz = dirs[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[2] / dz
    return np.where(dz < -1e-9, t, np.inf)


def rectangles_overlap(
    center_a: np.ndarray,
    yaw_a: np.ndarray,
    half_a: tuple[float, float],
    center_b: np.ndarray,
    yaw_b: np.ndarray,
    half_b: tuple[float, float],
) -> np.ndarray:
    """Separating-axis test for pairs of 2D oriented rectangles, vectorised over T pairs.

    center_*: [T, 2], yaw_*: [T], half_* = (half length, half width). Returns [T] bool (True = overlap).
    """
    axes_a = np.stack([np.stack([np.cos(yaw_a), np.sin(yaw_a)], -1), np.stack([-np.sin(yaw_a), np.cos(yaw_a)], -1)], 1)
    axes_b = np.stack([np.stack([np.cos(yaw_b), np.sin(yaw_b)], -1), np.stack([-np.sin(yaw_b), np.cos(yaw_b)], -1)], 1)
    delta = center_b - center_a  # [T, 2]
    overlap = np.ones(len(delta), dtype=bool)
    for axes in (axes_a, axes_b):
        for k in range(2):
            axis = axes[:, k]  # [T, 2]
            dist = np.abs(np.sum(delta * axis, -1))
            ra = half_a[0] * np.abs(np.sum(axes_a[:, 0] * axis, -1)) + half_a[1] * np.abs(
                np.sum(axes_a[:, 1] * axis, -1)
            )
            rb = half_b[0] * np.abs(np.sum(axes_b[:, 0] * axis, -1)) + half_b[1] * np.abs(
                np.sum(axes_b[:, 1] * axis, -1)
            )
            overlap &= dist <= ra + rb
    return overlap
