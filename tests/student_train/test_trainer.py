"""train-student: cached targets equal the online teacher's, refusals, exact resume after a kill, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, make_tiny_config, tiny_overrides
from typer.testing import CliRunner

from simdistill.cli import app
from simdistill.config import load_config
from simdistill.errors import CheckpointError, ConfigError, StoreError
from simdistill.feature_store import open_store, read_channel_stats
from simdistill.models import build_model
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sources import open_data_source
from simdistill.pipeline.view_plan import build_inputs, epoch_batches
from simdistill.student_train.distill_step import arrays_needed, student_terms
from simdistill.student_train.target_sources import OnlineTeacher, StoreTargets
from simdistill.student_train.trainer import train_student

ALL_LOSSES = ("imd", "cmd", "mmd_f", "mmd_p")
# float16 keeps 11 significant bits: round-to-nearest changes a normal value by at most 2^-11 of itself,
# a subnormal (|x| < 6.1e-5) by at most 2^-25 absolutely. The export's workers run one torch thread and this
# test two, so a tiny value can differ by a few fp32 ulps of the map's scale before rounding and land one
# subnormal step (2^-24) away: the absolute bound is one step, not half of one.
FP16_RTOL = 2.0**-11
FP16_ATOL = 2.0**-24
runner = CliRunner()


def _cli(world: Path, extra: list[str]) -> list[str]:
    args = ["--config", str(TINY_CONFIG)]
    for o in tiny_overrides(world) + extra:
        args += ["--set", o]
    return args


def test_cached_targets_equal_online_teacher_and_give_the_same_step(tiny_world, tiny_teacher, tiny_store):
    """Online targets through the store's encoding equal the cached ones bit for bit; raw float32 online targets
    give the same loss terms within float16 rounding."""
    cfg = make_tiny_config(tiny_world, ["student_train.online_encoding=store"])
    raw_cfg = make_tiny_config(tiny_world)
    cpu = torch.device("cpu")
    torch.set_num_threads(1)  # as the export's worker ran the teacher (export.threads_per_worker = 1)
    cached = StoreTargets(tiny_store, cfg, arrays_needed(ALL_LOSSES))
    online, raw = OnlineTeacher(tiny_teacher, cfg, cpu), OnlineTeacher(tiny_teacher, raw_cfg, cpu)
    builder = ViewBuilder(open_data_source(cfg.data, "train"), cfg.augment, train=True)
    torch.manual_seed(0)
    student = build_model("simdistill", cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
    batches = [[0, 1], [4, 2]]
    try:
        for views, stored in zip(batches, cached.iterate(batches, cpu)):
            batch = build_inputs(builder, cached.plan, views)
            live = online.targets(batch)
            for name in ("cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes", "fg_mask"):
                assert torch.equal(getattr(stored, name), getattr(live, name)), name
            # One training step's loss terms on raw float32 targets: the student output is fixed, so the terms
            # differ only through the targets' float16 rounding (relative 2^-11 per value).
            terms_cached = student_terms(student, batch, stored, cfg)
            terms_raw = student_terms(student, batch, raw.targets(batch), cfg)
            for key in ("loss", "gt", *ALL_LOSSES):
                assert float(terms_cached[key].detach()) > 0
                assert float(terms_cached[key].detach()) == pytest.approx(float(terms_raw[key].detach()),
                                                                          rel=1e-3), key
    finally:
        torch.set_num_threads(2)


def test_cached_and_online_runs_reach_bit_identical_weights(tiny_world, tiny_teacher, tiny_store, tmp_path):
    """The same views, the same targets (the online teacher's through the store's encoding): the same weights."""
    cfg = make_tiny_config(tiny_world, ["threads=1", "student_train.online_encoding=store"])
    try:
        cached = train_student(cfg, out_dir=tmp_path / "cached", store=tiny_store, progress=False, stop_after=4)
        online = train_student(cfg, out_dir=tmp_path / "online", store=tiny_store, online_teacher=tiny_teacher,
                               progress=False, stop_after=4)
    finally:
        torch.set_num_threads(2)
    assert cached.steps == online.steps == 4
    a, b = _weights(tmp_path / "cached" / "last.pt"), _weights(tmp_path / "online" / "last.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_losses_needing_an_absent_array_fail_before_training(tiny_world, tiny_store, tmp_path):
    store = tmp_path / "partial.zarr"
    shutil.copytree(tiny_store, store)
    shutil.rmtree(store / "cam_bev")
    cfg = make_tiny_config(tiny_world, ["distill.losses=[imd]"])
    with pytest.raises(StoreError, match="cam_bev"):
        train_student(cfg, out_dir=tmp_path / "run", store=str(store), progress=False)
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


def test_store_for_another_grid_is_refused_naming_both(tiny_world, tiny_store, tmp_path):
    result = runner.invoke(app, ["train-student", "--out", str(tmp_path / "r"), "--store", tiny_store,
                                 *_cli(tiny_world, ["model.bev.xbound=[-30.0, 30.0, 2.0]"])])
    assert result.exit_code == 2, result.output
    assert "-30" in result.output and "-32" in result.output, result.output


def test_cmd_on_baseline_is_refused(tiny_world, tiny_store, tmp_path):
    cfg = make_tiny_config(tiny_world, ["student_train.variant=baseline", "distill.losses=[cmd]"])
    with pytest.raises(ConfigError, match="baseline"):
        train_student(cfg, out_dir=tmp_path / "r", store=tiny_store, progress=False)


def test_distillation_without_targets_is_refused(tiny_world, tmp_path):
    result = runner.invoke(app, ["train-student", "--out", str(tmp_path / "r"), "--losses", "imd",
                                 *_cli(tiny_world, [])])
    assert result.exit_code == 2 and "--store" in result.output, result.output


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_after_sigkill_reaches_the_same_weights(tiny_world, tiny_store, tmp_path):
    """Kill a run mid-way, resume it: same final weights as an uninterrupted run (same seed, CPU).

    All runs are subprocesses with the same thread count: CPU float reductions depend on it.
    """
    extra = ["student_train.epochs=4", "student_train.checkpoint_every=2"]
    env = dict(os.environ, OMP_NUM_THREADS="2")

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "simdistill", "train-student", "--out", str(out), "--store", tiny_store,
                "--no-evaluate", *_cli(tiny_world, extra)]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    log = killed / "train_log.jsonl"
    deadline = time.time() + 180
    try:
        while proc.poll() is None and time.time() < deadline:
            if log.exists() and len(log.read_text().splitlines()) >= 5:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "training finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed_from = torch.load(killed / "last.pt", map_location="cpu", weights_only=True)["step"]
    assert 0 < resumed_from < 16
    for out in (killed, tmp_path / "full"):
        done = subprocess.run(command(out), capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = _weights(killed / "student.pt"), _weights(tmp_path / "full" / "student.pt")
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 17))


@pytest.mark.slow
def test_ddp_two_cpu_ranks(tiny_world, tiny_store, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "simdistill", "train-student", "--out", str(out), "--store", tiny_store, "--no-evaluate",
           *_cli(tiny_world, ["student_train.epochs=1", "student_train.batch_size=2"])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # 9 samples over 2 ranks -> 4 views per rank -> 2 steps of batch 2 each (disjoint views per rank).
    assert [r["step"] for r in log] == [1, 2]
    assert (out / "student.pt").exists()
    ckpt = torch.load(out / "student.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2


def test_rank_views_are_disjoint(tiny_world, tiny_store):
    cfg = make_tiny_config(tiny_world)
    plan = StoreTargets(tiny_store, cfg, ["cam_bev"]).plan
    r0 = {v for b in epoch_batches(plan, seed=0, epoch=3, batch_size=2, rank=0, world=2) for v in b}
    r1 = {v for b in epoch_batches(plan, seed=0, epoch=3, batch_size=2, rank=1, world=2) for v in b}
    assert r0 and r1 and not (r0 & r1)


def test_evaluate_command_writes_metrics_and_plots(tiny_world, tiny_store, tmp_path):
    cfg = make_tiny_config(tiny_world, ["student_train.epochs=1"])
    result = train_student(cfg, out_dir=tmp_path / "run", store=tiny_store, progress=False)
    out = tmp_path / "eval"
    cli = runner.invoke(app, ["evaluate", "--checkpoint", str(result.checkpoint), "--out", str(out)])
    assert cli.exit_code == 0, cli.output
    assert "NDS" in cli.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"mAP", "NDS", "mATE", "mAOE"}
    assert (out / "bev_0.png").exists() and (out / "loss_curves.png").exists()
    assert np.isfinite(metrics["NDS"])


def test_resume_rule_machine_settings_may_change_the_run_may_not(tiny_world, tiny_store, tmp_path):
    """One rule: a run resumes when its content is unchanged; threads, loader and the like may differ."""
    out = tmp_path / "run"
    first = train_student(make_tiny_config(tiny_world), out_dir=out, store=tiny_store, progress=False, stop_after=2)
    assert first.steps == 2 and not first.finished
    moved = make_tiny_config(tiny_world, ["threads=1", "student_train.loader=direct",
                                          "student_train.prefetch_batches=3", "student_train.checkpoint_every=1"])
    with pytest.raises(CheckpointError, match=r"distill.losses was \['imd', 'cmd', 'mmd_f', 'mmd_p'\], now \['imd'\]"):
        train_student(make_tiny_config(tiny_world, ["distill.losses=[imd]"]), out_dir=out, store=tiny_store,
                      progress=False)
    other_store = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, other_store)
    with pytest.raises(CheckpointError, match="targets.store_url was"):
        train_student(make_tiny_config(tiny_world), out_dir=out, store=str(other_store), progress=False)
    resumed = train_student(moved, out_dir=out, store=tiny_store, progress=False, stop_after=3)
    assert resumed.steps == 3
    result = runner.invoke(app, ["train-student", "--out", str(out), "--store", tiny_store, "--losses", "imd",
                                 "--no-evaluate", *_cli(tiny_world, [])])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "distill.losses" in result.output


def test_channel_standardisation_is_refused_with_an_online_teacher(tmp_path):
    """Checked before any data or teacher is opened; through the CLI it is one line, exit 2."""
    cfg = load_config(TINY_CONFIG, ["distill.channel_standardization=true"])
    with pytest.raises(ConfigError, match="channel_standardization.*drop --online-teacher"):
        train_student(cfg, out_dir=tmp_path / "r", online_teacher=tmp_path / "none.pt", progress=False)
    result = runner.invoke(app, ["train-student", "--out", str(tmp_path / "r"), "--online-teacher",
                                 str(tmp_path / "none.pt"), "--config", str(TINY_CONFIG),
                                 "--set", "distill.channel_standardization=true"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output


def test_standardised_decayed_run_from_the_exported_store(tiny_world, tiny_store, tmp_path):
    """export-teacher kept the teacher's channel stats; a run reads them, and logs the unscaled terms and the
    factor of its schedule (1 - step / total) while minimising gt + depth + factor × distillation."""
    stats = read_channel_stats(open_store(tiny_store).attrs)
    assert stats is not None and stats.views == stats.of_views == open_store(tiny_store).n_views
    assert stats.arrays["lidar_bev"].foreground_only and not stats.arrays["cam_bev"].foreground_only
    cfg = make_tiny_config(tiny_world, ["distill.channel_standardization=true", "distill.weight_schedule=decay"])
    result = train_student(cfg, out_dir=tmp_path / "run", store=tiny_store, progress=False, stop_after=3)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["distill_factor"] for r in log] == pytest.approx([1 - s / result.total_steps for s in range(3)])
    for r in log:
        distill = sum(r[k] for k in ALL_LOSSES)
        assert distill > 0 and r["loss"] == pytest.approx(r["gt"] + r["depth"] + r["distill_factor"] * distill,
                                                          rel=1e-5)
    plain = train_student(make_tiny_config(tiny_world, ["distill.weight_schedule=decay"]), out_dir=tmp_path / "plain",
                          store=tiny_store, progress=False, stop_after=1)
    assert plain.last_terms["gt"] == log[0]["gt"]  # the same first step, GT untouched by the options
    assert plain.last_terms["imd"] != pytest.approx(log[0]["imd"], rel=1e-3)  # standardisation changed IMD
