"""The teacher feature tap and the mmdet3d input/output conversions that need no mmdet3d install."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from simdistill.config import DEFAULT_TASKS
from simdistill.errors import ConfigError
from simdistill.interop.bevfusion_inputs import (
    batch_to_bevfusion_inputs,
    check_preprocessor,
)
from simdistill.interop.feature_tap import FeatureTap, parse_tap_path
from simdistill.interop.tapped_teacher import (
    CENTERHEAD_KEYS,
    TappedTeacher,
    centerhead_outputs,
    tap_paths,
)
from simdistill.models import build_model
from helpers.fake_batch import make_fake_batch


@pytest.fixture()
def teacher_and_batch(tiny_config):
    torch.manual_seed(0)
    cfg = tiny_config
    model = build_model("teacher", cfg.model, (cfg.augment.final_height, cfg.augment.final_width)).eval()
    return cfg, model, make_fake_batch(cfg, batch_size=2, seed=1)


def test_tap_records_what_the_named_modules_return(teacher_and_batch) -> None:
    cfg, model, batch = teacher_and_batch
    paths = {"cam_bev": "vtransform", "lidar_bev": "lidar", "fused_bev": "fuser", "heatmap": "head",
             "boxes": "head#1"}
    with torch.no_grad(), FeatureTap(model, paths) as tap:
        out = model(batch)
    got = tap.require(*paths)
    assert torch.equal(got["cam_bev"], out.cam_bev)
    assert torch.equal(got["lidar_bev"], out.lidar_bev)
    assert torch.equal(got["fused_bev"], out.fused_bev)
    assert torch.equal(got["heatmap"], out.heatmap) and torch.equal(got["boxes"], out.boxes)
    # Hooks are gone after the block: a second forward records nothing.
    with torch.no_grad():
        model(batch)
    assert tap.calls["cam_bev"] == 1


def test_tap_picks_a_list_element_and_counts_calls() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.split = nn.Identity()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = self.split([x, 2 * x])
            return self.conv(self.conv(parts[1]))

    net, x = Net(), torch.ones(1, 1, 2, 2)
    with FeatureTap(net, {"first": "split", "second": "split#1", "conv": "conv"}) as tap:
        net(x)
    assert torch.equal(tap.captured["first"], x) and torch.equal(tap.captured["second"], 2 * x)
    with pytest.raises(ConfigError, match="ran 2 times"):
        tap.require("conv")
    with pytest.raises(ConfigError, match="out of range"), FeatureTap(net, {"bad": "split#5"}):
        net(x)


def test_tap_path_errors_name_the_closest_modules(teacher_and_batch) -> None:
    _, model, _ = teacher_and_batch
    with pytest.raises(ConfigError, match="closest: vtransform"):
        FeatureTap(model, {"cam_bev": "vtransfrom"})
    with pytest.raises(ConfigError, match="list index"):
        parse_tap_path("neck#a")
    with pytest.raises(ConfigError, match="never ran"):
        with FeatureTap(model, {"cam_bev": "vtransform"}) as tap:
            pass
        tap.require("cam_bev")


def test_tap_paths_family_and_overrides() -> None:
    paths = tap_paths("bevfusion", ["cam_bev=img_branch.vt", " fused_bev = fuser "])
    assert paths == {"cam_bev": "img_branch.vt", "lidar_bev": "pts_middle_encoder", "fused_bev": "fuser",
                     "head": "bbox_head"}
    with pytest.raises(ConfigError, match="unknown teacher family"):
        tap_paths("bevformer")
    with pytest.raises(ConfigError, match="unknown name 'depth'"):
        tap_paths("bevfusion", ["depth=x"])
    with pytest.raises(ConfigError, match="NAME=module.path"):
        tap_paths("bevfusion", ["cam_bev"])


def test_tap_options_without_an_mmdet3d_teacher_are_refused(tiny_config) -> None:
    from simdistill.config import validate

    tiny_config.export.taps = ("cam_bev=vtransform",)
    with pytest.raises(ConfigError, match="add --teacher mmdet3d"):
        validate(tiny_config)


def _mmdet3d_style_head_output(b: int, h: int, w: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        [{**{k: torch.randn(b, n, h, w, generator=g) for k, n in CENTERHEAD_KEYS},
          "heatmap": torch.randn(b, len(task), h, w, generator=g)}]
        for task in DEFAULT_TASKS
    )


def test_centerhead_outputs_follow_our_layout() -> None:
    preds = _mmdet3d_style_head_output(2, 5, 7)
    heatmap, boxes = centerhead_outputs(preds, [len(t) for t in DEFAULT_TASKS])
    assert heatmap.shape == (2, 10, 5, 7) and boxes.shape == (2, 6, 10, 5, 7)
    assert torch.equal(heatmap[:, 1:3], preds[1][0]["heatmap"])  # task 1 = truck, construction_vehicle
    t = 4
    assert torch.equal(boxes[:, t, 0:2], preds[t][0]["reg"])
    assert torch.equal(boxes[:, t, 2:3], preds[t][0]["height"])
    assert torch.equal(boxes[:, t, 3:6], preds[t][0]["dim"])
    assert torch.equal(boxes[:, t, 6:8], preds[t][0]["rot"])
    assert torch.equal(boxes[:, t, 8:10], preds[t][0]["vel"])
    del preds[0][0]["vel"]
    with pytest.raises(ConfigError, match="no vel output"):
        centerhead_outputs(preds, [len(t) for t in DEFAULT_TASKS])
    with pytest.raises(ConfigError, match="3 task outputs"):
        centerhead_outputs(preds[:3], [len(t) for t in DEFAULT_TASKS])


def test_bevfusion_inputs_project_like_our_geometry(teacher_and_batch) -> None:
    """lidar2img of the metas maps a LiDAR point to the raw-image pixel our camera2lidar/intrinsics give."""
    _, _, batch = teacher_and_batch
    inputs, metas = batch_to_bevfusion_inputs(batch)
    assert inputs["imgs"] is not None and inputs["imgs"].shape == batch.images.shape
    assert len(inputs["points"]) == 2 and inputs["points"][0].dtype == torch.float32
    meta = metas[1]
    for key in ("lidar2img", "cam2img", "cam2lidar", "lidar2cam", "img_aug_matrix"):
        assert meta[key].shape == (6, 4, 4), key
    assert meta["lidar_aug_matrix"].shape == (4, 4)
    point = np.array([8.0, 1.5, 0.3, 1.0])  # in front of CAM_FRONT, raw (un-augmented) LiDAR frame
    cam2lidar = batch.camera2lidar[1, 0].double().numpy()
    k = batch.cam_intrinsics[1, 0].double().numpy()[:3, :3]
    in_cam = np.linalg.inv(cam2lidar) @ point
    expected = (k @ in_cam[:3])[:2] / in_cam[2]
    projected = meta["lidar2img"][0] @ point
    assert projected[2] > 0
    np.testing.assert_allclose(projected[:2] / projected[2], expected, rtol=1e-9)


def test_preprocessor_must_normalise_like_us() -> None:
    check_preprocessor(dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=False))
    check_preprocessor(None)
    with pytest.raises(ConfigError, match="normalises images"):
        check_preprocessor(dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]))
    with pytest.raises(ConfigError, match="bgr_to_rgb=True"):
        check_preprocessor(dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True))


class _FakeBEVFusion(nn.Module):
    """A BEVFusion-layout detector made of our teacher's parts, with mmdet3d-style inputs and head output."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher
        self.vtransform = nn.Identity()
        self.pts_middle_encoder = nn.Identity()
        self.fusion_layer = nn.Identity()
        self.bbox_head = nn.Identity()

    def extract_feat(self, inputs, metas):
        from simdistill.pipeline.sample import Batch

        t = self.teacher
        batch = Batch(tokens=[m["token"] for m in metas], images=inputs["imgs"],
                      cam_intrinsics=torch.as_tensor(np.stack([m["cam2img"] for m in metas])).float(),
                      camera2lidar=torch.as_tensor(np.stack([m["cam2lidar"] for m in metas])).float(),
                      img_aug_matrix=torch.as_tensor(np.stack([m["img_aug_matrix"] for m in metas])).float(),
                      lidar_aug_matrix=torch.as_tensor(np.stack([m["lidar_aug_matrix"] for m in metas])).float(),
                      points=inputs["points"])
        out = t(batch)
        self.vtransform(out.cam_bev)
        self.pts_middle_encoder(out.lidar_bev)
        self.fusion_layer(out.fused_bev)
        self._out = out
        return [out.fused_bev]

    def _head(self, b):
        out = self._out
        preds, start = [], 0
        for i, task in enumerate(DEFAULT_TASKS):
            box = out.boxes[:, i]
            preds.append([{"heatmap": out.heatmap[:, start:start + len(task)], "reg": box[:, 0:2],
                           "height": box[:, 2:3], "dim": box[:, 3:6], "rot": box[:, 6:8], "vel": box[:, 8:10]}])
            start += len(task)
        return tuple(preds)


