"""The bevfusion-transfusion family: a TransFusionHead's dense heatmap and query boxes in the store's layout.

The detector is `helpers/transfusion_bevfusion.py`, a plain-PyTorch stand-in with the module names, x-major maps
and head output of mmdetection3d 1.4's projects/BEVFusion, so this runs without mmdet3d.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_config
from typer.testing import CliRunner

import helpers.transfusion_bevfusion as standin
from helpers.fake_batch import make_fake_batch
from simdistill.cli import app
from simdistill.config import CLASS_NAMES, DEFAULT_TASKS
from simdistill.errors import ConfigError
from simdistill.feature_store import open_store
from simdistill.interop.tapped_teacher import TappedTeacher, centerhead_outputs
from simdistill.interop.transfusion import scatter_query_boxes, transfusion_outputs
from simdistill.student_train.trainer import train_student

FACTORY = f"{Path(standin.__file__).resolve()}:make_teacher"
runner = CliRunner()


def _decode_cell(code: torch.Tensor, row: int, col: int) -> tuple[float, float]:
    """(x, y) in cells that our CenterHead decoding reads from the code written at (row, col)."""
    return col + float(code[0]), row + float(code[1])


def test_scatter_writes_each_query_around_its_centre_and_the_higher_score_wins() -> None:
    h, w = 5, 7  # non-square: a swapped row/column fails
    center = torch.tensor([[[2.3, 3.5, 6.9, -3.0, 5.2],  # x in cells
                            [1.6, 1.2, 4.9, 2.0, 3.4]]])  # y in cells
    codes = torch.arange(5 * 8, dtype=torch.float32).view(5, 8).T[None]  # [1, 8, P]: query q's code = 8q..8q+7
    task = torch.tensor([[0, 0, 1, 0, 1]])
    score = torch.tensor([[0.5, 0.9, 0.3, 1.0, 0.3]])  # q4 ties q2 where they meet: the lower index (q2) wins
    grid = scatter_query_boxes(center, codes, task, score, n_tasks=2, grid_hw=(h, w))
    assert grid.shape == (1, 2, 10, h, w)
    owner = {}  # (task, row, col) -> query whose code is there
    for t, r, c in zip(*torch.nonzero(grid[0].abs().sum(1), as_tuple=True)):
        q = int(grid[0, t, 2, r, c]) // 8
        owner[(int(t), int(r), int(c))] = q
        assert torch.equal(grid[0, t, 2:, r, c], codes[0, :, q])
        assert _decode_cell(grid[0, t, :, r, c], int(r), int(c)) == pytest.approx(
            (float(center[0, 0, q]), float(center[0, 1, q])), abs=1e-6)
    want = {(0, r, c): 0 for r in (0, 1, 2) for c in (1, 2, 3)}  # q0: rows 0-2, columns 1-3 of task 0 ...
    want.update({(0, r, c): 1 for r in (0, 1, 2) for c in (2, 3, 4)})  # ... where q1 (score 0.9 > 0.5) overwrites
    want.update({(1, r, c): 4 for r in (2, 3, 4) for c in (4, 5, 6)})  # q4: rows 2-4, columns 4-6 of task 1 ...
    want.update({(1, r, c): 2 for r in (3, 4) for c in (5, 6)})  # ... but q2 keeps its on-grid corner cells
    assert owner == want  # q3 lies off the grid and writes nothing
    assert float(grid[0, 1, 0, 4, 6]) == pytest.approx(6.9 - 6) and float(grid[0, 1, 1, 4, 6]) == pytest.approx(0.9)


def _head_output(b: int, nx: int, ny: int, p: int, layers: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    level = {k: torch.randn(b, n, p * layers, generator=g) for k, n in standin.COMMON_HEADS.items()}
    level["center"] = torch.rand(b, 2, p * layers, generator=g) * torch.tensor([nx, ny]).view(1, 2, 1)
    level["heatmap"] = torch.randn(b, 10, p * layers, generator=g)
    level["query_heatmap_score"] = torch.rand(b, 10, p, generator=g)
    level["dense_heatmap"] = torch.randn(b, 10, nx, ny, generator=g)
    labels = torch.randint(0, 10, (b, p), generator=g)
    return ([level],), labels


def test_transfusion_outputs_transpose_the_heatmap_and_take_the_last_layers_queries() -> None:
    nx, ny, p = 9, 6, 12
    preds, labels = _head_output(2, nx, ny, p)
    tasks = (("traffic_cone", "pedestrian"), ("car", "truck", "construction_vehicle", "bus", "trailer"),
             ("barrier", "motorcycle", "bicycle"))  # another class order than the head's
    heatmap, boxes = transfusion_outputs(preds, labels, tasks)
    level = preds[0][0]
    assert heatmap.shape == (2, 10, ny, nx) and boxes.shape == (2, 3, 10, ny, nx)
    order = [CLASS_NAMES.index(c) for task in tasks for c in task]
    assert torch.equal(heatmap, level["dense_heatmap"].transpose(-1, -2)[:, order])
    checked = 0
    for b in range(2):
        for q in range(p):
            label = int(labels[b, q])
            t = next(i for i, task in enumerate(tasks) if CLASS_NAMES[label] in task)
            x, y = (float(v) for v in level["center"][b, :, p + q])  # the last of the two layers
            row, col = math.floor(y), math.floor(x)
            code = boxes[b, t, :, row, col]
            if float(code[0]) != pytest.approx(x - col) or float(code[1]) != pytest.approx(y - row):
                continue  # another query of the task with a higher score took this cell
            want = torch.cat([level[k][b, :, p + q] for k in ("height", "dim", "rot", "vel")])
            torch.testing.assert_close(code[2:], want)
            checked += 1
    assert checked >= p  # most queries own their centre cell


def _tiny_standin(tmp_path: Path, extra: list[str] | None = None, *, world: Path):
    cfg = make_tiny_config(world, extra)
    ckpt = standin.write_checkpoint(cfg.model, tmp_path / "transfusion.pth")
    return cfg, ckpt


def test_tapped_standin_boxes_decode_to_the_heads_own_boxes(tiny_world, tmp_path) -> None:
    """Through the family on the stand-in: maps transposed, and each query that owns its centre cell decodes there
    to the box mmdet3d's TransFusionBBoxCoder makes of it."""
    cfg, ckpt = _tiny_standin(tmp_path, ["model.bev.ybound=[-24.0, 24.0, 2.0]"], world=tiny_world)  # 24 x 32
    teacher = standin.make_teacher(cfg.model, ckpt).eval()
    with torch.no_grad():
        out = teacher(make_fake_batch(cfg, batch_size=2, seed=3))
    tapped, head = teacher.tap.captured, teacher.model.bbox_head  # what this forward's hooks recorded
    assert tapped["cam_bev"].shape == (2, 16, 32, 24) and out.cam_bev.shape == (2, 16, 24, 32)  # x-major -> ours
    for name in ("cam_bev", "lidar_bev", "fused_bev"):
        assert torch.equal(getattr(out, name), tapped[name].transpose(-1, -2)), name
    preds = tapped["head"]
    level, p = preds[0][0], head.num_proposals
    torch.testing.assert_close(out.heatmap, level["dense_heatmap"].transpose(-1, -2))
    (xmin, _, xstep), (ymin, _, ystep) = cfg.model.bev.xbound, cfg.model.bev.ybound
    owned = 0
    for b in range(2):
        for q in range(p):
            cx, cy = (float(v) for v in level["center"][b, :, -p + q])
            task = next(i for i, t in enumerate(DEFAULT_TASKS) if CLASS_NAMES[int(head.query_labels[b, q])] in t)
            row, col = math.floor(cy), math.floor(cx)
            if not (0 <= row < 24 and 0 <= col < 32):
                continue
            code = out.boxes[b, task, :, row, col]
            if abs(col + float(code[0]) - cx) > 1e-4 or abs(row + float(code[1]) - cy) > 1e-4:
                continue  # a higher-scoring query took the cell
            owned += 1
            ours = [(col + code[0]) * xstep + xmin, (row + code[1]) * ystep + ymin, code[2], *code[3:6].exp(),
                    torch.atan2(code[6], code[7]), code[8], code[9]]
            dim = level["dim"][b, :, -p + q].exp()  # TransFusionBBoxCoder.decode (height is the gravity centre)
            theirs = [cx * xstep + xmin, cy * ystep + ymin, level["height"][b, 0, -p + q], *dim,
                      torch.atan2(*level["rot"][b, :, -p + q]), *level["vel"][b, :, -p + q]]
            torch.testing.assert_close(torch.stack([torch.as_tensor(v) for v in ours]),
                                       torch.stack([torch.as_tensor(v) for v in theirs]), rtol=1e-5, atol=1e-5)
    assert owned >= p // 2


