"""NuScenesSource on the tiny synthetic world: validation messages, Sample contents, frames, sweeps."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from nuscenes.utils.data_classes import LidarPointCloud
from pyquaternion import Quaternion

from simdistill.config import CAMERA_NAMES, CLASS_NAMES, AugmentConfig, DataConfig
from simdistill.errors import DataError
from simdistill.pipeline.augment import IMAGENET_MEAN, IMAGENET_STD, ViewBuilder
from simdistill.pipeline.dataset import NuScenesSource
from simdistill.pipeline.geometry import wrap_angle
from simdistill.pipeline.nuscenes_files import load_nuscenes

VERSION = "v1.0-mini"


@pytest.fixture(scope="module")
def val_source(tiny_world: Path) -> NuScenesSource:
    return NuScenesSource(tiny_world, VERSION, "mini_val")


def test_bad_inputs_raise_data_errors(tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"dataroot .*nowhere does not exist; run `simdistill make-demo-data"):
        NuScenesSource(tmp_path / "nowhere", VERSION, "mini_val")
    with pytest.raises(DataError, match=r"version folder 'v1.0-trainval' not found .*versions present: v1.0-mini"):
        NuScenesSource(tiny_world, "v1.0-trainval", "val")
    valid = r"valid splits for v1.0-mini: mini_train, mini_val"
    with pytest.raises(DataError, match=rf"unknown split 'val' for v1.0-mini; {valid}"):
        NuScenesSource(tiny_world, VERSION, "val")
    with pytest.raises(DataError, match="sweeps must be >= 1"):
        NuScenesSource(tiny_world, VERSION, "mini_val", sweeps=0)

    import nuscenes.utils.splits as splits

    real = splits.create_splits_scenes()
    monkeypatch.setattr(splits, "create_splits_scenes", lambda verbose=False: {**real, "mini_val": ["scene-9999"]})
    with pytest.raises(DataError, match=r"split 'mini_val' has no scenes in dataroot .*scenes present: scene-"):
        NuScenesSource(tiny_world, VERSION, "mini_val")


def test_missing_data_files_name_the_file(tiny_world: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tiny_world, root)
    source = NuScenesSource(root, VERSION, "mini_val")
    nusc = source.nusc
    sample = nusc.get("sample", source.tokens[0])
    image = root / nusc.get("sample_data", sample["data"]["CAM_BACK"])["filename"]
    image.unlink()
    with pytest.raises(DataError, match=rf"file {re.escape(str(image))} is missing; the dataroot .* is incomplete"):
        source.load(0)
    sample = nusc.get("sample", source.tokens[1])
    cloud = root / nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["filename"]
    cloud.unlink()
    with pytest.raises(DataError, match=rf"file {re.escape(str(cloud))} is missing; the dataroot .* is incomplete"):
        source.load(1)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_world, broken)
    (broken / VERSION / "sample.json").unlink()
    with pytest.raises(DataError, match=r"could not load the nuScenes v1.0-mini tables .* incomplete or corrupt"):
        load_nuscenes(broken, VERSION)


def test_sample_shapes_and_dtypes(val_source: NuScenesSource, tiny_world: Path) -> None:
    assert len(val_source) == len(val_source.tokens) > 0
    s = val_source.load(0)
    n = len(CAMERA_NAMES)
    h, w = val_source.image_hw(0)
    assert (h, w) == (112, 200)
    assert s.images.shape == (n, h, w, 3) and s.images.dtype == np.uint8
    assert s.cam_intrinsics.shape == (n, 3, 3) and s.camera2lidar.shape == (n, 4, 4) == s.camera2ego.shape
    assert s.lidar2ego.shape == (4, 4) == s.ego2global.shape
    assert len(s.sweeps) == 1 and s.sweeps[0].dtype == np.float32 and s.sweeps[0].shape[1] == 5
    assert (s.sweeps[0][:, 4] == 0).all()
    assert s.gt_boxes.dtype == np.float32 and s.gt_boxes.shape == (len(s.gt_labels), 9) and len(s.gt_labels) > 0
    assert s.gt_labels.dtype == np.int64 and s.gt_labels.max() < len(CLASS_NAMES)
    assert np.isfinite(s.gt_boxes).all()
    meta = val_source.sample_meta(0)
    assert meta.token == s.token and np.allclose(meta.ego2global, s.ego2global)
    # camera2lidar is a rigid transform; camera2ego composed with lidar2ego agrees up to ego motion
    for mat in s.camera2lidar:
        assert np.allclose(mat[:3, :3] @ mat[:3, :3].T, np.eye(3), atol=1e-9)
    # tokens are ordered by scene, then time
    nusc = val_source.nusc
    stamps = [(nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"], nusc.get("sample", t)["timestamp"])
              for t in val_source.tokens]  # fmt: skip
    assert stamps == sorted(stamps)
    # the source survives pickling (Dask workers) and reloads the devkit there
    clone = pickle.loads(pickle.dumps(val_source))
    assert clone.tokens == val_source.tokens and np.array_equal(clone.load(0).gt_boxes, s.gt_boxes)


def test_gt_boxes_agree_with_devkit(val_source: NuScenesSource) -> None:
    from nuscenes.eval.common.utils import quaternion_yaw
    from nuscenes.eval.detection.utils import category_to_detection_name

    nusc = val_source.nusc
    for i in range(len(val_source)):
        s = val_source.load(i)
        lidar_token = nusc.get("sample", s.token)["data"]["LIDAR_TOP"]
        _, boxes, _ = nusc.get_sample_data(lidar_token)
        kept = []
        for box in boxes:
            ann = nusc.get("sample_annotation", box.token)
            if category_to_detection_name(ann["category_name"]) and ann["num_lidar_pts"] + ann["num_radar_pts"] > 0:
                kept.append(box)
        assert len(kept) == len(s.gt_boxes)
        for box, mine, label in zip(kept, s.gt_boxes, s.gt_labels):
            assert np.allclose(mine[:3], box.center, atol=1e-4)
            assert np.allclose(mine[3:6], box.wlh[[1, 0, 2]], atol=1e-5)
            # heading = the box's x axis projected on the ground, the devkit's eval definition (quaternion_yaw)
            assert abs(wrap_angle(mine[6] - quaternion_yaw(box.orientation))) < 1e-5
            ann = nusc.get("sample_annotation", box.token)
            assert CLASS_NAMES[label] == category_to_detection_name(ann["category_name"])
            # global (vx, vy, 0) rotated into the LiDAR frame, as BEVFusion's create_data does
            velocity = np.nan_to_num(nusc.box_velocity(box.token))
            velocity[2] = 0.0
            sd = nusc.get("sample_data", lidar_token)
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            for rec in (pose, nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])):
                velocity = Quaternion(rec["rotation"]).inverse.rotate(velocity)
            assert np.allclose(mine[7:9], velocity[:2], atol=1e-4)
    everything = NuScenesSource(val_source.dataroot, VERSION, "mini_val", drop_empty_boxes=False)
    assert sum(len(everything.load(i).gt_boxes) for i in range(len(everything))) >= sum(
        len(val_source.load(i).gt_boxes) for i in range(len(val_source))
    )


def test_multi_sweep_points_follow_the_devkit(tiny_world: Path) -> None:
    source = NuScenesSource(tiny_world, VERSION, "mini_val", sweeps=3)
    nusc = source.nusc
    first = source.load(0)
    assert len(first.sweeps) == 1  # the first key frame of a scene has no history
    index = 2  # third key frame of the first scene: two previous sweeps exist
    sample = source.load(index)
    assert len(sample.sweeps) == 3
    lags = [float(np.unique(sw[:, 4])[0]) for sw in sample.sweeps]
    assert lags[0] == 0.0 and 0 < lags[1] < lags[2]
    assert all(len(np.unique(sw[:, 4])) == 1 for sw in sample.sweeps)

    # the devkit's own multi-sweep loader, reference frame = this key frame's LiDAR
    rec = nusc.get("sample", source.tokens[index])
    ref, times = LidarPointCloud.from_file_multisweep(nusc, rec, "LIDAR_TOP", "LIDAR_TOP", nsweeps=2, min_distance=1.0)
    prev = ref.points[:3, times[0] > 0].T
    assert np.allclose(sample.sweeps[1][:, :3], prev, atol=1e-3)
    assert np.allclose(times[0][times[0] > 0], lags[1], atol=1e-6)

    builder = ViewBuilder(source, AugmentConfig(final_height=64, final_width=160, resize_lim=(0.8, 0.9)), train=False)
    view = builder.build(index, builder.draw(index, np.random.default_rng(0)))
    assert len(view.points) == sum(len(sw) for sw in sample.sweeps)


def test_sweep_chain_walks_the_20hz_sweeps_back_across_key_frames(tiny_world: Path) -> None:
    source = NuScenesSource(tiny_world, VERSION, "mini_val", sweeps=12)
    nusc = source.nusc
    keys = [nusc.get("sample_data", nusc.get("sample", t)["data"]["LIDAR_TOP"]) for t in source.tokens[:3]]
    assert source.sweep_chain(keys[0]) == [keys[0]]  # a scene's first key frame has no history
    chain = source.sweep_chain(keys[2])
    assert len(chain) == 12 and chain[0] is keys[2] and chain[10] == keys[1]
    assert [sd["is_key_frame"] for sd in chain] == [True] + [False] * 9 + [True, False]
    assert all(sd["filename"].startswith("sweeps/LIDAR_TOP/") for sd in chain if not sd["is_key_frame"])
    assert np.allclose(np.diff([sd["timestamp"] for sd in chain]), -50_000, atol=1)  # 20 Hz
    assert NuScenesSource(tiny_world, VERSION, "mini_val", sweeps=3).sweep_chain(keys[2]) == chain[:3]


def test_sweep_points_move_with_the_objects(tiny_world: Path) -> None:
    """The two sweeps before a key frame hold the objects where they were then: every point above the ground
    lies in a box the devkit interpolates to that sweep's time, and the key frame's boxes miss some of them."""
    from nuscenes.utils.geometry_utils import points_in_box

    source = NuScenesSource(tiny_world, VERSION, "mini_val", sweeps=3)
    nusc = source.nusc
    index = 2  # third key frame of the val scene
    sample = source.load(index)
    key_sd = nusc.get("sample_data", nusc.get("sample", sample.token)["data"]["LIDAR_TOP"])
    chain = source.sweep_chain(key_sd)
    assert len(sample.sweeps) == len(chain) == 3 and not any(sd["is_key_frame"] for sd in chain[1:])
    lidar2global = sample.ego2global @ sample.lidar2ego
    key_boxes = nusc.get_boxes(key_sd["token"])  # global frame, at the key frame's time
    missed_by_key_boxes = 0
    for sd, points in zip(chain[1:], sample.sweeps[1:]):
        lag = (key_sd["timestamp"] - sd["timestamp"]) * 1e-6
        assert np.all(points[:, 4] == lag) and lag == pytest.approx(0.05 * chain.index(sd), abs=1e-6)
        xyz = (points[:, :3].astype(np.float64) @ lidar2global[:3, :3].T + lidar2global[:3, 3]).T  # [3, P] global
        above = xyz[:, xyz[2] > 0.05]
        in_box = np.zeros(above.shape[1], dtype=bool)
        for box in nusc.get_boxes(sd["token"]):  # interpolated between the key frames around the sweep
            in_box |= points_in_box(box, above)
        assert above.shape[1] > 100 and (~in_box).sum() <= 0.002 * above.shape[1]
        in_key_box = np.zeros(above.shape[1], dtype=bool)
        for box in key_boxes:
            in_key_box |= points_in_box(box, above)
        missed_by_key_boxes += int((in_box & ~in_key_box).sum())
    assert missed_by_key_boxes > 0


def test_from_config_maps_train_and_val(tiny_world: Path) -> None:
    from simdistill.pipeline import open_data_source

    data = DataConfig(dataroot=str(tiny_world), version=VERSION, sweeps=2)
    train = open_data_source(data, "train")
    val = open_data_source(data, "val")
    assert train.split == "mini_train" and val.split == "mini_val" and train.sweeps == 2
    assert not set(train.tokens) & set(val.tokens)


def test_visible_box_centre_projects_into_the_augmented_image(val_source: NuScenesSource) -> None:
    """Raw-visible GT centres land inside the augmented image, on the same colour as in the raw image."""
    # resized images (~145x80) fit the 160x96 canvas, so only the rotation can push a centre out
    policy = AugmentConfig(final_height=96, final_width=160, resize_lim=(0.7, 0.75))
    builder = ViewBuilder(val_source, policy, train=True)
    margin = 8  # px kept clear of the raw border (rotation by 5.4 deg moves corners by a few px)
    colour_diffs = []
    for i in range(len(val_source)):
        sample = val_source.load(i)
        view = builder.build(i, builder.draw(i, np.random.default_rng(i)))
        h_raw, w_raw = sample.images.shape[1:3]
        for box in view.gt_boxes:
            centre = np.linalg.inv(view.lidar_aug_matrix.astype(np.float64)) @ np.append(box[:3], 1.0)
            for k in range(len(CAMERA_NAMES)):
                cam = np.linalg.inv(view.camera2lidar[k].astype(np.float64)) @ centre
                if cam[2] < 1.0:
                    continue
                uvd = view.cam_intrinsics[k, :3, :3].astype(np.float64) @ cam[:3]
                uv = np.array([uvd[0] / uvd[2], uvd[1] / uvd[2], uvd[2], 1.0])
                if not (margin <= uv[0] < w_raw - margin and margin <= uv[1] < h_raw - margin):
                    continue  # not visible in this raw camera
                u, v = (view.img_aug_matrix[k].astype(np.float64) @ uv)[:2]
                assert 0 <= u < policy.final_width and 0 <= v < policy.final_height, (i, k, u, v)
                aug_rgb = view.images[k, :, int(round(v)), int(round(u))] * IMAGENET_STD + IMAGENET_MEAN
                raw_rgb = sample.images[k, int(round(uv[1])), int(round(uv[0]))] / 255.0
                colour_diffs.append(np.abs(aug_rgb - raw_rgb).max())
    assert len(colour_diffs) >= 5
    assert np.median(colour_diffs) < 0.08, np.round(colour_diffs, 3)
