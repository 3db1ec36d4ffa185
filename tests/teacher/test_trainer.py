"""train-teacher: it learns, checkpoints load with weights_only, and a resumed run matches an uninterrupted one."""

from __future__ import annotations

import json

import torch
from conftest import make_tiny_config

from simdistill.evaluation.run import evaluate_run
from simdistill.teacher.trainer import train_teacher
from simdistill.training.checkpoint import load_checkpoint


def test_resume_matches_uninterrupted_and_checkpoint_is_safe(tiny_world, tmp_path):
    cfg = make_tiny_config(tiny_world, ["teacher_train.epochs=2", "teacher_train.checkpoint_every=1"])
    partial = train_teacher(cfg, out_dir=tmp_path / "a", progress=False, stop_after=3)
    assert partial.steps == 3 and not (tmp_path / "a" / "teacher.pt").exists()
    resumed = train_teacher(cfg, out_dir=tmp_path / "a", progress=False)
    full = train_teacher(cfg, out_dir=tmp_path / "b", progress=False)
    assert resumed.steps == full.steps == 8
    a = load_checkpoint(resumed.checkpoint, expect_kind="teacher")
    b = torch.load(full.checkpoint, map_location="cpu", weights_only=True)
    for name, value in b["model"].items():
        torch.testing.assert_close(a["model"][name], value, rtol=0, atol=0, msg=name)
    assert a["config"]["model"]["channels"]["cam"] == 16 and a["package_version"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_teacher_loss_falls_and_evaluation_is_written(tiny_world, tmp_path):
    cfg = make_tiny_config(tiny_world, ["teacher_train.epochs=6", "teacher_train.lr=0.004"])
    result = train_teacher(cfg, out_dir=tmp_path / "t", progress=False)
    assert result.finished
    written = evaluate_run(result.model, cfg, tmp_path / "t")
    log = [json.loads(line) for line in (tmp_path / "t" / "train_log.jsonl").read_text().splitlines()]
    first = sum(r["loss"] for r in log[:3]) / 3
    last = sum(r["loss"] for r in log[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics == written and 0.0 <= metrics["NDS"] <= 1.0
    assert (tmp_path / "t" / "eval" / "bev_0.png").exists()
