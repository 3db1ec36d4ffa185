"""The synthetic nuScenes world: devkit compatibility, geometry consistency, determinism, input checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from nuscenes import NuScenes  # noqa: E402
from nuscenes.eval.common.config import config_factory  # noqa: E402
from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt  # noqa: E402
from nuscenes.eval.detection.data_classes import DetectionBox  # noqa: E402
from nuscenes.eval.detection.utils import (  # noqa: E402
    category_to_detection_name,
    detection_name_to_rel_attributes,
)
from nuscenes.utils.data_classes import LidarPointCloud  # noqa: E402
from nuscenes.utils.geometry_utils import BoxVisibility, points_in_box, view_points  # noqa: E402
from nuscenes.utils.splits import create_splits_scenes  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402

from simdistill.config import CAMERA_NAMES, CLASS_NAMES, WorldConfig  # noqa: E402
from simdistill.errors import DataError  # noqa: E402
from simdistill.pipeline.synthetic import WorldSummary, make_demo_data  # noqa: E402
from simdistill.pipeline.synthetic.classes import CLASS_SPECS, body_lwh, instance_color  # noqa: E402
from simdistill.pipeline.synthetic.raycast import ray_box_distance  # noqa: E402
from simdistill.pipeline.synthetic.rig import build_rig  # noqa: E402
from simdistill.pipeline.synthetic.sensors import AMBIENT, SUN, Boxes  # noqa: E402
from simdistill.pipeline.synthetic.world import Road, plan_classes  # noqa: E402

# tests/conftest.py TINY_WORLD: 4 scenes x 3 key frames, 12 objects per scene
TINY_SCENES, TINY_SAMPLES, TINY_OBJECTS = 4, 3, 12
SWEEPS_BETWEEN = 9  # LIDAR_TOP at 20 Hz, key frames at 2 Hz
MICRO = dict(
    scenes=2,
    samples_per_scene=2,
    image_width=64,
    image_height=36,
    objects_per_scene=4,
    lidar_beams=8,
    lidar_azimuth_steps=128,
)


@pytest.fixture(scope="module")
def nusc(tiny_world: Path) -> NuScenes:
    return NuScenes(version="v1.0-mini", dataroot=str(tiny_world), verbose=False)


def _lidar_points_global(nusc: NuScenes, sd_token: str) -> tuple[np.ndarray, np.ndarray]:
    """(points [3, P] in the LiDAR frame, the same points [3, P] in the global frame)."""
    sd = nusc.get("sample_data", sd_token)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    pts = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_token)).points[:3]
    ego = Quaternion(cs["rotation"]).rotation_matrix @ pts + np.array(cs["translation"])[:, None]
    return pts, Quaternion(pose["rotation"]).rotation_matrix @ ego + np.array(pose["translation"])[:, None]


def test_mini_world_loads_with_expected_tables_and_links(nusc: NuScenes) -> None:
    n_samples = TINY_SCENES * TINY_SAMPLES
    n_sweeps = TINY_SCENES * (TINY_SAMPLES - 1) * SWEEPS_BETWEEN
    assert len(nusc.scene) == len(nusc.log) == TINY_SCENES
    assert len(nusc.sample) == n_samples
    assert len(nusc.sample_data) == len(nusc.ego_pose) == n_samples * 7 + n_sweeps
    assert len({sd["ego_pose_token"] for sd in nusc.sample_data}) == len(nusc.ego_pose)  # one pose per sample_data
    assert len(nusc.calibrated_sensor) == TINY_SCENES * 7
    assert len(nusc.instance) == TINY_SCENES * TINY_OBJECTS
    assert len(nusc.sample_annotation) == n_samples * TINY_OBJECTS
    assert {c["name"] for c in nusc.category} == {spec.category for spec in CLASS_SPECS.values()}
    assert [v["token"] for v in nusc.visibility] == ["1", "2", "3", "4"]
    assert {s["channel"] for s in nusc.sensor} == {"LIDAR_TOP", *CAMERA_NAMES}
    assert len(nusc.map) == 1 and set(nusc.map[0]["log_tokens"]) == {log["token"] for log in nusc.log}

    splits = create_splits_scenes()
    names = [scene["name"] for scene in nusc.scene]
    assert sum(n in splits["mini_val"] for n in names) == 1
    assert sum(n in splits["mini_train"] for n in names) == TINY_SCENES - 1

    for scene in nusc.scene:
        tokens, token = [], scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
        assert len(tokens) == scene["nbr_samples"] == TINY_SAMPLES and tokens[-1] == scene["last_sample_token"]
        last = nusc.get("sample", tokens[-1])
        assert set(last["data"]) == {"LIDAR_TOP", *CAMERA_NAMES} and len(last["anns"]) == TINY_OBJECTS
        for channel in last["data"]:  # one prev chain per channel and scene, back to the first key frame
            chain = [nusc.get("sample_data", last["data"][channel])]
            while chain[-1]["prev"]:
                chain.append(nusc.get("sample_data", chain[-1]["prev"]))
                assert chain[-1]["channel"] == channel and chain[-1]["next"] == chain[-2]["token"]
            keys = [sd for sd in chain if sd["is_key_frame"]]
            assert [sd["sample_token"] for sd in keys] == tokens[::-1]
            assert all(sd["filename"].startswith("samples/") for sd in keys)
            stamps = np.array([sd["timestamp"] for sd in chain[::-1]])
            if channel != "LIDAR_TOP":  # cameras: key frames only (2 Hz)
                assert len(chain) == TINY_SAMPLES
                continue
            # LIDAR_TOP at 20 Hz: nine sweeps between key frames, each owned by the key frame that follows it
            assert len(chain) == TINY_SAMPLES + (TINY_SAMPLES - 1) * SWEEPS_BETWEEN
            assert np.all(np.abs(np.diff(stamps) - 50_000) <= 1)
            for i, sd in enumerate(chain):
                if not sd["is_key_frame"]:
                    assert sd["filename"].startswith("sweeps/LIDAR_TOP/") and sd["fileformat"] == "pcd"
                    following = next(k for k in chain[i::-1] if k["is_key_frame"])
                    assert sd["sample_token"] == following["sample_token"]
                    assert (Path(nusc.dataroot) / sd["filename"]).stat().st_size > 0
        pc, times = LidarPointCloud.from_file_multisweep(nusc, last, "LIDAR_TOP", "LIDAR_TOP", nsweeps=3)
        assert np.allclose(np.unique(times), [0.0, 0.05, 0.1]) and pc.nbr_points() > 0

    for inst in nusc.instance:
        ann = nusc.get("sample_annotation", inst["first_annotation_token"])
        count = 1
        while ann["next"]:
            ann = nusc.get("sample_annotation", ann["next"])
            assert ann["instance_token"] == inst["token"]
            count += 1
        assert count == inst["nbr_annotations"] and ann["token"] == inst["last_annotation_token"]


def test_annotations_have_valid_attributes_and_true_motion(nusc: NuScenes) -> None:
    attribute = {a["token"]: a["name"] for a in nusc.attribute}
    for ann in nusc.sample_annotation:
        name = category_to_detection_name(ann["category_name"])
        assert name in CLASS_NAMES
        attrs = [attribute[t] for t in ann["attribute_tokens"]]
        relevant = detection_name_to_rel_attributes(name)
        assert (len(attrs) == 1 and attrs[0] in relevant) if relevant else attrs == []
        assert ann["num_radar_pts"] == 0 and ann["visibility_token"] in {"1", "2", "3", "4"}
        assert abs(ann["translation"][2] - ann["size"][2] / 2) < 1e-9  # resting on the ground plane
        speed = np.linalg.norm(nusc.box_velocity(ann["token"])[:2])
        if attrs and attrs[0] in ("vehicle.moving", "pedestrian.moving"):
            lo, hi = CLASS_SPECS[name].speed
            assert 0.9 * lo < speed < 1.1 * hi
        elif attrs and attrs[0] in ("vehicle.parked", "vehicle.stopped", "pedestrian.standing"):
            assert speed < 1e-6


def test_load_gt_mini_val_returns_boxes_of_several_classes(nusc: NuScenes) -> None:
    gt = load_gt(nusc, "mini_val", DetectionBox)
    boxes = gt.all
    assert len(gt.sample_tokens) == TINY_SAMPLES and len(boxes) == TINY_SAMPLES * TINY_OBJECTS
    assert len({b.detection_name for b in boxes}) >= 3
    moving = [b for b in boxes if b.attribute_name in ("vehicle.moving", "pedestrian.moving", "cycle.with_rider")]
    assert moving and all(np.isfinite(b.velocity).all() for b in moving)
    assert any(np.linalg.norm(b.velocity) > 0.5 for b in moving)
    gt = add_center_dist(nusc, gt)
    kept = filter_eval_boxes(nusc, gt, config_factory("detection_cvpr_2019").class_range)
    assert 0 < len(kept.all) <= len(boxes)
    assert all(b.num_pts > 0 for b in kept.all)


def test_num_lidar_pts_is_the_devkit_points_in_box_count(nusc: NuScenes) -> None:
    """Every annotation's num_lidar_pts equals the devkit's own count, and the boxes enclose the object points."""
    total, above_ground, escaped = 0, 0, 0
    for sample in nusc.sample:
        sd_token = sample["data"]["LIDAR_TOP"]
        pts, pts_global = _lidar_points_global(nusc, sd_token)
        _, boxes, _ = nusc.get_sample_data(sd_token)  # boxes in the LiDAR frame
        in_any = np.zeros(pts.shape[1], dtype=bool)
        for box in boxes:
            inside = points_in_box(box, pts)
            assert nusc.get("sample_annotation", box.token)["num_lidar_pts"] == inside.sum()
            in_any |= inside
            total += int(inside.sum())
        body = pts_global[2] > 0.05  # the ground is z = 0 (range noise is 1.5 cm along the ray)
        assert np.abs(pts_global[2][~in_any & ~body]).max() < 0.05
        above_ground += int(body.sum())
        escaped += int((body & ~in_any).sum())
    assert total > 0 and above_ground > 0
    assert escaped <= 0.001 * above_ground, (escaped, above_ground)  # object points lie inside their boxes


def _painted_colour(nusc: NuScenes, cam_token: str, ann: dict, uv: tuple[int, int]) -> np.ndarray | None:
    """RGB [3] the world paints (and shades) where the ray through pixel `uv` meets the body, None on a miss."""
    sd = nusc.get("sample_data", cam_token)
    cs, pose = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]), nusc.get("ego_pose", sd["ego_pose_token"])
    rot = Quaternion(pose["rotation"]).rotation_matrix @ Quaternion(cs["rotation"]).rotation_matrix
    origin = Quaternion(pose["rotation"]).rotation_matrix @ np.array(cs["translation"]) + np.array(pose["translation"])
    ray = rot @ np.linalg.solve(np.array(cs["camera_intrinsic"]), [uv[0], uv[1], 1.0])  # [3] global
    name = category_to_detection_name(ann["category_name"])
    width, length, height = ann["size"]
    lwh = body_lwh(name, np.array([length, width, height]))
    center = np.array([*ann["translation"][:2], lwh[2] / 2])  # the body rests on the ground
    yaw = Quaternion(ann["rotation"]).yaw_pitch_roll[0]
    t = ray_box_distance(origin, ray[None], center=center, yaw=yaw, half=lwh / 2)
    if not np.isfinite(t[0]):
        return None
    base = instance_color(name, ann["instance_token"])
    body = Boxes(
        centers=center[None], yaws=np.array([yaw]), lwh=lwh[None], colors=base[None], reflectivity=np.zeros(1),
        labels=np.array([CLASS_NAMES.index(name)]),
    )  # fmt: skip
    color, _, normal = body.surface(np.zeros(1, dtype=int), origin + t[:, None] * ray)
    return color[0] * (AMBIENT + (1.0 - AMBIENT) * max(0.0, float(normal[0] @ SUN)))  # the renderer's shading


def test_box_centre_pixel_shows_the_painted_body(nusc: NuScenes) -> None:
    """Where the devkit projects a box centre, the image shows the colour the world paints on that body there."""
    checked, matched = 0, 0
    for sample in nusc.sample:
        for channel in CAMERA_NAMES:
            path, boxes, intrinsic = nusc.get_sample_data(sample["data"][channel], box_vis_level=BoxVisibility.ALL)
            image = plt.imread(path).astype(np.float64)  # [H, W, 3] RGB
            for box in boxes:
                ann = nusc.get("sample_annotation", box.token)
                width_px = np.ptp(view_points(box.corners(), intrinsic, normalize=True)[0])
                if ann["visibility_token"] != "4" or width_px < 8.0:  # JPEG blurs thinner bodies into the background
                    continue
                u, v = np.rint(view_points(box.center[:, None], intrinsic, normalize=True)[:2, 0]).astype(int)
                expected = _painted_colour(nusc, sample["data"][channel], ann, (u, v))
                checked += 1
                matched += int(expected is not None and np.abs(image[v, u] - expected).max() < 32.0)
    assert checked >= 10
    assert matched >= 0.9 * checked, (matched, checked)


def test_trainval_world_uses_devkit_train_val_names(tmp_path: Path) -> None:
    world = WorldConfig(seed=5, version="v1.0-trainval", **{**MICRO, "scenes": 3, "val_scenes": 2, "lidar_hz": 2})
    summary = make_demo_data(tmp_path / "tv", world, progress=True)
    assert isinstance(summary, WorldSummary) and set(summary.scenes) == {"train", "val"}
    splits = create_splits_scenes()
    assert len(summary.scenes["val"]) == 2 and set(summary.scenes["val"]) <= set(splits["val"])
    assert len(summary.scenes["train"]) == 1 and set(summary.scenes["train"]) <= set(splits["train"])
    assert summary.n_samples == 6 and summary.n_annotations == 6 * MICRO["objects_per_scene"]
    assert sum(summary.class_counts.values()) == summary.n_annotations and summary.mean_lidar_points > 0
    assert "v1.0-trainval" in summary.to_text() and summary.n_sweeps == 0
    nusc = NuScenes(version="v1.0-trainval", dataroot=str(tmp_path / "tv"), verbose=False)
    assert sorted(s["name"] for s in nusc.scene) == sorted(summary.scenes["train"] + summary.scenes["val"])
    assert len(load_gt(nusc, "val", DetectionBox).sample_tokens) == 4
    assert len(nusc.sample_data) == 6 * 7 and all(sd["is_key_frame"] for sd in nusc.sample_data)  # lidar_hz=2


def _digest(root: Path, pattern: str) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.glob(pattern))
        if p.is_file()
    }


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    world = WorldConfig(seed=11, **MICRO)
    make_demo_data(tmp_path / "a", world, progress=False)
    make_demo_data(tmp_path / "b", world, progress=False)
    make_demo_data(tmp_path / "c", WorldConfig(seed=12, **MICRO), progress=False)
    patterns = ("v1.0-mini/*.json", "samples/*/*.*", "sweeps/LIDAR_TOP/*.bin", "maps/*.png")
    for pattern in patterns:
        a, b = _digest(tmp_path / "a", pattern), _digest(tmp_path / "b", pattern)
        assert a and a == b, pattern
    assert _digest(tmp_path / "a", "v1.0-mini/sample_annotation.json") != _digest(
        tmp_path / "c", "v1.0-mini/sample_annotation.json"
    )
    bins_a = [p.read_bytes() for p in sorted((tmp_path / "a/samples/LIDAR_TOP").iterdir())]
    bins_c = [p.read_bytes() for p in sorted((tmp_path / "c/samples/LIDAR_TOP").iterdir())]
    assert bins_a != bins_c
    # Regenerating over a previous world replaces it (and stays identical).
    make_demo_data(tmp_path / "a", world, progress=False)
    assert _digest(tmp_path / "a", "**/*.*") == _digest(tmp_path / "b", "**/*.*")


def test_default_world_plans_every_class_with_cars_most_common() -> None:
    classes = plan_classes(np.random.default_rng(0), WorldConfig())
    counts = {c: sum(row.count(c) for row in classes) for c in CLASS_NAMES}
    assert all(n > 0 for n in counts.values())
    assert max(counts, key=counts.get) == "car"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (dict(scenes=11), "world.scenes <= 10"),
        (dict(scenes=1), "world.scenes must be >= 2"),
        (dict(samples_per_scene=1), "world.samples_per_scene must be >= 2"),
        (dict(version="v2.0"), "use v1.0-mini or v1.0-trainval"),
        (dict(objects_per_scene=200, max_range=10.0), "lower world.objects_per_scene"),
        (dict(lidar_hz=5), "world.lidar_hz must be an even number >= 2"),
        (dict(val_scenes=2), "world.val_scenes must be >= 0 and below world.scenes=2"),
        (dict(scenes=6, val_scenes=3), "v1.0-mini has 8 train and 2 val scene names"),
    ],
)
def test_bad_world_raises_data_error(tmp_path: Path, changes: dict, needle: str) -> None:
    world = WorldConfig(**{**MICRO, **changes})
    with pytest.raises(DataError, match=needle.replace(".", r"\.")):
        make_demo_data(tmp_path / "w", world, progress=False)


def test_bad_out_dir_raises_data_error(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="is a file; pass a directory"):
        make_demo_data(a_file, WorldConfig(**MICRO), progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty .* pass an empty or new directory"):
        make_demo_data(other, WorldConfig(**MICRO), progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_devkit_render_functions_run(nusc: NuScenes, tmp_path: Path) -> None:
    sample = nusc.sample[1]
    outputs = [tmp_path / "cam.png", tmp_path / "lidar.png", tmp_path / "sample.png", tmp_path / "sweep.png"]
    nusc.render_sample_data(sample["data"]["CAM_FRONT"], out_path=str(outputs[0]), verbose=False)
    nusc.render_sample_data(sample["data"]["LIDAR_TOP"], out_path=str(outputs[1]), verbose=False)
    sweep = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["prev"]  # boxes interpolated to the sweep's time
    nusc.render_sample_data(sweep, out_path=str(outputs[3]), verbose=False)
    nusc.render_sample(sample["token"], out_path=str(outputs[2]), verbose=False)
    plt.close("all")
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in outputs)


def test_cameras_cover_360_degrees_and_lidar_frame_is_yawed() -> None:
    rig = build_rig(image_width=400, image_height=225, lidar_beams=32, lidar_azimuth_steps=1084)
    for azimuth in np.linspace(-np.pi, np.pi, 360, endpoint=False):
        target = np.array([20.0 * np.cos(azimuth), 20.0 * np.sin(azimuth), 1.0, 1.0])  # ego frame
        seen = 0
        for cam in rig.cameras:
            p = (np.linalg.inv(cam.camera2ego) @ target)[:3]
            u, v = (cam.intrinsic @ p)[:2] / p[2]
            seen += int(p[2] > 0 and 0 <= u < cam.width and 0 <= v < cam.height)
        assert seen >= 1, np.rad2deg(azimuth)
    x_axis_in_ego = rig.lidar.lidar2ego[:3, 0]
    assert np.allclose(x_axis_in_ego, [0.0, -1.0, 0.0], atol=0.03)  # LiDAR x points to the ego's right


def test_road_frame_inverts_road_point() -> None:
    road = Road(origin=np.array([120.0, 80.0]), heading=2.0, curvature=-0.0025)
    rng = np.random.default_rng(0)
    s, d = rng.uniform(-60, 120, 50), rng.uniform(-40, 40, 50)
    xy = road.point(s, d)
    s2, d2 = road.frame(xy[:, 0], xy[:, 1])
    assert np.allclose(s, s2, atol=1e-6) and np.allclose(d, d2, atol=1e-6)
