"""The synthetic world carries what a detector learns heading and velocity from, as the devkit sees it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_WORLD
from nuscenes import NuScenes
from nuscenes.eval.common.utils import quaternion_yaw
from pyquaternion import Quaternion

from simdistill.config import CLASS_NAMES, WorldConfig
from simdistill.pipeline.geometry import wrap_angle
from simdistill.pipeline.synthetic.classes import CLASS_SPECS, body_lwh
from simdistill.pipeline.synthetic.generate import plan_world
from simdistill.pipeline.synthetic.rig import build_rig, ego_pose_matrix
from simdistill.pipeline.synthetic.sensors import Boxes, cast_lidar, render_camera
from simdistill.pipeline.synthetic.tables import Tables
from simdistill.pipeline.synthetic.world import Road

SYMMETRIC = ("barrier", "traffic_cone")  # the devkit ignores a cone's heading and scores a barrier's modulo pi


def test_gt_velocity_and_heading_match_the_simulated_tracks(tiny_world: Path) -> None:
    """`box_velocity` (the devkit's finite difference over key frames) equals the tracks' true velocity."""
    nusc = NuScenes(version="v1.0-mini", dataroot=str(tiny_world), verbose=False)
    world = WorldConfig(**TINY_WORLD)
    plan, tables = plan_world(world), Tables(world.seed)
    moving = 0
    for scene, layout in enumerate(plan.layouts):
        for k, obj in enumerate(layout.objects):
            token = nusc.get("instance", tables.token("instance", scene, k))["first_annotation_token"]
            truth = obj.track.velocity(layout.road, layout.times)  # [S, 2]
            _, yaws = obj.track.pose(layout.road, layout.times)
            for index in range(len(layout.times)):
                ann = nusc.get("sample_annotation", token)
                velocity = nusc.box_velocity(token)[:2]
                interior = 0 < index < len(layout.times) - 1  # central differences; one-sided at the scene's ends
                assert np.allclose(velocity, truth[index], atol=0.01 if interior else 0.1), (obj.class_name, index)
                yaw = quaternion_yaw(Quaternion(ann["rotation"]))
                assert abs(wrap_angle(yaw - yaws[index])) < 1e-9
                speed = np.linalg.norm(truth[index])
                if speed > 1.0 and obj.class_name != "pedestrian":  # vehicles and cycles drive where they point
                    moving += 1
                    assert np.dot(truth[index], [np.cos(yaw), np.sin(yaw)]) > 0.99 * speed
                token = ann["next"]
    assert moving > 0


def _single_object(class_name: str, yaw: float) -> Boxes:
    """One body of `class_name` 12 m ahead of an ego at the origin heading +x, turned to `yaw`."""
    lwh = body_lwh(class_name, np.array(CLASS_SPECS[class_name].wlh)[[1, 0, 2]])
    return Boxes(
        centers=np.array([[12.0, 0.0, lwh[2] / 2]]),
        yaws=np.array([yaw]),
        lwh=lwh[None],
        colors=np.array([CLASS_SPECS[class_name].color], dtype=np.float64),
        reflectivity=np.array([CLASS_SPECS[class_name].reflectivity]),
        labels=np.array([CLASS_NAMES.index(class_name)]),
    )


@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_front_and_back_look_different_where_nuscenes_scores_heading(class_name: str) -> None:
    """The front camera sees an object's front (yaw pi) and then its back (yaw 0): the two differ in colour and
    in LiDAR intensity for classes with a heading, and not at all for barriers and cones."""
    rig = build_rig(image_width=400, image_height=225, lidar_beams=32, lidar_azimuth_steps=1084)
    camera = rig.cameras[0]
    assert camera.name == "CAM_FRONT"
    road = Road(origin=np.array([0.0, 0.0]), heading=0.0, curvature=1e-4)
    ego2global = ego_pose_matrix(np.zeros(2), 0.0)
    images, intensities = [], []
    for yaw in (np.pi, 0.0):
        boxes = _single_object(class_name, yaw)
        rendered = render_camera(camera, ego2global=ego2global, road=road, boxes=boxes, rng=np.random.default_rng(0))
        assert rendered.visible[0] > 50
        images.append(rendered.image.astype(np.float64))
        sweep = cast_lidar(rig.lidar, ego2global=ego2global, road=road, boxes=boxes, rng=np.random.default_rng(0))
        intensities.append(sweep.points[sweep.hit_ids == 0, 3])
    changed = np.abs(images[0] - images[1]).max(axis=-1) > 40  # [H, W] pixels that changed clearly
    intensity_gap = abs(float(np.mean(intensities[0]) - np.mean(intensities[1])))
    if class_name in SYMMETRIC:
        assert changed.sum() <= 2 and intensity_gap < 1.0
    else:
        assert changed.sum() >= 25, changed.sum()
        if class_name != "pedestrian":  # lamps and reflectors; skin and hair reflect alike
            assert intensity_gap > 5.0, intensity_gap


def test_feature_heights_scale_with_the_network_input(tiny_world: Path) -> None:
    from simdistill.config import AugmentConfig
    from simdistill.pipeline.synthetic.stats import feature_heights

    full = AugmentConfig(final_height=112, final_width=200, resize_lim=(1.0, 1.0))  # the raw image, uncropped
    half = AugmentConfig(final_height=56, final_width=100, resize_lim=(0.5, 0.5))
    a = feature_heights(tiny_world, "v1.0-mini", "mini_val", full, feature_stride=8)
    b = feature_heights(tiny_world, "v1.0-mini", "mini_val", half, feature_stride=4)
    assert set(a) == set(CLASS_NAMES) and sum(len(h) for h in a.values()) > 20
    for name in CLASS_NAMES:
        assert len(a[name]) == len(b[name]) and np.allclose(a[name], b[name])  # half the pixels, half the stride
        assert (a[name] > 0).all()