def test_head_mismatches_name_the_family(tiny_world, tmp_path) -> None:
    preds, labels = _head_output(1, 4, 4, 3)
    with pytest.raises(ConfigError, match="--tap-family bevfusion-transfusion"):
        centerhead_outputs(preds, [len(t) for t in DEFAULT_TASKS])
    centerhead_like = tuple([{"heatmap": torch.zeros(1, len(t), 4, 4)}] for t in DEFAULT_TASKS)
    with pytest.raises(ConfigError, match="does not return TransFusionHead outputs"):
        transfusion_outputs(centerhead_like, labels, DEFAULT_TASKS)
    del preds[0][0]["vel"]
    with pytest.raises(ConfigError, match="returns no vel"):
        transfusion_outputs(preds, labels, DEFAULT_TASKS)
    cfg, ckpt = _tiny_standin(tmp_path, world=tiny_world)
    model = standin.CPUBEVFusionTransFusion(cfg.model)
    with pytest.raises(ConfigError, match=r"no submodule 'vtransform' \(closest: view_transform"):
        TappedTeacher(model, cfg.model, family="bevfusion")
    wrong_head = {**standin.make_teacher(cfg.model, ckpt).paths, "head": "bbox_head.heatmap_head"}
    tapped = TappedTeacher(model, cfg.model, family="bevfusion-transfusion", paths=wrong_head).eval()
    with pytest.raises(ConfigError, match=r"\(Sequential\) has no query_labels .* tap mmdet3d's TransFusionHead"):
        with torch.no_grad():
            tapped(make_fake_batch(cfg, batch_size=1, seed=0))


def test_transfusion_standin_exports_verifies_and_trains_a_student(tiny_world, tmp_path) -> None:
    cfg, ckpt = _tiny_standin(tmp_path, world=tiny_world)
    store = str(tmp_path / "transfusion.zarr")
    args = ["--config", "tiny", "--set", f"data.dataroot={tiny_world}"]
    result = runner.invoke(app, ["export-teacher", "--checkpoint", str(ckpt), "--out", store, "--teacher", "python",
                                 "--teacher-factory", FACTORY, *args])
    assert result.exit_code == 0, result.output
    teacher = open_store(store).attrs["teacher"]
    assert teacher["name"] == "python" and teacher["factory"] == FACTORY
    assert teacher["boxes"].startswith("queries: each last-layer TransFusion query's box")
    verify = runner.invoke(app, ["store", "verify", store])
    assert verify.exit_code == 0 and "all done views verified" in verify.output, verify.output
    run = train_student(cfg, out_dir=tmp_path / "student", store=store, progress=False, stop_after=2)
    assert run.steps == 2 and math.isfinite(run.last_terms["mmd_p"]) and run.last_terms["mmd_p"] > 0
