"""`simdistill demo`: synthetic world → teacher → export → baseline and SimDistill students → comparison.

Each stage is skipped when its output already exists and was made with the same config, so re-running the
demo is cheap and an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable

from simdistill.config import DISTILL_LOSSES, Config, config_to_dict
from simdistill.training.checkpoint import load_checkpoint

STAGES = ("world", "teacher", "export", "baseline", "simdistill")


def _log(msg: str) -> None:
    import sys

    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _finished(run_dir: Path, final_name: str, cfg: Config) -> dict[str, Any] | None:
    """Metrics of a finished run made with the same config, else None."""
    final = run_dir / final_name
    metrics = run_dir / "metrics.json"
    if not (final.exists() and metrics.exists()):
        return None
    if load_checkpoint(final)["config"] != config_to_dict(cfg):
        return None
    return json.loads(metrics.read_text())


def _world(cfg: Config, root: Path) -> None:
    from simdistill.pipeline.synthetic import make_demo_data

    marker = root / "world_config.json"
    wanted = json.dumps(config_to_dict(cfg.world), sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        _log(f"world: {root} exists, skipped")
        return
    _log("world: generating the synthetic nuScenes world")
    summary = make_demo_data(root, cfg.world, progress=True)
    marker.write_text(wanted)
    _log(summary.to_text())


def _timed(label: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    t0 = time.time()
    result = fn()
    timings[label] = time.time() - t0
    return result


def _train_and_evaluate(train: Callable[[], Any], cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Run a trainer to the end, then evaluate its model on val (metrics.json in run_dir)."""
    from simdistill.evaluation.run import evaluate_run

    result = train()
    return evaluate_run(result.model, cfg, run_dir)


def run_demo(cfg: Config, *, workdir: Path) -> str:
    from simdistill.evaluation.run import curve_hooks
    from simdistill.student_train.trainer import train_student
    from simdistill.teacher_export.export import export_teacher
    from simdistill.teacher.trainer import train_teacher

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg.data.dataroot = str(workdir / "data")
    cfg.data.version = cfg.world.version
    timings: dict[str, float] = {}

    _timed("world", lambda: _world(cfg, Path(cfg.data.dataroot)), timings)

    teacher_dir = workdir / "teacher"
    teacher_metrics = _finished(teacher_dir, "teacher.pt", cfg)
    if teacher_metrics is None:
        _log("teacher: training the LiDAR-camera teacher")
        teacher_metrics = _timed("teacher", lambda: _train_and_evaluate(
            lambda: train_teacher(cfg, out_dir=teacher_dir, hooks=curve_hooks(cfg, cfg.teacher_train, teacher_dir)),
            cfg, teacher_dir), timings)
    else:
        _log("teacher: finished run found, skipped")

    store = str(workdir / "teacher_store.zarr")
    _log("export: caching teacher targets (resumes; finished views are skipped)")
    report = _timed("export", lambda: export_teacher(cfg, checkpoint=teacher_dir / "teacher.pt", out=store), timings)
    _log(report.to_text())

    rows: dict[str, dict[str, Any]] = {"teacher (LiDAR+camera)": teacher_metrics}
    for variant, losses, label in (("baseline", (), "baseline (camera, GT only)"),
                                   ("simdistill", DISTILL_LOSSES, "SimDistill (cached teacher)")):
        scfg = copy.deepcopy(cfg)
        scfg.student_train.variant = variant
        scfg.distill.losses = losses
        run_dir = workdir / variant
        metrics = _finished(run_dir, "student.pt", scfg)
        if metrics is None:
            _log(f"{variant}: training the student")
            metrics = _timed(variant, lambda s=scfg, d=run_dir: _train_and_evaluate(
                lambda: train_student(s, out_dir=d, store=store, hooks=curve_hooks(s, s.student_train, d)), s, d),
                timings)
        else:
            _log(f"{variant}: finished run found, skipped")
        rows[label] = metrics

    table = comparison_table(rows)
    (workdir / "results.md").write_text(table + "\n")
    (workdir / "results.json").write_text(json.dumps({"rows": rows, "stage_seconds": timings}, indent=2))
    plot_comparison(rows, workdir / "comparison.png")
    return (table + f"\n\nplots: {workdir}/comparison.png, {workdir}/*/eval/bev_*.png, "
            f"{workdir}/*/eval/loss_curves.png\nstore: {store}")


def comparison_table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | mAP | NDS | mATE | mAOE |", "|---|---:|---:|---:|---:|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['mAP']:.4f} | {m['NDS']:.4f} | {m['mATE']:.3f} | {m['mAOE']:.3f} |")
    return "\n".join(lines)


def plot_comparison(rows: dict[str, dict[str, Any]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [rows[n]["mAP"] for n in names], width=0.4, label="mAP")
    ax.bar([i + 0.2 for i in x], [rows[n]["NDS"] for n in names], width=0.4, label="NDS")
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("score (nuScenes devkit, synthetic val)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
