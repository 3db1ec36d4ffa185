"""Augmentation with recorded parameters: replay, randomness, and geometric consistency."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simdistill.config import AugmentConfig
from simdistill.errors import DataError
from simdistill.pipeline.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugParams,
    CameraAug,
    ViewBuilder,
    augment,
    draw_params,
)
from simdistill.pipeline.geometry import points_in_boxes, rot_z
from simdistill.pipeline.sample import Sample

RAW_H, RAW_W = 112, 200
POLICY = AugmentConfig(final_height=64, final_width=160, resize_lim=(0.85, 0.95), bev_trans_std=(0.5, 0.5, 0.2))
CAM_YAWS_DEG = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)


def camera2lidar(yaw_deg: float) -> np.ndarray:
    """A camera at 1.5 m looking horizontally along `yaw_deg` (camera axes: x right, y down, z forward)."""
    a = np.deg2rad(yaw_deg)
    mat = np.eye(4)
    mat[:3, 0] = [np.sin(a), -np.cos(a), 0.0]
    mat[:3, 1] = [0.0, 0.0, -1.0]
    mat[:3, 2] = [np.cos(a), np.sin(a), 0.0]
    mat[:3, 3] = [0.2, 0.0, 1.5]
    return mat


def intrinsics() -> np.ndarray:
    return np.array([[110.0, 0.0, 99.5], [0.0, 110.0, 55.5], [0.0, 0.0, 1.0]])


def make_sample(seed: int = 0, *, n_sweeps: int = 2) -> Sample:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(6, RAW_H, RAW_W, 3), dtype=np.uint8)
    sweeps = []
    for j in range(n_sweeps):
        xyz, intensity = rng.uniform(-30, 30, (400, 3)), rng.uniform(0, 1, (400, 1))
        pts = np.concatenate([xyz, intensity, np.full((400, 1), 0.5 * j)], 1)
        sweeps.append(pts.astype(np.float32))
    boxes = np.array(
        [[8.0, 2.0, 0.8, 4.5, 1.9, 1.6, 0.4, 3.0, -1.0], [-5.0, -6.0, 0.9, 0.8, 0.7, 1.8, -2.5, 0.5, 0.2]],
        dtype=np.float32,
    )
    return Sample(
        token=f"tok{seed}",
        images=images,
        cam_intrinsics=np.stack([intrinsics()] * 6),
        camera2lidar=np.stack([camera2lidar(a) for a in CAM_YAWS_DEG]),
        camera2ego=np.stack([camera2lidar(a) for a in CAM_YAWS_DEG]),
        lidar2ego=np.eye(4),
        ego2global=np.eye(4),
        sweeps=sweeps,
        gt_boxes=boxes,
        gt_labels=np.array([0, 8]),
    )


def view_arrays(view) -> dict[str, np.ndarray]:
    return {f.name: getattr(view, f.name) for f in dataclasses.fields(view) if f.name != "token"}


def test_params_vector_round_trip_replays_view_bit_for_bit() -> None:
    sample = make_sample()
    params = draw_params(np.random.default_rng(7), POLICY, raw_hw=(RAW_H, RAW_W), n_sweeps=2, train=True)
    vec = params.to_vector()
    assert vec.dtype == np.float32 and vec.shape == (AugParams.aug_dim(6, 2),) == (len(AugParams.names(6, 2)),)
    stored = np.frombuffer(vec.tobytes(), dtype=np.float32)  # what the store hands back
    replayed = AugParams.from_vector(stored, 6, 2)
    assert replayed == params
    first = augment(sample, params, POLICY, max_points=500)
    second = augment(make_sample(), replayed, POLICY, max_points=500)
    for name, arr in view_arrays(first).items():
        assert arr.dtype == view_arrays(second)[name].dtype
        assert np.array_equal(arr, view_arrays(second)[name]), name
    assert np.array_equal(first.params, vec)
    assert first.images.shape == (6, 3, 64, 160) and first.images.dtype == np.float32
    assert first.points.shape == (500, 5)


def test_from_vector_rejects_wrong_layout() -> None:
    params = draw_params(np.random.default_rng(0), POLICY, raw_hw=(RAW_H, RAW_W), n_sweeps=1, train=True)
    with pytest.raises(DataError, match="cameras and 3 sweeps need"):
        AugParams.from_vector(params.to_vector(), 6, 3)


def test_draw_params_is_seeded_and_within_policy() -> None:
    a = draw_params(np.random.default_rng(1), POLICY, raw_hw=(RAW_H, RAW_W), train=True)
    b = draw_params(np.random.default_rng(1), POLICY, raw_hw=(RAW_H, RAW_W), train=True)
    c = draw_params(np.random.default_rng(2), POLICY, raw_hw=(RAW_H, RAW_W), train=True)
    assert a == b and a != c
    many = [draw_params(np.random.default_rng(s), POLICY, raw_hw=(RAW_H, RAW_W), train=True) for s in range(40)]
    cams = [cam for p in many for cam in p.cams]
    assert all(0.85 <= cam.resize <= 0.95 and -5.4 <= cam.rot_deg <= 5.4 for cam in cams)
    assert all(0 <= cam.crop_x <= int(RAW_W * cam.resize) - 160 for cam in cams)
    assert all(cam.crop_y == int(RAW_H * cam.resize) - 64 for cam in cams)  # bot_pct 0: keep the bottom
    assert {cam.flip for cam in cams} == {True, False}
    assert {p.bev_flip_x for p in many} == {True, False} and {p.bev_flip_y for p in many} == {True, False}
    assert all(-0.3925 <= p.bev_rot <= 0.3925 and 0.95 <= p.bev_scale <= 1.05 for p in many)
    no_flip = dataclasses.replace(POLICY, rand_flip=False, bev_flip=False)
    quiet = [draw_params(np.random.default_rng(s), no_flip, raw_hw=(RAW_H, RAW_W), train=True) for s in range(10)]
    assert not any(cam.flip for p in quiet for cam in p.cams)
    assert not any(p.bev_flip_x or p.bev_flip_y for p in quiet)


def test_test_view_is_deterministic() -> None:
    a = draw_params(np.random.default_rng(1), POLICY, raw_hw=(RAW_H, RAW_W), n_sweeps=3, train=False)
    b = draw_params(np.random.default_rng(99), POLICY, raw_hw=(RAW_H, RAW_W), n_sweeps=3, train=False)
    assert a == b
    cam = a.cams[0]
    assert cam.resize == pytest.approx(0.9) and not cam.flip and cam.rot_deg == 0.0
    new_w, new_h = int(RAW_W * cam.resize), int(RAW_H * cam.resize)
    assert cam.crop_x == (new_w - 160) // 2 and cam.crop_y == new_h - 64
    assert a.sweeps == (True, True, True)
    assert (a.bev_rot, a.bev_scale, a.bev_flip_x, a.bev_flip_y) == (0.0, 1.0, False, False)
    view = augment(make_sample(n_sweeps=3), a, POLICY)
    assert np.array_equal(view.lidar_aug_matrix, np.eye(4, dtype=np.float32))
    assert len(view.points) == 3 * 400
    fixed = dataclasses.replace(POLICY, test_resize=0.8)
    assert draw_params(np.random.default_rng(0), fixed, raw_hw=(RAW_H, RAW_W), train=False).cams[0].resize == (
        pytest.approx(0.8)
    )


def _blob_centroid(img_chw: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (u, v) of the de-normalised red channel."""
    red = (img_chw[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255.0  # [H, W]
    red = np.where(red > 8.0, red, 0.0)
    vs, us = np.mgrid[0 : red.shape[0], 0 : red.shape[1]]
    return np.array([(red * us).sum(), (red * vs).sum()]) / red.sum()


@pytest.mark.parametrize("cam_index", [0, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projected_point_lands_on_its_blob(cam_index: int, seed: int) -> None:
    sample = make_sample()
    sample.images[:] = 0
    yaw = np.deg2rad(CAM_YAWS_DEG[cam_index])
    point = np.array([12.0 * np.cos(yaw) - 1.5 * np.sin(yaw), 12.0 * np.sin(yaw) + 1.5 * np.cos(yaw), 0.4, 1.0])
    cam = np.linalg.inv(sample.camera2lidar[cam_index]) @ point
    uv = (sample.cam_intrinsics[cam_index] @ cam[:3])[:2] / cam[2]
    vs, us = np.mgrid[0:RAW_H, 0:RAW_W]
    blob = np.exp(-((us - uv[0]) ** 2 + (vs - uv[1]) ** 2) / (2 * 2.0**2))
    sample.images[cam_index, :, :, 0] = np.round(255 * blob).astype(np.uint8)

    params = draw_params(np.random.default_rng(seed), POLICY, raw_hw=(RAW_H, RAW_W), n_sweeps=2, train=True)
    cams = list(params.cams)
    cams[cam_index] = CameraAug(resize=0.9, crop_x=6 + seed, crop_y=30, flip=seed != 1, rot_deg=(-5.0, 3.0, 5.4)[seed])
    params = params.replace(cams=tuple(cams), bev_flip_x=True, bev_rot=0.3)
    view = augment(sample, params, POLICY)

    # project the AUGMENTED 3D point as a model would: undo lidar aug, camera, intrinsics, divide, img aug
    aug_point = view.lidar_aug_matrix.astype(np.float64) @ point
    lidar2image = view.cam_intrinsics[cam_index].astype(np.float64) @ np.linalg.inv(view.camera2lidar[cam_index])
    proj = lidar2image @ np.linalg.inv(view.lidar_aug_matrix.astype(np.float64)) @ aug_point  # [u*d, v*d, d, 1]
    udv = np.array([proj[0] / proj[2], proj[1] / proj[2], proj[2], 1.0])
    expected = (view.img_aug_matrix[cam_index].astype(np.float64) @ udv)[:2]
    found = _blob_centroid(view.images[cam_index])
    assert np.linalg.norm(found - expected) < 0.25, (found, expected)  # measured ~0.03 px


def test_boxes_and_points_move_together() -> None:
    sample = make_sample()
    rng = np.random.default_rng(5)
    inside = []
    for box in sample.gt_boxes:  # points strictly inside each box, in its local frame
        local = rng.uniform(-0.45, 0.45, (50, 3)) * box[3:6]
        world = local @ rot_z(float(box[6])).T + box[:3]
        inside.append(world)
    inside_pts = np.concatenate(inside).astype(np.float32)
    outside_pts = np.array([[0.0, 0.0, 0.0], [20.0, 20.0, 1.0]], dtype=np.float32)
    xyz = np.concatenate([inside_pts, outside_pts])
    pts = np.concatenate([xyz, np.zeros((len(xyz), 2), dtype=np.float32)], 1)
    sample.sweeps = [pts]
    before = points_in_boxes(xyz, sample.gt_boxes)
    assert before[:50, 0].all() and before[50:100, 1].all() and not before[100:].any()

    for seed in range(6):
        params = draw_params(np.random.default_rng(seed), POLICY, raw_hw=(RAW_H, RAW_W), train=True)
        view = augment(sample, params, POLICY)
        after = points_in_boxes(view.points[:, :3], view.gt_boxes)
        assert np.array_equal(after, before), seed
        assert np.allclose(view.gt_boxes[:, 3:6], sample.gt_boxes[:, 3:6] * params.bev_scale, rtol=1e-5)
        # velocity moves with the linear part of lidar_aug_matrix
        lin = view.lidar_aug_matrix[:2, :2].astype(np.float64)
        assert np.allclose(view.gt_boxes[:, 7:9], sample.gt_boxes[:, 7:9] @ lin.T, atol=1e-5)
        # the heading of a box follows its front point
        front = sample.gt_boxes[:, :3] + 0.5 * sample.gt_boxes[:, 3:4] * np.stack(
            [np.cos(sample.gt_boxes[:, 6]), np.sin(sample.gt_boxes[:, 6]), 0 * sample.gt_boxes[:, 6]], 1
        )
        front_aug = front @ view.lidar_aug_matrix[:3, :3].T + view.lidar_aug_matrix[:3, 3]
        heading = front_aug - view.gt_boxes[:, :3]
        assert np.allclose(np.arctan2(heading[:, 1], heading[:, 0]), view.gt_boxes[:, 6], atol=1e-4)


def test_sweep_flags_and_subsampling() -> None:
    sample = make_sample(n_sweeps=3)
    params = draw_params(np.random.default_rng(0), POLICY, raw_hw=(RAW_H, RAW_W), n_sweeps=3, train=False)
    only_key = params.replace(sweeps=(True, False, False))
    view = augment(sample, only_key, POLICY)
    assert np.array_equal(view.points, sample.sweeps[0])
    a = augment(sample, params.replace(seed=3), POLICY, max_points=700)
    b = augment(sample, params.replace(seed=4), POLICY, max_points=700)
    assert len(a.points) == len(b.points) == 700 and not np.array_equal(a.points, b.points)
    assert set(np.unique(a.points[:, 4])) == {0.0, 0.5, 1.0}


class _FakeSource:
    sweeps = 2

    def __len__(self) -> int:
        return 3

    def load(self, index: int) -> Sample:
        return make_sample(index)

    def image_hw(self, index: int) -> tuple[int, int]:
        return (RAW_H, RAW_W)


def test_view_builder_replays_from_a_vector() -> None:
    builder = ViewBuilder(_FakeSource(), POLICY, train=True)
    params = builder.draw(1, np.random.default_rng(3))
    assert builder.aug_dim == len(params.to_vector())
    a = builder.build(1, params)
    b = builder.build(1, params.to_vector())
    assert np.array_equal(a.images, b.images) and np.array_equal(a.gt_boxes, b.gt_boxes)
    test_view = builder.test_params(1)
    assert test_view == draw_params(np.random.default_rng(5), POLICY, raw_hw=(RAW_H, RAW_W), n_sweeps=2, train=False)


def test_image_conventions_flip_mirrors_and_rotation_is_counter_clockwise() -> None:
    """Pin the conventions (BEVFusion/PIL): flip = exact left-right mirror, positive rot_deg = CCW on screen."""
    size = 48
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    sample = make_sample()
    sample.images = np.stack([raw] * 6)
    policy = dataclasses.replace(POLICY, final_height=size, final_width=size)
    base = draw_params(np.random.default_rng(0), policy, raw_hw=(size, size), train=False)

    def only(cam: CameraAug) -> np.ndarray:
        view = augment(sample, base.replace(cams=(cam,) * 6), policy)
        return np.round((view.images[0].transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN) * 255.0)

    identity = CameraAug(resize=1.0, crop_x=0, crop_y=0, flip=False, rot_deg=0.0)
    assert np.array_equal(only(identity), raw)
    assert np.array_equal(only(dataclasses.replace(identity, flip=True)), raw[:, ::-1])
    rotated = only(dataclasses.replace(identity, rot_deg=90.0))
    assert np.abs(rotated - np.rot90(raw, k=1)).max() <= 1.0  # np.rot90 k=1 turns counter-clockwise
