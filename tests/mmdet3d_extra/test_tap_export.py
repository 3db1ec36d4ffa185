"""export-teacher --teacher mmdet3d: an mmdet3d detector built from a config file fills the same store.

Runs only where the mmdet3d extra is installed (the CI's second tier). The detector is
`SimDistillCPUBEVFusion` (BEVFusion's layout and extract_feat contract, mmdet3d's SECOND, SECONDFPN,
CenterHead and mmcv's Voxelization), written to an mmengine .py config and a .pth checkpoint the way an
mmdet3d user has them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# Skipped where the mmdet3d extra is not installed (mmdet3d.structures also needs mmcv's compiled ops).
pytest.importorskip("mmdet3d.structures")

from conftest import TINY_CONFIG, make_tiny_config, tiny_overrides  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from simdistill.cli import app  # noqa: E402
from simdistill.errors import CheckpointError, ConfigError  # noqa: E402
from simdistill.feature_store import open_store  # noqa: E402
from simdistill.pipeline.augment import ViewBuilder  # noqa: E402
from simdistill.pipeline.sources import open_data_source  # noqa: E402
from simdistill.pipeline.view_plan import build_inputs  # noqa: E402
from simdistill.student_train.distill_step import arrays_needed  # noqa: E402
from simdistill.student_train.target_sources import OnlineTeacher, StoreTargets  # noqa: E402

FP16_RTOL = 2.0**-11
FP16_ATOL = 2.0**-25
ALL_LOSSES = ("imd", "cmd", "mmd_f", "mmd_p")
EXACT_STORE = ["store_format.lossy_arrays=[]"]  # float16 only, so the comparison below is exact up to fp16


def write_mmdet3d_teacher(cfg, out_dir: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """(config.py, checkpoint.pth) of a randomly initialised CPU BEVFusion, saved like mmengine saves them."""
    from mmdet3d.registry import MODELS
    from mmengine.config import Config as MMConfig
    from mmengine.registry import init_default_scope

    from simdistill.interop.mmdet3d_cpu_bevfusion import cpu_bevfusion_config

    config_path = out_dir / "cpu_bevfusion_centerhead.py"
    MMConfig(cpu_bevfusion_config(cfg)).dump(str(config_path))
    init_default_scope("mmdet3d")
    torch.manual_seed(seed)
    model = MODELS.build(MMConfig.fromfile(str(config_path)).model)
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode BN is not the identity
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ckpt = out_dir / "epoch_1.pth"
    torch.save({"meta": {"epoch": 1, "seed": np.int64(seed), "hist": np.arange(3.0)},
                "state_dict": model.state_dict()}, ckpt)
    return config_path, ckpt


@pytest.fixture(scope="module")
def mm_teacher(tiny_world, tmp_path_factory):
    cfg = make_tiny_config(tiny_world)
    return write_mmdet3d_teacher(cfg, tmp_path_factory.mktemp("mmdet3d_teacher"))


def _mm_args(config_path: Path) -> list[str]:
    return ["--teacher", "mmdet3d", "--teacher-config", str(config_path)]


def _cli_args(world: Path, extra: list[str]) -> list[str]:
    args = ["--config", str(TINY_CONFIG)]
    for o in tiny_overrides(world) + extra:
        args += ["--set", o]
    return args


def test_store_written_from_an_mmdet3d_teacher_matches_its_tapped_tensors(tiny_world, mm_teacher, tmp_path):
    config_path, ckpt = mm_teacher
    store = str(tmp_path / "mm.zarr")
    result = CliRunner().invoke(app, ["export-teacher", "--checkpoint", str(ckpt), "--out", store,
                                      *_mm_args(config_path), *_cli_args(tiny_world, EXACT_STORE)])
    assert result.exit_code == 0, result.output
    reader = open_store(store)
    assert reader.done_views().all()
    teacher_attrs = reader.attrs["teacher"]
    assert teacher_attrs["name"] == "mmdet3d" and teacher_attrs["family"] == "bevfusion"
    assert teacher_attrs["taps"]["cam_bev"] == "vtransform"

    cfg = make_tiny_config(tiny_world, EXACT_STORE + ["export.teacher=mmdet3d",
                                                      f"export.teacher_config={config_path}"])
    cpu = torch.device("cpu")
    cached = StoreTargets(store, cfg, arrays_needed(ALL_LOSSES))
    online = OnlineTeacher(ckpt, cfg, cpu)  # the same mmdet3d detector, run live and tapped
    builder = ViewBuilder(open_data_source(cfg.data, "train"), cfg.augment, train=True)
    batches = [[0, 1], [3, 2]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the export worker (export.threads_per_worker): the same float summation order
    try:
        _compare(cached, online, builder, cfg, batches)
    finally:
        torch.set_num_threads(threads)


def _compare(cached, online, builder, cfg, batches) -> None:
    """Stored arrays == the tapped detector run live, up to float16 rounding (masked arrays where stored)."""
    cpu = torch.device("cpu")
    checked_cells = 0
    for views, stored in zip(batches, cached.iterate(batches, cpu)):
        batch = build_inputs(builder, cached.plan, views)
        # One view per forward, as the export ran them: conv summation order depends on the batch size.
        singles = [online.targets(build_inputs(builder, cached.plan, [v])) for v in views]
        live = type(singles[0])(**{f: torch.cat([getattr(s, f) for s in singles])
                                   for f in ("cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes", "fg_mask")})
        fg = live.fg_mask
        assert float(live.cam_bev.abs().sum()) > 0 and float(live.lidar_bev.abs().sum()) > 0
        expected = {"cam_bev": live.cam_bev, "fused_bev": live.fused_bev, "heatmap": live.heatmap, "fg_mask": fg,
                    "lidar_bev": live.lidar_bev * (fg > 0).unsqueeze(1)}
        for name, want in expected.items():
            torch.testing.assert_close(getattr(stored, name), want, rtol=FP16_RTOL, atol=FP16_ATOL, msg=name)
        targets = online.model.head.build_targets(batch.gt_boxes, batch.gt_labels)
        b, t, k = torch.nonzero(targets.mask, as_tuple=True)
        cells = targets.indices[b, t, k]
        w = stored.boxes.shape[-1]
        torch.testing.assert_close(stored.boxes[b, t, :, cells // w, cells % w],
                                   live.boxes[b, t, :, cells // w, cells % w], rtol=FP16_RTOL, atol=FP16_ATOL)
        checked_cells += len(cells)
    assert checked_cells > 0


def test_tapped_teacher_equals_the_detectors_own_forward(tiny_world, mm_teacher):
    """What the tap reads is what the mmdet3d detector computes: its head outputs through mode='tensor'."""
    from mmdet3d.structures import Det3DDataSample

    from simdistill.interop.bevfusion_inputs import batch_to_bevfusion_inputs
    from simdistill.interop.tapped_teacher import centerhead_outputs

    config_path, ckpt = mm_teacher
    cfg = make_tiny_config(tiny_world, ["export.teacher=mmdet3d", f"export.teacher_config={config_path}"])
    teacher = OnlineTeacher(ckpt, cfg, torch.device("cpu")).model
    builder = ViewBuilder(open_data_source(cfg.data, "train"), cfg.augment, train=False)
    from simdistill.pipeline.sample import collate

    batch = collate([builder.build(i, builder.test_params(i)) for i in (0, 1)])
    with torch.no_grad():
        tapped = teacher(batch)
        inputs, metas = batch_to_bevfusion_inputs(batch)
        samples = [Det3DDataSample(metainfo=m) for m in metas]
        raw = teacher.model(inputs, samples, mode="tensor")  # mmengine's standard call, no hooks involved
        heatmap, boxes = centerhead_outputs(raw, [len(t) for t in cfg.model.head.tasks])
    torch.testing.assert_close(tapped.heatmap, heatmap, rtol=0, atol=0)
    torch.testing.assert_close(tapped.boxes, boxes, rtol=0, atol=0)


def test_mmdet3d_teacher_errors_are_clear(tiny_world, mm_teacher, tmp_path):
    config_path, ckpt = mm_teacher
    from simdistill.interop.mmdet3d_teacher import load_mmdet3d_teacher, read_state_dict

    cfg = make_tiny_config(tiny_world, ["export.teacher=mmdet3d", f"export.teacher_config={config_path}"])
    # A config whose grid the simdistill config does not describe: named with the key to set.
    wrong = make_tiny_config(tiny_world, ["export.teacher=mmdet3d", f"export.teacher_config={config_path}",
                                          "model.channels.cam=24"])
    teacher = load_mmdet3d_teacher(wrong, ckpt)
    builder = ViewBuilder(open_data_source(wrong.data, "train"), wrong.augment, train=False)
    from simdistill.pipeline.sample import collate

    batch = collate([builder.build(0, builder.test_params(0))])
    with pytest.raises(ConfigError, match=r"cam_bev \(vtransform\) is \[1, 16, .*model.channels.cam"):
        with torch.no_grad():
            teacher(batch)
    # A wrong tap path names the closest module.
    bad_tap = make_tiny_config(tiny_world, ["export.teacher=mmdet3d", f"export.teacher_config={config_path}",
                                            "export.taps=[cam_bev=vtransfrom]"])
    with pytest.raises(ConfigError, match="closest: vtransform"):
        load_mmdet3d_teacher(bad_tap, ckpt)
    # A checkpoint of another model.
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_mmdet3d_teacher(cfg, other)
    # A checkpoint that needs arbitrary unpickling is refused (weights_only), with the recipe.
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {}, "meta": {"obj": _Opaque()}}, unsafe)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(unsafe)
    # Head tasks that differ from the simdistill config's.
    swapped = make_tiny_config(tiny_world, ["export.teacher=mmdet3d", f"export.teacher_config={config_path}",
                                            "model.head.tasks=[[car], [truck, construction_vehicle], "
                                            "[bus, trailer], [barrier], [motorcycle, bicycle], "
                                            "[traffic_cone, pedestrian]]"])
    with pytest.raises(ConfigError, match="set model.head.tasks to the teacher's"):
        load_mmdet3d_teacher(swapped, ckpt)
    # Through the CLI: exit 2, one line, no traceback; and a missing --teacher-config.
    result = CliRunner().invoke(app, ["export-teacher", "--checkpoint", str(other), "--out", str(tmp_path / "s"),
                                      *_mm_args(config_path), *_cli_args(tiny_world, [])])
    assert result.exit_code == 2 and "does not fit the model" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["export-teacher", "--checkpoint", str(ckpt), "--out", str(tmp_path / "s"),
                                      "--teacher", "mmdet3d", *_cli_args(tiny_world, [])])
    assert result.exit_code == 2 and "--teacher-config" in result.output


class _Opaque:
    pass
