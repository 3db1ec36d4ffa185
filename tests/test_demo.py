"""`simdistill demo` end to end on a tiny world: a re-run skips every finished stage, a fresh run prints the same
table (one thread per student: bit-reproducible), and `pretrain=True` makes and uses its own backbone."""

from __future__ import annotations

import json

from conftest import TINY_WORLD, make_tiny_config

from simdistill.config import WorldConfig
from simdistill.demo import run_demo


def _demo_config(tmp_path, extra=None):
    cfg = make_tiny_config(tmp_path / "unused", extra)  # run_demo points data.* at its own world
    cfg.world = WorldConfig(**TINY_WORLD)
    return cfg


def test_demo_runs_end_to_end_and_skips_finished_stages(tmp_path, capsys):
    cfg = _demo_config(tmp_path)
    text = run_demo(cfg, workdir=tmp_path / "demo")
    table = text.split("\n\n")[0]
    assert table.count("\n") == 4 and "next: simdistill train-student --store" in text
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert list(results["rows"]) == ["teacher (LiDAR+camera)", "baseline (camera, GT only)",
                                     "SimDistill (cached teacher)"]
    for name, metrics in results["rows"].items():
        assert f"| {name} | {metrics['mAP']:.4f} | {metrics['NDS']:.4f} |" in table  # the table is the metrics
    assert set(results["stage_seconds"]) >= {"world", "teacher", "export", "baseline", "simdistill", "total"}
    assert (tmp_path / "demo" / "comparison.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "simdistill" / "eval" / "loss_curves.png").exists()
    log = capsys.readouterr().err
    assert "baseline and simdistill: training side by side" in log
    capsys.readouterr()

    again = run_demo(cfg, workdir=tmp_path / "demo")
    log = capsys.readouterr().err
    assert again == text
    for stage in ("world", "teacher", "baseline", "simdistill"):
        assert f"{stage}: " in log and "skipped" in log
    assert "0 exported" in log

    fresh = run_demo(cfg, workdir=tmp_path / "demo_again")  # a second machine-identical run: the same numbers
    assert fresh.split("\n\n")[0] == table


def test_demo_can_pretrain_its_own_backbone(tmp_path, capsys):
    cfg = _demo_config(tmp_path, ["pretrain.epochs=1", "teacher_train.epochs=1", "student_train.epochs=1"])
    run_demo(cfg, workdir=tmp_path / "demo", pretrain=True)
    assert (tmp_path / "demo" / "pretrain" / "backbone.pt").is_file()
    teacher = json.loads((tmp_path / "demo" / "results.json").read_text())["stage_seconds"]
    assert "pretrain" in teacher
    assert "pretrain: the image backbone" in capsys.readouterr().err