def test_tapped_teacher_returns_the_teachers_outputs(teacher_and_batch) -> None:
    cfg, model, batch = teacher_and_batch
    fake = _FakeBEVFusion(model)
    fake.bbox_head = _HeadShim(fake)
    tapped = TappedTeacher(fake, cfg.model).eval()
    with torch.no_grad():
        got = tapped(batch)
        ref = model(batch)
    for name in ("cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    cfg.model.channels.cam = 99
    with pytest.raises(ConfigError, match=r"cam_bev \(vtransform\) is \[2, 16, 32, 32\].*model.channels.cam"):
        TappedTeacher(fake, cfg.model)(batch)


class _HeadShim(nn.Module):
    def __init__(self, owner: _FakeBEVFusion) -> None:
        super().__init__()
        self.owner = [owner]  # a list, so the owner is not registered as a submodule (no cycle)

    def forward(self, feats):
        return self.owner[0]._head(feats[0].shape[0])


def test_mmdet3d_teacher_without_the_extra_says_how_to_install(tiny_world, tmp_path) -> None:
    try:
        import mmcv.ops  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the mmdet3d extra is installed here; tests/mmdet3d_extra covers this path")
    from typer.testing import CliRunner

    from simdistill.cli import app

    config = tmp_path / "bevfusion.py"
    config.write_text("model = dict(type='BEVFusion')\n")
    result = CliRunner().invoke(app, ["export-teacher", "--checkpoint", str(tmp_path / "epoch_20.pth"), "--out",
                                      str(tmp_path / "s.zarr"), "--teacher", "mmdet3d", "--teacher-config",
                                      str(config), "--config", "demo",
                                      "--set", f"data.dataroot={tiny_world}"])
    assert result.exit_code == 2, result.output
    assert "scripts/install_mmdet3d.sh" in result.output and "Traceback" not in result.output
