"""Comparing two loaded samples (an info-file source against the devkit tables)."""

from __future__ import annotations

import numpy as np

from simdistill.pipeline.geometry import wrap_angle

MATRICES = ("cam_intrinsics", "camera2lidar", "camera2ego", "lidar2ego", "ego2global")


def assert_same_sample(a, b, *, sweep_atol: float = 1e-4, box_atol: float = 0.0, yaw_atol: float = 1e-3) -> None:
    """a from an info file, b from the devkit tables: the same key frame, to float32 matrix precision.

    Box centres, sizes and velocities within box_atol (0: bit-identical); yaw within yaw_atol, since mmdet3d's
    yaw (pyquaternion yaw_pitch_roll) differs from the devkit heading by ~pitch x roll of the box.
    """
    assert a.token == b.token and a.timestamp == b.timestamp
    assert a.images.dtype == b.images.dtype and np.array_equal(a.images, b.images)
    for name in MATRICES:  # the info file stores 4x4 matrices rounded to float32, as mmdet3d does
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, err_msg=name)
    assert_same_boxes(a, b, box_atol=box_atol, yaw_atol=yaw_atol)
    assert len(a.sweeps) == len(b.sweeps)
    np.testing.assert_array_equal(a.sweeps[0], b.sweeps[0])
    for x, y in zip(a.sweeps[1:], b.sweeps[1:]):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x[:, 3:], y[:, 3:])  # intensity and age exactly
        np.testing.assert_allclose(x[:, :3], y[:, :3], atol=sweep_atol)


def assert_same_boxes(a, b, *, box_atol: float = 0.0, yaw_atol: float = 1e-3) -> None:
    assert a.gt_boxes.dtype == b.gt_boxes.dtype == np.float32 and a.gt_boxes.shape == b.gt_boxes.shape
    not_yaw = [0, 1, 2, 3, 4, 5, 7, 8]
    np.testing.assert_allclose(a.gt_boxes[:, not_yaw], b.gt_boxes[:, not_yaw], rtol=0, atol=box_atol)
    assert np.all(np.abs(wrap_angle(a.gt_boxes[:, 6] - b.gt_boxes[:, 6])) <= yaw_atol)
