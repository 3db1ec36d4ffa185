"""`simdistill demo` end to end on a tiny world, and a re-run that skips every finished stage."""

from __future__ import annotations

import json

from conftest import TINY_WORLD, make_tiny_config

from simdistill.config import WorldConfig
from simdistill.demo import run_demo


def test_demo_runs_end_to_end_and_skips_finished_stages(tmp_path, capsys):
    cfg = make_tiny_config(tmp_path / "unused")  # run_demo points data.* at its own world
    cfg.world = WorldConfig(**TINY_WORLD)
    table = run_demo(cfg, workdir=tmp_path / "demo")
    for row in ("teacher", "baseline", "SimDistill"):
        assert row in table
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(results["rows"]) == {"teacher (LiDAR+camera)", "baseline (camera, GT only)", "SimDistill (cached teacher)"}
    for metrics in results["rows"].values():
        assert 0.0 <= metrics["NDS"] <= 1.0
    assert (tmp_path / "demo" / "comparison.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "simdistill" / "eval" / "loss_curves.png").exists()
    capsys.readouterr()

    again = run_demo(cfg, workdir=tmp_path / "demo")
    log = capsys.readouterr().err
    assert again == table
    for stage in ("world", "teacher", "baseline", "simdistill"):
        assert f"{stage}: " in log and "skipped" in log
    assert "0 exported" in log
