"""export-teacher end to end: resume after SIGKILL, lock, refusals, verify/info/show through the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import TINY_CONFIG, make_tiny_config, tiny_overrides
from typer.testing import CliRunner

from simdistill.cli import app
from simdistill.feature_store import open_store
from simdistill.training.checkpoint import save_checkpoint

runner = CliRunner()
FEATURES = ("cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes", "fg_mask", "aug", "sample_index", "view")


def _cli_args(world: Path, extra: list[str]) -> list[str]:
    args = ["--config", str(TINY_CONFIG)]
    for o in tiny_overrides(world) + extra:
        args += ["--set", o]
    return args


def _done_count(store: Path) -> int:
    try:
        return int(np.asarray(zarr.open_group(str(store), mode="r")["done"][:]).sum())
    except Exception:  # noqa: BLE001 - the store may not exist yet
        return 0


def test_store_matches_teacher_and_cli_inspects_it(tiny_store, tmp_path):
    reader = open_store(tiny_store)
    assert reader.done_views().all()
    assert reader.attrs["views_per_sample"] == 1
    n = reader.n_views
    info = runner.invoke(app, ["store", "info", tiny_store])
    assert info.exit_code == 0, info.output
    assert "cam_bev" in info.output and "lossless" in info.output and f"views done {n}/{n}" in info.output
    verify = runner.invoke(app, ["store", "verify", tiny_store])
    assert verify.exit_code == 0, verify.output
    assert f"{n} of {n} views done, all done views verified" in verify.output
    png = tmp_path / "v0.png"
    show = runner.invoke(app, ["store", "show", tiny_store, "--view", "0", "--out", str(png)])
    assert show.exit_code == 0 and f"wrote {png}" in show.output, show.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_sigkill_mid_export_then_resume_equals_uninterrupted(tiny_world, tiny_teacher, tmp_path):
    extra = ["export.views_per_sample=8", "export.views_per_task=2"]
    store = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "simdistill", "export-teacher", "--checkpoint", str(tiny_teacher), "--out",
           str(store), *_cli_args(tiny_world, extra)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while _done_count(store) < 4 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "export finished before it could be killed: " + proc.stderr.read().decode()[-500:]
        # While it runs, a second export into the same store is refused by the lock.
        second = runner.invoke(app, ["export-teacher", "--checkpoint", str(tiny_teacher), "--out", str(store),
                                     *_cli_args(tiny_world, extra)])
        assert second.exit_code == 2 and "being written by" in second.output, second.output
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its Dask workers, like a crash
        proc.wait()
    n_done = _done_count(store)
    total = 8 * len(open_store(str(store)).attrs["dataset"]["sample_tokens"])
    assert 0 < n_done < total

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{n_done} already done" in resumed.stdout, resumed.stdout
    verify = runner.invoke(app, ["store", "verify", str(store)])
    assert verify.exit_code == 0 and "all done views verified" in verify.output, verify.output

    reference = tmp_path / "clean.zarr"
    from simdistill.teacher_export.export import export_teacher

    export_teacher(make_tiny_config(tiny_world, extra), checkpoint=tiny_teacher, out=str(reference), progress=False)
    a, b = open_store(str(store)), open_store(str(reference))
    views = list(range(total))
    got, want = a.read_views(views, list(FEATURES)), b.read_views(views, list(FEATURES))
    for name in FEATURES:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_changed_config_is_refused_unless_overwrite(tiny_world, tiny_teacher, tiny_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    args = ["export-teacher", "--checkpoint", str(tiny_teacher), "--out", str(store)]
    changed = runner.invoke(app, args + _cli_args(tiny_world, ["seed=7"]))
    assert changed.exit_code == 2 and "--overwrite" in changed.output, changed.output
    same = runner.invoke(app, args + _cli_args(tiny_world, []))
    assert same.exit_code == 0 and "already done" in same.output, same.output


def test_wrong_checkpoints_are_refused(tiny_world, tiny_teacher, tmp_path):
    cfg = make_tiny_config(tiny_world)
    from simdistill.models import build_model

    student = build_model("simdistill", cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
    student_ckpt = tmp_path / "student.pt"
    save_checkpoint(student_ckpt, kind="simdistill", cfg=cfg, model=student)
    result = runner.invoke(app, ["export-teacher", "--checkpoint", str(student_ckpt), "--out",
                                 str(tmp_path / "a.zarr"), *_cli_args(tiny_world, [])])
    assert result.exit_code == 2 and "teacher" in result.output, result.output

    other = runner.invoke(app, ["export-teacher", "--checkpoint", str(tiny_teacher), "--out",
                                str(tmp_path / "b.zarr"), *_cli_args(tiny_world, ["model.channels.lidar=24"])])
    assert other.exit_code == 2 and "model.channels.lidar" in other.output, other.output

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    bad = runner.invoke(app, ["export-teacher", "--checkpoint", str(garbage), "--out", str(tmp_path / "c.zarr"),
                              *_cli_args(tiny_world, [])])
    assert bad.exit_code == 2 and "not a readable" in bad.output, bad.output


def test_unwritable_output_is_a_clear_error(tiny_world, tiny_teacher, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["export-teacher", "--checkpoint", str(tiny_teacher), "--out",
                                 str(blocker / "store.zarr"), *_cli_args(tiny_world, [])])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_corrupted_chunk_fails_verify_and_read(tiny_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    chunk = next(p for p in sorted((store / "fused_bev").rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    result = runner.invoke(app, ["store", "verify", str(store)])
    assert result.exit_code == 1 and "fused_bev" in result.output, result.output
    view = int(chunk.relative_to(store / "fused_bev").parts[1])  # c/<view>/0/0/0
    from simdistill.errors import StoreError

    with pytest.raises(StoreError, match=rf"view {view}\b.*fused_bev|fused_bev.*view {view}\b"):
        open_store(str(store)).read_view(view, ["fused_bev"])


def test_verify_reset_bad_then_export_rewrites_only_the_bad_views(tiny_world, tiny_teacher, tiny_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    chunk = store / "cam_bev" / "c" / "3" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    result = runner.invoke(app, ["store", "verify", "--reset-bad", str(store)])
    assert result.exit_code == 1 and "reset the done flag of 1 view(s)" in result.output, result.output
    assert open_store(str(store)).done_views().tolist().count(False) == 1
    assert not open_store(str(store)).done_views()[3]
    export = runner.invoke(app, ["export-teacher", "--checkpoint", str(tiny_teacher), "--out", str(store),
                                 *_cli_args(tiny_world, [])])
    assert export.exit_code == 0 and "1 exported" in export.output, export.output
    verify = runner.invoke(app, ["store", "verify", str(store)])
    assert verify.exit_code == 0 and "all done views verified" in verify.output, verify.output
    a, b = open_store(str(store)), open_store(tiny_store)
    np.testing.assert_array_equal(a.read_view(3, ["cam_bev"])["cam_bev"], b.read_view(3, ["cam_bev"])["cam_bev"])


def test_export_keeps_the_teacher_channel_stats(tiny_world, tiny_teacher, tiny_store, tmp_path):
    """A finished export holds its channel stats; re-running the export over a store made before they were kept
    (nothing left to export) adds them, equal to what `simdistill store stats` computes."""
    from simdistill.feature_store import channel_stats, read_channel_stats
    from simdistill.teacher_export.export import export_teacher

    kept = read_channel_stats(open_store(tiny_store).attrs)
    assert kept is not None and set(kept.arrays) == {"cam_bev", "lidar_bev", "fused_bev"}
    old = tmp_path / "old.zarr"
    shutil.copytree(tiny_store, old)
    zarr.open_group(str(old), mode="r+").attrs.pop("channel_stats")
    assert read_channel_stats(open_store(str(old)).attrs) is None
    report = export_teacher(make_tiny_config(tiny_world), checkpoint=tiny_teacher, out=str(old), progress=False)
    assert report.exported == 0
    assert read_channel_stats(open_store(str(old)).attrs) == kept == channel_stats(str(old))
